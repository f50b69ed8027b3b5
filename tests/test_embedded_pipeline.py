"""The embedded profile on real photos: real detector, segmenter, inpainter and (slow) the real Qwen LLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cielr_agent.assets import EMBEDDED_PROFILE_ASSETS, is_ready
from cielr_agent.imaging import load_image
from cielr_agent.masks import dilate, erode
from cielr_agent.tools import Workspace, make_tools

ROOT = Path(__file__).resolve().parents[1]
DOG = ROOT / "examples" / "dog.jpg"
PHOTOS = ROOT.parent / "shared" / "data" / "photos"

needs_models = pytest.mark.skipif(not all(is_ready(a) for a in ("centernet", "mobilesam", "efficientnet-lite3")),
                                  reason="embedded models not set up: run `cielr setup`")
pytestmark = [pytest.mark.assets, needs_models]


@pytest.fixture(scope="module")
def dog_ws():
    ws = Workspace.open(DOG)
    ws.perceive()
    return ws


def test_initial_scene_of_the_dog_photo(dog_ws):
    labels = {o.label for o in dog_ws.scene.objects}
    assert {"dog", "bicycle"} <= labels
    vehicle = next(o for o in dog_ws.scene.objects if o.box[0] > 400 and o.box[3] < 200)
    assert vehicle.label == "truck" or "truck" in vehicle.attributes.get("could also be", "")
    bike = next(o for o in dog_ws.scene.objects if o.label == "bicycle")
    dog = next(o for o in dog_ws.scene.objects if o.label == "dog")
    assert dog in dog_ws.occluders(bike.id)
    assert bike.attributes["size"] == "large" and dog.attributes["color"] in ("black", "gray", "brown")


def test_remove_bicycle_keeps_everything_else_identical(dog_ws):
    ws = Workspace.open(DOG)
    ws.scene = dog_ws.scene
    bike = next(o for o in ws.scene.objects if o.label == "bicycle")
    dog = next(o for o in ws.scene.objects if o.label == "dog")
    tools = {t.name: t for t in make_tools(ws)}
    note = tools["remove_object"].invoke({"object_id": bike.id})
    assert "removed" in note
    changed = np.any(ws.image != ws.original, axis=2)
    dog_mask = ws.mask(dog.id)
    # nothing outside the bicycle's dilated mask changes, the dog in front keeps every pixel
    assert any(u.tool == "segment_object" and bike.id in u.modified for u in ws.scene.history)
    x0, y0, x1, y1 = (int(v) for v in bike.box)
    outside_box = np.ones_like(changed)
    outside_box[max(0, y0 - 16):y1 + 16, max(0, x0 - 16):x1 + 16] = False
    assert not (changed & outside_box).any()
    assert not (changed & erode(dog_mask, 3)).any()  # the dog in front keeps its pixels (a <= 3 px seam)
    # probes of the whole bicycle (measured: 1.0, 0.85, 0.90, 0.69, 1.0, 0.80 changed)
    probes = {"saddle": (slice(135, 150), slice(390, 460)), "seat post": (slice(150, 200), slice(405, 425)),
              "front wheel left of the dog": (slice(260, 340), slice(125, 145)),
              "handlebar": (slice(140, 215), slice(140, 180)), "chainring": (slice(320, 370), slice(340, 380)),
              "rear wheel": (slice(240, 420), slice(380, 570))}
    for name, where in probes.items():
        assert changed[where].mean() > 0.5, name
    # the red frame is mostly gone: count strongly red pixels in the bicycle box, outside the dog
    def red(img):
        r, g, b = (img[y0:y1, x0:x1, i].astype(int) for i in range(3))
        return ((r > 150) & (r > g + 60) & (r > b + 60) & ~dog_mask[y0:y1, x0:x1]).sum()
    assert red(ws.image) < 0.05 * red(ws.original)
    # the wall seen between the spokes stays (a see-through pocket), the fill continues the yellow boards
    wall = ws.image[300:360, 470:520].reshape(-1, 3).astype(int)
    assert np.median(wall[:, 0] - wall[:, 2]) > 60 and np.median(wall[:, 1] - wall[:, 2]) > 50  # yellow
    assert changed.sum() > 15000 and not ws.scene.has(bike.id)


def test_recolor_dog_keeps_shading(dog_ws):
    ws = Workspace.open(DOG)
    ws.scene = dog_ws.scene
    dog = next(o for o in ws.scene.objects if o.label == "dog")
    tools = {t.name: t for t in make_tools(ws)}
    tools["recolor_object"].invoke({"object_id": dog.id, "color": "blue"})
    mask = ws.mask(dog.id)
    changed = np.any(ws.image != ws.original, axis=2)
    assert not (changed & ~dilate(mask, 3)).any()
    inside = ws.image[mask].astype(float)
    assert np.median(inside[:, 2] - inside[:, 0]) > 15  # bluish
    orig_l, new_l = ws.original[mask].mean(axis=1), inside.mean(axis=1)
    assert np.corrcoef(orig_l, new_l)[0, 1] > 0.8  # texture/shading follows the original


def test_detect_tool_reports_undetectable_things(dog_ws):
    ws = Workspace.open(DOG)
    ws.scene = dog_ws.scene
    tools = {t.name: t for t in make_tools(ws)}
    text = tools["detect_objects"].invoke({"labels": ["unicorn", "bike"]})
    assert "'unicorn' is not something this detector can find" in text and "bicycle" in text


def _cielr(*args, timeout=900):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "cielr_agent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_remove_dog_fills_wall_and_floor_without_a_ghost(dog_ws):
    """Seen once: the dog's hole filled with a white smear over the yellow wall and its white chest fur kept as
    "see-through" pockets. The wall part of the hole must continue the yellow boards, nothing dark may stay."""
    ws = Workspace.open(DOG)
    ws.scene = dog_ws.scene
    dog = next(o for o in ws.scene.objects if o.label == "dog")
    hole = ws.edit_mask(dog.id, whole=True)
    {t.name: t for t in make_tools(ws)}["remove_object"].invoke({"object_id": dog.id})
    changed = np.any(ws.image != ws.original, axis=2)
    assert changed[erode(hole, 4)].mean() > 0.97  # no fur pockets kept
    wall = hole.copy()
    wall[:250], wall[370:] = False, False  # the boards' rows; the bicycle's front wheel crosses the left part
    wall[:, :150] = False
    pixels = ws.image[wall].astype(int)
    assert np.median(pixels[:, 0] - pixels[:, 2]) > 50 and np.median(pixels[:, 1] - pixels[:, 2]) > 40  # yellow
    dark = ws.image[hole].max(axis=1) < 70
    assert dark.mean() < 0.03  # the black dog is gone, not smeared


qwen = pytest.mark.skipif(not all(is_ready(a) for a in EMBEDDED_PROFILE_ASSETS),
                          reason="the embedded LLM is not set up: run `cielr setup`")


@pytest.mark.slow
@qwen
def test_readme_example_end_to_end_with_the_real_llm(tmp_path):
    out, trace = tmp_path / "out.png", tmp_path / "trace.json"
    before = DOG.read_bytes()
    proc = _cielr("edit", str(DOG), "Remove the vehicle in the foreground that has no engine", "-o", str(out),
                  "--json", "--trace", str(trace))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    (action,) = summary["plan"]["actions"]
    assert action["type"] == "remove" and action["target"]["label"] == "bicycle"
    assert summary["output"] == str(out) and DOG.read_bytes() == before
    assert "perceive" in proc.stderr and "plan" in proc.stderr  # progress on stderr
    full = json.loads(trace.read_text())
    from cielr_agent.ssr import RLEMask

    region = np.logical_or.reduce([RLEMask(**done["region"]).to_array() for done in full["executed"]])
    changed = np.any(load_image(out) != load_image(DOG), axis=2)
    assert np.array_equal(changed, region) and changed.sum() > 15000
    assert all(c["input_tokens"] > 0 and c["output_tokens"] > 0 for c in full["llm_calls"])
    notes = full["verification"]
    assert any(n.endswith("gone") for n in notes), notes
    coverage = next(n for n in notes if "of its mask changed" in n)
    # the removal covered the bicycle's mask but for the wall kept between the spokes (measured 85 %)
    assert int(coverage.split(": ")[1].split("%")[0]) >= 75, notes


@pytest.mark.slow
@qwen
@pytest.mark.parametrize("image,instruction", [
    ("horses.jpg", "Paint the largest horse white"),
    ("person.jpg", "Remove the animal that barks"),
    ("giraffe.jpg", "Make the animal with black and white stripes red"),
])
def test_dry_run_json_on_shared_photos(tmp_path, image, instruction):
    if not (PHOTOS / image).exists():
        pytest.skip("../shared/data is not beside the checkout")
    proc = _cielr("edit", str(PHOTOS / image), instruction, "--dry-run", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary) == {"instruction", "status", "plan", "output", "timings"}
    assert summary["status"] == "planned" and summary["output"] is None
    (action,) = summary["plan"]["actions"]
    assert set(action["target"]) == {"id", "label", "box"} and len(action["target"]["box"]) == 4
    # which object is right is measured by evals/reasoning_local.py; here: a real object of the animal kinds
    assert action["target"]["label"] in {"horse", "dog", "zebra", "giraffe", "sheep", "cow", "cat"}
    assert action["type"] in ("remove", "recolor")


def test_cli_scene_prints_the_ssr_as_json():
    proc = _cielr("scene", str(DOG), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    scene = json.loads(proc.stdout)
    assert scene["width"] == 768 and {"bicycle", "dog"} <= {o["label"] for o in scene["objects"]}
    assert all(len(o["box"]) == 4 for o in scene["objects"]) and scene["relations"]


@pytest.mark.slow
@qwen
def test_move_the_dog_to_the_right_side_of_the_porch(tmp_path):
    """Once executed as "beside the truck across the street" (the dog pasted in the air, half outside the
    frame): the porch is no listed object, so the dog goes to the right, whole, on the porch floor."""
    out, trace = tmp_path / "out.png", tmp_path / "trace.json"
    proc = _cielr("edit", str(DOG), "Move the dog to the right side of the porch", "-o", str(out), "--trace",
                  str(trace), "-q")
    assert proc.returncode == 0, proc.stderr
    full = json.loads(trace.read_text())
    (action,) = full["plan"]["actions"]
    assert action["type"] == "move"
    first, last = full["scenes"][0], full["scenes"][-1]
    before = next(o for o in first["objects"] if o["id"] == action["target"])
    after = next(o for o in last["objects"] if o["id"] == action["target"])
    assert before["label"] == "dog" and after["box"][0] > 384 and after["box"][2] <= 768  # at the right, inside
    assert abs(after["box"][3] - before["box"][3]) < 0.1 * 576  # still standing on the porch floor
    assert any("fully visible" in n for n in full["verification"]), full["verification"]


@pytest.mark.slow
@qwen
def test_three_turn_session_on_the_real_photo_survives_a_restart(tmp_path):
    """remove, recolor, undo with the real stack, every turn a fresh `cielr session` process: the checkpoint and
    the stored images give back exactly the versions each turn wrote."""
    folder = str(tmp_path / "porch")
    assert _cielr("session", "new", folder, str(DOG)).returncode == 0
    first = _cielr("session", "edit", folder, "Remove the vehicle in the foreground that has no engine", "--json")
    assert first.returncode == 0, first.stderr
    turn1 = json.loads(first.stdout)
    assert turn1["version"] == 1 and turn1["plan"]["actions"][0]["target"]["label"] == "bicycle"
    second = _cielr("session", "edit", folder, "Paint the dog blue", "--json")
    assert second.returncode == 0, second.stderr
    turn2 = json.loads(second.stdout)
    assert turn2["version"] == 2 and turn2["plan"]["actions"][0]["target"]["label"] == "dog"
    v1, v2 = load_image(turn1["image"]), load_image(turn2["image"])
    original = load_image(DOG)
    bike_gone = np.any(v1 != original, axis=2)
    dog_blue = np.any(v2 != v1, axis=2)
    assert bike_gone.mean() > 0.05 and dog_blue.mean() > 0.03
    pixels = v2[dog_blue].astype(int)
    assert (pixels[:, 2] > pixels[:, 0] + 10).mean() > 0.6  # blue over red where the dog changed
    assert _cielr("session", "undo", folder).returncode == 0
    history = json.loads(_cielr("session", "history", folder, "--json").stdout)
    assert [h["head"] for h in history] == [False, True, False] and history[2]["redo"]
    out = tmp_path / "head.png"
    assert _cielr("session", "export", folder, str(out)).returncode == 0
    assert np.array_equal(load_image(out), v1)
    assert np.array_equal(load_image(tmp_path / "porch" / history[2]["image"]), v2)
