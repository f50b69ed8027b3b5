"""`cielr edit IMG "…" --profile full.toml` through every foundation backend, with tiny random-weight models
saved to disk and loaded by path (nothing from a hub). The LLM is scripted; everything else is real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="the full extra is not installed (pip install -e '.[full]')")
pytest.importorskip("segment_anything", reason="the full extra is not installed (pip install -e '.[full]')")

import cielr_agent  # noqa: E402
from cielr_agent import cli  # noqa: E402
from cielr_agent.actions import EditDecision, PlannedStep  # noqa: E402
from cielr_agent.imaging import load_image, save_image_atomic  # noqa: E402
from cielr_agent.llm.scripted import ScriptedChatModel  # noqa: E402
from tiny_detectors import build_tiny_grounding_dino, build_tiny_owlv2  # noqa: E402
from tiny_diffusion import build_tiny_sd_inpaint  # noqa: E402
from tiny_vision import (  # noqa: E402
    build_tiny_blip, build_tiny_depth_anything, build_tiny_sam2, build_tiny_sam_checkpoint, build_tiny_sam_hf,
)

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "dog.jpg"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    sam_path, sam_arch = build_tiny_sam_checkpoint(root / "sam")
    return {
        "grounding-dino": build_tiny_grounding_dino(root / "gdino"),
        "owlv2": build_tiny_owlv2(root / "owlv2"),
        "sam": (sam_path, sam_arch),
        "sam-hf": build_tiny_sam_hf(root / "sam-hf"),
        "sam2": build_tiny_sam2(root / "sam2"),
        "depth-anything": build_tiny_depth_anything(root / "depth"),
        "captioner": build_tiny_blip(root / "blip"),
        "sd-inpaint": build_tiny_sd_inpaint(root / "sd"),
    }


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """The example photo at 160×120 so that tiny models run in milliseconds."""
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "small.png"
    save_image_atomic(np.asarray(Image.fromarray(load_image(PHOTO)).resize((160, 120))), path)
    return path


def write_profile(path: Path, models: dict, detector: str, segmenter: str) -> Path:
    """A full profile (TOML) naming a detector/segmenter pair and every other foundation backend."""
    options = {
        detector: {"model": str(models[detector]), "vocabulary": ["dog", "bicycle"]},
        "depth-anything": {"model": str(models["depth-anything"])},
        "captioner": {"model": str(models["captioner"]), "max_new_tokens": 5},
        "sd-inpaint": {"model": str(models["sd-inpaint"]), "steps": 2, "resolution": 64, "seed": 3},
    }
    if segmenter == "sam":
        sam_path, sam_arch = models["sam"]
        options["sam"] = {"checkpoint": str(sam_path), "architecture": sam_arch}
    else:
        options[segmenter] = {"model": str(models[segmenter])}
    lines = [f'detector = "{detector}"', f'segmenter = "{segmenter}"', 'depth = "depth-anything"',
             'describer = "captioner"', 'remover = "sd-inpaint"', 'generator = "sd-inpaint"', 'device = "cpu"',
             "min_score = 0.0", "refine_min_score = 0.0", "verify = false", ""]
    for name, opts in options.items():
        lines.append(f"[backend_options.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in opts.items() if not isinstance(v, dict)]
        for key, table in ((k, v) for k, v in opts.items() if isinstance(v, dict)):
            lines.append(f"[backend_options.{name}.{key}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("detector,segmenter", [("grounding-dino", "sam"), ("owlv2", "sam-hf"),
                                                ("grounding-dino", "sam2")])
def test_every_action_through_the_full_backends(models, photo, tmp_path, detector, segmenter):
    profile = write_profile(tmp_path / "full.toml", models, detector, segmenter)
    model = ScriptedChatModel([
        EditDecision(reason="need detail on #1", describe=1),
        EditDecision(reason="exercise every generative and geometric action", steps=[
            PlannedStep(action="move", object_id=1, position="left"),
            PlannedStep(action="replace", object_id=1, prompt="a red ball"),
            PlannedStep(action="add", prompt="a cat", box=[100, 20, 150, 70]),
            PlannedStep(action="duplicate", object_id=1),
            PlannedStep(action="remove", object_id=1),
        ]),
    ])
    out = tmp_path / "out.png"
    result = cielr_agent.edit(photo, "do everything", out, llm=model, profile=profile)

    assert result.status == "executed"
    assert [e.tool for e in result.executed] == ["move_object", "replace_object", "add_object",
                                                 "duplicate_object", "remove_object"]
    initial, final = result.scenes[0], result.scenes[-1]
    assert initial.objects and all(o.source == f"detector:{detector}" for o in initial.objects)
    assert all(o.nearness is not None for o in initial.objects)  # depth backend ran
    described = [u for u in result.scenes[1].history if u.tool == "describe_object"]
    assert described and isinstance(result.scenes[1].get(1).attributes.get("caption"), str)
    assert any(o.label == "cat" and o.source == "generator:sd-inpaint" for o in final.objects)
    assert not final.has(1)
    # exact paste-back: pixels outside the union of the executed regions are bit-identical
    edited, original = load_image(out), load_image(photo)
    touched = np.logical_or.reduce([e.region.to_array() for e in result.executed])
    assert touched.any() and (edited[~touched] == original[~touched]).all()
    assert (edited[20:70, 100:150] != original[20:70, 100:150]).any()


def test_cli_edit_with_a_full_profile(models, photo, tmp_path, monkeypatch, capsys):
    profile = write_profile(tmp_path / "full.toml", models, "grounding-dino", "sam")
    script = [EditDecision(reason="the first object", steps=[PlannedStep(action="remove", object_id=1)])]
    monkeypatch.setattr("cielr_agent.llm.providers.make_chat_model", lambda *a, **k: ScriptedChatModel(script))
    out = tmp_path / "cli.png"
    code = cli.main(["edit", str(photo), "remove the first object", "--profile", str(profile), "-o", str(out),
                     "--json", "-q"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and out.exists() and summary["plan"]["actions"][0]["type"] == "remove"
    assert load_image(out).shape == load_image(photo).shape


def test_missing_weights_fail_with_an_actionable_error(photo, tmp_path):
    from cielr_agent.errors import MissingWeightsError

    profile = tmp_path / "broken.toml"
    profile.write_text('detector = "grounding-dino"\n[backend_options.grounding-dino]\n'
                       f'model = "{tmp_path / "nowhere"}"\n', encoding="utf-8")
    with pytest.raises(MissingWeightsError, match="nowhere"):
        cielr_agent.perceive(photo, profile=profile)
