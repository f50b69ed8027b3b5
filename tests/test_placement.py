"""Placement checks of geometric actions: destination boxes (the tools' own geometry) and the reasons a plan's
placement is implausible. Scenes are built by hand; the tool comparison uses the stand-in backends."""

from __future__ import annotations

import numpy as np
import pytest

from cielr_agent.actions import (ACTION_ADAPTER, AddAction, DuplicateAction, EditPlan, FlipAction, MoveAction,
                                 RemoveAction, ResizeAction)
from cielr_agent.ssr import RLEMask, SceneGraph, SceneObject
from cielr_agent.tools import Backends, Workspace, editing_tools
from cielr_agent.tools.embedded.backends import AttributeDescriber, OklabRecolorer
from cielr_agent.tools.placement import (check_plan_placements, destination_box, moved_fully_visible,
                                         placement_problems)
from fakes import ExactBoxSegmenter, FakeDetector, MeanFillRemover, dog_scene_detections

W, H = 768, 576


def dog_scene(*extra: SceneObject) -> SceneGraph:
    """Boxes of examples/dog.jpg: the dog sits before the bicycle; the truck is parked across the street."""
    objects = [SceneObject(id=1, label="dog", score=0.9, box=(130, 220, 310, 540)),
               SceneObject(id=2, label="bicycle", score=0.85, box=(125, 125, 570, 420)),
               SceneObject(id=3, label="truck", score=0.7, box=(465, 75, 690, 170)), *extra]
    return SceneGraph(width=W, height=H, objects=objects)


def inside(box) -> bool:
    return box[0] >= 0 and box[1] >= 0 and box[2] <= W and box[3] <= H


def test_beside_a_far_anchor_is_outside_and_not_comparable():
    problems = placement_problems(dog_scene(), MoveAction(target=1, anchor=3, side="right"),
                                  "move the dog to the right of the car")
    # beside the truck's ground line the dog lands at [699, -150, 879, 170]: 80 % of it outside the frame
    assert destination_box(dog_scene(), MoveAction(target=1, anchor=3, side="right")) == pytest.approx(
        (699, -150, 879, 170))
    assert len(problems) == 2
    assert problems[0].startswith("#1 dog would end up 80% outside the image (box [699, -150, 879, 170] in a 768x576")
    assert "#3 truck is far from #1 dog" in problems[1] and "across the street" in problems[1]
    assert "position such as 'right'" in problems[1]


def test_named_position_keeps_the_ground_line():
    scene, move = dog_scene(), MoveAction(target=1, position="right")
    box = destination_box(scene, move)
    assert inside(box) and box[3] == 540 and box[2] == pytest.approx(W - 0.02 * W)
    assert placement_problems(scene, move, "move the dog to the right") == []


def test_beside_the_bicycle_keeps_the_dogs_own_ground():
    """The bicycle stands farther back (base 120 px = 21 % of the height higher), but the dog overlaps it
    vertically, so the tool keeps the dog's own ground line and only the horizontal place comes from the anchor:
    the result equals position 'right' a few px apart, so it is no problem. Above the bicycle it would be."""
    scene = dog_scene()
    box = destination_box(scene, MoveAction(target=1, anchor=2, side="right"))
    assert box == pytest.approx((579, 220, 759, 540)) and inside(box)
    assert placement_problems(scene, MoveAction(target=1, anchor=2, side="right")) == []
    above = placement_problems(scene, MoveAction(target=1, anchor=2, side="above"), "put the dog above the bike")
    assert any("outside" in p for p in above) and any("#2 bicycle is far from #1 dog" in p for p in above)


def test_comparable_anchor_gives_a_new_ground_line():
    """Beside a comparable anchor that stands a bit lower, the object takes the anchor's ground line (80 px =
    14 % down, more than the ground tolerance): that surface is allowed; an unasked dy off it is not."""
    cat = SceneObject(id=4, label="cat", score=0.8, box=(600, 300, 660, 400))
    ball = SceneObject(id=5, label="ball", score=0.8, box=(400, 420, 470, 480))
    scene = dog_scene(cat, ball)
    assert destination_box(scene, MoveAction(target=4, anchor=5, side="left"))[3] == 480
    assert placement_problems(scene, MoveAction(target=4, anchor=5, side="left"), "the cat goes left of the ball") == []
    off = placement_problems(scene, MoveAction(target=4, anchor=5, side="left", dy=-150), "cat left of the ball")
    assert len(off) == 1 and "#4 cat would leave its ground line" in off[0]


def test_nearness_decides_anchor_depth_when_measured():
    near = dog_scene().model_copy(update={"objects": [
        o.model_copy(update={"nearness": n}) for o, n in zip(dog_scene().objects, (0.9, 0.7, 0.2))]})
    problems = placement_problems(near, MoveAction(target=1, anchor=3, side="right"))
    assert any("nearness is 0.20 against 0.90" in p for p in problems)


def test_resize_must_stay_inside_the_frame():
    scene = dog_scene()
    big = placement_problems(scene, ResizeAction(target=3, scale=3.0), "make the truck three times bigger")
    assert len(big) == 1 and big[0].startswith("#3 truck would end up") and "smaller scale" in big[0]
    assert placement_problems(scene, ResizeAction(target=3, scale=0.5)) == []
    assert destination_box(scene, ResizeAction(target=3, scale=0.5)) == pytest.approx((521.25, 122.5, 633.75, 170))


