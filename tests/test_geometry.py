"""Move / resize / flip / duplicate: placement maths, exact pixel bookkeeping, SSR updates, and the graph path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_core.tools import ToolException

import cielr_agent
from cielr_agent.actions import EditDecision, PlannedStep
from cielr_agent.imaging import load_image
from cielr_agent.masks import dilate
from cielr_agent.tools import Workspace, editing_tools, register_backend
from cielr_agent.tools import transform as tf
from cielr_agent.tools.embedded.backends import AttributeDescriber, OklabRecolorer
from cielr_agent.tools.backends import Backends
from cielr_agent.tools.protocols import Detection
from fakes import ExactBoxSegmenter, FakeDetector, MeanFillRemover, dog_scene_detections
from cielr_agent.llm.scripted import ScriptedChatModel

DOG = Path(__file__).resolve().parents[1] / "examples" / "dog.jpg"


def square_scene(two_tone: bool = False):
    """A 120×200 grey image with a red 20×30 block (#1; left half green if `two_tone`) and a blue 20×20 block (#2)."""
    image = np.full((120, 200, 3), 128, np.uint8)
    image[60:90, 40:60] = (220, 30, 30)
    if two_tone:
        image[60:90, 40:50] = (20, 200, 20)
    image[70:90, 140:160] = (30, 30, 220)
    dets = [Detection("box", 0.9, (40.0, 60.0, 60.0, 90.0)), Detection("cup", 0.8, (140.0, 70.0, 160.0, 90.0))]
    backends = Backends(detector=FakeDetector(dets), segmenter=ExactBoxSegmenter(), describer=AttributeDescriber(),
                        remover=MeanFillRemover(), recolorer=OklabRecolorer())
    ws = Workspace(image, backends=backends)
    ws.perceive()
    return ws, {t.name: t for t in editing_tools(ws, handle_errors=False)}


def test_placement_maths():
    box = (40.0, 60.0, 60.0, 90.0)
    assert tf.position_offset(box, 200, 120, "left") == pytest.approx((4.0 - 40.0, 0.0))
    assert tf.position_offset(box, 200, 120, "bottom-right") == pytest.approx((196.0 - 60.0, 117.6 - 90.0))
    assert tf.position_offset(box, 200, 120, "center") == pytest.approx((50.0, 0.0))
    # beside: right of the anchor with a 5 % gap; its own height when it overlaps the anchor vertically,
    # else on the anchor's ground line
    assert tf.beside_offset(box, (100.0, 50.0, 120.0, 100.0), "right") == pytest.approx((121.0 - 40.0, 0.0))
    assert tf.beside_offset(box, (100.0, 0.0, 120.0, 30.0), "left") == pytest.approx((99.0 - 60.0, -60.0))
    assert tf.beside_offset(box, (100.0, 50.0, 120.0, 100.0), "above") == pytest.approx((60.0, -40.0))
    # scaling about the base keeps the bottom-centre fixed; mirroring keeps the box
    m = tf.scaling_about_base(box, 2.0)
    assert tf.map_box(box, m) == pytest.approx((30.0, 30.0, 70.0, 90.0))
    assert tf.map_box(box, tf.mirror(box, "horizontal")) == pytest.approx(box)
    assert tf.map_box(box, tf.mirror(box, "vertical")) == pytest.approx(box)


def test_move_changes_only_hole_and_destination_and_updates_the_ssr():
    ws, tools = square_scene()
    before = ws.image.copy()
    tools["move_object"].invoke({"object_id": 1, "dx": 50, "dy": -20})
    moved = ws.scene.get(1)
    assert moved.box == pytest.approx((90.0, 40.0, 110.0, 70.0), abs=1.5)
    changed = np.any(ws.image != before, axis=2)
    allowed = dilate(_box(before, (40, 60, 60, 90)), 8) | _box(before, (88, 38, 112, 72))
    assert changed.any() and not (changed & ~allowed).any()
    # the red block now sits at the destination, and the mask in the SSR follows it
    assert (ws.image[45:65, 95:105] == (220, 30, 30)).all()
    assert ws.mask(1)[55, 100] and not ws.mask(1)[75, 50]
    assert ws.scene.history[-1].tool == "move_object"
    # the other object is untouched
    assert (ws.image[70:90, 140:160] == before[70:90, 140:160]).all()


def _box(image, box):
    m = np.zeros(image.shape[:2], bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


def test_move_beside_anchor_and_to_named_position():
    ws, tools = square_scene()
    tools["move_object"].invoke({"object_id": 1, "anchor_id": 2, "side": "left"})
    box = ws.scene.get(1).box
    assert box[2] <= 140 and box[2] >= 135 and box[3] == pytest.approx(90.0, abs=1.5)  # left of #2, same ground
    tools["move_object"].invoke({"object_id": 2, "position": "top-left"})
    assert ws.scene.get(2).box[:2] == pytest.approx((4.0, 2.4), abs=1.5)
    with pytest.raises(ToolException, match="already there"):
        tools["move_object"].invoke({"object_id": 2})
    with pytest.raises(ToolException, match="beside itself"):
        tools["move_object"].invoke({"object_id": 2, "anchor_id": 2})
    with pytest.raises(ToolException, match="outside the image"):
        tools["move_object"].invoke({"object_id": 2, "dx": 5000})


def test_resize_about_base_flip_and_duplicate():
    ws, tools = square_scene()
    tools["resize_object"].invoke({"object_id": 1, "scale": 2.0})
    assert ws.scene.get(1).box == pytest.approx((30.0, 30.0, 70.0, 90.0), abs=1.5)
    assert ws.mask(1).sum() == pytest.approx(40 * 60, rel=0.1)

    ws, tools = square_scene(two_tone=True)
    tools["flip_object"].invoke({"object_id": 1})
    assert (ws.image[75, 55] == (20, 200, 20)).all() and (ws.image[75, 42] == (220, 30, 30)).all()
    assert ws.scene.get(1).box == pytest.approx((40.0, 60.0, 60.0, 90.0), abs=1.5)

    ws, tools = square_scene()
    note = tools["duplicate_object"].invoke({"object_id": 2})
    copy = ws.scene.get(3)
    assert "as #3" in note and copy.label == "cup" and copy.box[0] >= 160
    assert (ws.image[70:90, 140:160] == (30, 30, 220)).all()  # the original stays
    assert ws.scene.history[-1].added == [3]


def test_generative_tools_need_a_generator():
    ws, tools = square_scene()
    for name, args in (("replace_object", {"object_id": 1, "prompt": "a cat"}),
                       ("add_object", {"prompt": "a cat", "box": [0, 0, 50, 50]})):
        with pytest.raises(ToolException, match="generative"):
            tools[name].invoke(args)


def test_plan_step_validation():
    with pytest.raises(ValueError, match="position"):
        PlannedStep(action="move", object_id=1).to_action()
    with pytest.raises(ValueError, match="box"):
        PlannedStep(action="add", prompt="a cat").to_action()
    assert PlannedStep(action="flip", object_id=2).to_action().axis == "horizontal"
    add = PlannedStep(action="add", prompt="a cat", anchor_id=2, side="left").to_action()
    assert add.anchor == 2 and add.side == "left"


def test_move_through_the_graph_keeps_other_pixels(tmp_path):
    det = FakeDetector(dog_scene_detections())
    register_backend("detector", "fake-geo", lambda ctx: det)
    register_backend("segmenter", "fake-exact", lambda ctx: ExactBoxSegmenter())
    register_backend("remover", "fake-mean", lambda ctx: MeanFillRemover())
    plan = EditDecision(reason="the truck goes left",
                        steps=[PlannedStep(action="move", object_id=3, position="left")])
    model = ScriptedChatModel([plan])
    out = tmp_path / "moved.png"
    result = cielr_agent.edit(DOG, "move the truck to the left", out, llm=model, detector="fake-geo",
                              segmenter="fake-exact", remover="fake-mean")
    assert result.status == "verified" and result.executed[0].tool == "move_object"
    final = result.scenes[-1].get(3)
    assert final.box[0] == pytest.approx(0.02 * 768, abs=1.5)
    changed = np.any(load_image(out) != load_image(DOG), axis=2)
    region = result.executed[0].region.to_array()
    assert (changed == region).all()