def test_sky_instruction_lifts_the_ground_line_rule():
    scene = dog_scene(SceneObject(id=4, label="kite", score=0.8, box=(600, 420, 660, 480)))
    up = MoveAction(target=4, position="top")
    assert placement_problems(scene, up, "Move the kite to the SKY") == []
    assert "#4 kite would leave its ground line" in placement_problems(scene, up, "move the kite")[0]
    shift = MoveAction(target=4, dy=-250)
    assert placement_problems(scene, shift, "shift the kite by 250 px") == []  # a dy the instruction gave
    assert len(placement_problems(scene, shift, "move the kite somewhere else")) == 1


def test_duplicate_default_stays_inside_the_frame():
    wide = SceneObject(id=4, label="bench", score=0.8, box=(100, 450, 700, 560))
    scene = dog_scene(wide)
    for oid in (1, 3, 4):  # room on the right; only on the left; room on neither side for a full step
        action = DuplicateAction(target=oid)
        assert inside(destination_box(scene, action))
        assert placement_problems(scene, action, "duplicate it") == []
    assert destination_box(scene, DuplicateAction(target=3))[0] < 465  # the truck's copy goes left


def test_unexecutable_actions_are_reasons_too():
    scene = dog_scene()
    assert "already there" in placement_problems(scene, MoveAction(target=1))[0]
    assert "beside itself" in placement_problems(scene, MoveAction(target=1, anchor=1))[0]
    assert "no object #9" in placement_problems(scene, MoveAction(target=1, anchor=9))[0]
    assert placement_problems(scene, FlipAction(target=2)) == []
    assert placement_problems(scene, RemoveAction(target=2)) == []
    assert destination_box(scene, AddAction(prompt="a cat", anchor=3, side="right"))[2] == W  # clipped


def test_check_plan_joins_reasons_and_follows_earlier_actions():
    scene = dog_scene()
    check_plan_placements(EditPlan(rationale="", actions=[MoveAction(target=1, position="right"),
                                                          DuplicateAction(target=1)]), scene, "move and copy the dog")
    bad = EditPlan(rationale="", actions=[MoveAction(target=1, anchor=3, side="right"),
                                          ResizeAction(target=3, scale=3.0)])
    with pytest.raises(ValueError, match=r"#1 dog would end up .*; #3 truck is far .*; #3 truck would end up"):
        check_plan_placements(bad, scene, "move the dog beside the car and enlarge the car")
    gone = EditPlan(rationale="", actions=[RemoveAction(target=3), MoveAction(target=1, anchor=3)])
    with pytest.raises(ValueError, match="no object #3"):
        check_plan_placements(gone, scene, "remove the car and put the dog there")


def tool_workspace() -> Workspace:
    image = np.full((H, W, 3), 120, np.uint8)
    for det, colour in zip(dog_scene_detections(), ((200, 40, 40), (40, 160, 40), (40, 40, 200))):
        x0, y0, x1, y1 = (int(v) for v in det.box)
        image[y0:y1, x0:x1] = colour
    backends = Backends(detector=FakeDetector(dog_scene_detections()), segmenter=ExactBoxSegmenter(),
                        describer=AttributeDescriber(), remover=MeanFillRemover(), recolorer=OklabRecolorer())
    ws = Workspace(image, backends=backends)
    ws.perceive()
    return ws


@pytest.mark.parametrize("label, step", [
    ("dog", {"type": "move", "position": "right"}),
    ("truck", {"type": "move", "anchor": "dog", "side": "right"}),  # onto the dog's ground line
    ("truck", {"type": "move", "dx": -60, "dy": -40}),
    ("dog", {"type": "duplicate"}),
    ("dog", {"type": "resize", "scale": 0.5}),
    ("dog", {"type": "flip"}),
])
def test_destination_box_is_where_the_tool_puts_the_object(label, step):
    ws = tool_workspace()
    ids = {o.label: o.id for o in ws.scene.objects}
    data = {**step, "target": ids[label]} | ({"anchor": ids[step["anchor"]]} if "anchor" in step else {})
    action = ACTION_ADAPTER.validate_python(data)
    names = {"target": "object_id", "anchor": "anchor_id"}
    args = {names.get(k, k): v for k, v in data.items() if k != "type"}
    expected = destination_box(ws.scene, action)
    tool = {t.name: t for t in editing_tools(ws, handle_errors=False)}[f"{action.type}_object"]
    tool.invoke(args)
    placed = ws.scene.objects[-1] if action.type == "duplicate" else ws.scene.get(action.target)
    assert placed.box == pytest.approx(expected, abs=1.0)


def test_moved_fully_visible():
    before_mask = np.zeros((100, 200), bool)
    before_mask[40:60, 20:60] = True  # 800 px
    before = SceneObject(id=1, label="dog", score=0.9, box=(20, 40, 60, 60), mask=RLEMask.from_array(before_mask))
    moved = np.zeros_like(before_mask)
    moved[40:60, 170:200] = True  # 30 of its 40 columns left at the right border
    assert moved_fully_visible(before, moved) == (
        "#1 dog is only 75% visible after the edit (cut by the image border); choose another placement")
    hidden = np.zeros_like(before_mask)
    hidden[40:60, 100:130] = True
    assert "hidden behind other objects" in moved_fully_visible(before, hidden)
    whole = np.zeros_like(before_mask)
    whole[40:60, 120:160] = True
    assert moved_fully_visible(before, whole) is None
