"""Where geometric actions put an object, and why a placement would look implausible.

`destination_matrix` is the one place the move/duplicate/resize/flip geometry is decided: the editing tools
paste through it and `placement_problems` judges its result before anything runs, so the plan can go back to
the LLM with a reason. Pure functions over the SSR; nothing here touches pixels.
"""

from __future__ import annotations

import re

import numpy as np

from cielr_agent.actions import (AddAction, DuplicateAction, EditPlan, FlipAction, MoveAction, RemoveAction,
                                 ResizeAction)
from cielr_agent.ssr import Box, SceneGraph, SceneObject

from . import transform

MIN_ADD_SIZE = 8  # px: the smallest box an object can be added in
OUTSIDE_TOLERANCE = 0.02  # of the object's box area that may fall outside the frame (rounding, feathered rims)
GROUND_TOLERANCE = 0.10  # of the image height a move may shift the object's base and stay on the same surface
ANCHOR_BASE_TOLERANCE = 0.15  # of the image height between two boxes' bottoms that still counts as one depth
ANCHOR_NEARNESS_TOLERANCE = 0.3  # measured nearness difference that still counts as one depth
ANCHOR_SIZE_RATIO = 3.0  # an anchor whose box height differs from the object's by more than this is not comparable
VISIBLE_MIN = 0.9  # of the object's area that must still be seen after a move or duplicate
# words with which an instruction asks for the object off its ground, or higher or lower in the picture
VERTICAL_WORDS = re.compile(r"\b(air|sky|fly|flying|float|floating|hang|hanging|wall|ceiling|roof|top|above|"
                            r"shelf|table|up|upwards?|higher|raise|down|downwards?|lower|bottom|below)\b",
                            re.IGNORECASE)

Geometric = MoveAction | DuplicateAction | ResizeAction | FlipAction


def _name(obj: SceneObject) -> str:
    return f"#{obj.id} {obj.label}"


def _anchor(scene: SceneGraph, obj: SceneObject, action: MoveAction | DuplicateAction) -> SceneObject:
    if action.anchor == obj.id:
        raise ValueError("an object cannot be placed beside itself; name another anchor_id")
    return scene.get(action.anchor)


def _offset(scene: SceneGraph, obj: SceneObject, action: MoveAction | DuplicateAction) -> tuple[float, float, float]:
    """The shift that places `obj` as asked (a named position, then beside the anchor, then dx/dy), and the
    vertical part of it the anchor decided."""
    ox = oy = ay = 0.0
    if action.position is not None:
        ox, oy = transform.position_offset(obj.box, scene.width, scene.height, action.position)
    if action.anchor is not None:
        anchor = _anchor(scene, obj, action)
        box = (obj.box[0] + ox, obj.box[1] + oy, obj.box[2] + ox, obj.box[3] + oy)
        ax, ay = transform.beside_offset(box, anchor.box, action.side or "right")
        ox, oy = ox + ax, oy + ay
    return ox + action.dx, oy + action.dy, ay


def _free_side_shift(scene: SceneGraph, obj: SceneObject) -> float:
    """Horizontal shift for a copy placed beside the object: to the right when it fits, else to the left,
    else on the side with more room (overlapping the original)."""
    room_left, room_right = obj.box[0], scene.width - obj.box[2]
    step = (obj.box[2] - obj.box[0]) * (1 + transform.GAP)
    if max(room_left, room_right) < 1:
        raise ValueError(f"{_name(obj)} spans the whole image width; give a position or dx/dy")
    if room_right >= step or (room_left < step and room_right >= room_left):
        return min(step, room_right)
    return -min(step, room_left)


def destination_matrix(scene: SceneGraph, action: Geometric) -> np.ndarray:
    """The 2×3 affine map the editing tool applies to the action's object.

    Raises KeyError for an unknown object and ValueError for a placement that cannot be carried out."""
    obj = scene.get(action.target)
    if isinstance(action, ResizeAction):
        return transform.scaling_about_base(obj.box, action.scale)
    if isinstance(action, FlipAction):
        return transform.mirror(obj.box, action.axis)
    ox, oy, _ = _offset(scene, obj, action)
    if abs(ox) < 0.5 and abs(oy) < 0.5:
        if isinstance(action, MoveAction):
            raise ValueError(f"{_name(obj)} is already there; give a position, an anchor_id or dx/dy")
        ox = _free_side_shift(scene, obj)
    return transform.translation(ox, oy)


def add_box(scene: SceneGraph, action: AddAction) -> Box:
    """The box a new object is generated in: the asked box, or the anchor's box beside it; clipped to the image."""
    w, h = scene.width, scene.height
    box = action.box
    if box is None:
        if action.anchor is None:
            raise ValueError("add needs a box [x0, y0, x1, y1] or an anchor_id to place the object beside")
        anchor = scene.get(action.anchor)
        dx, dy = transform.beside_offset(anchor.box, anchor.box, action.side or "right")
        box = (anchor.box[0] + dx, anchor.box[1] + dy, anchor.box[2] + dx, anchor.box[3] + dy)
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((max(0.0, min(w, x0)), max(0.0, min(w, x1))))
    y0, y1 = sorted((max(0.0, min(h, y0)), max(0.0, min(h, y1))))
    if x1 - x0 < MIN_ADD_SIZE or y1 - y0 < MIN_ADD_SIZE:
        raise ValueError(f"the box {list(box)} leaves less than {MIN_ADD_SIZE} px inside the {w}x{h} image; "
                         "give a box inside the image")
    return x0, y0, x1, y1


def destination_box(scene: SceneGraph, action: Geometric | AddAction) -> Box:
    """The box the action's object will have after it runs (for add: the new object's box)."""
    if isinstance(action, AddAction):
        return add_box(scene, action)
    return transform.map_box(scene.get(action.target).box, destination_matrix(scene, action))


def _outside_fraction(box: Box, width: int, height: int) -> float:
    area = (box[2] - box[0]) * (box[3] - box[1])
    inside = max(0.0, min(box[2], width) - max(box[0], 0.0)) * max(0.0, min(box[3], height) - max(box[1], 0.0))
    return 1.0 - inside / area if area > 0 else 0.0


def _anchor_gap(obj: SceneObject, anchor: SceneObject, height: int) -> str | None:
    """Why `anchor` is not at the object's depth and scale (None when it is)."""
    if obj.nearness is not None and anchor.nearness is not None:
        if abs(obj.nearness - anchor.nearness) > ANCHOR_NEARNESS_TOLERANCE:
            return f"its nearness is {anchor.nearness:.2f} against {obj.nearness:.2f}"
        return None
    rise = obj.box[3] - anchor.box[3]
    if abs(rise) > ANCHOR_BASE_TOLERANCE * height:
        where = "farther back, e.g. across the street" if rise > 0 else "much nearer the camera"
        return f"its base is {abs(rise):.0f} px {'higher' if rise > 0 else 'lower'} in the image: {where}"
    ratio = (obj.box[3] - obj.box[1]) / max(1e-6, anchor.box[3] - anchor.box[1])
    if not 1 / ANCHOR_SIZE_RATIO <= ratio <= ANCHOR_SIZE_RATIO:
        size = f"{max(ratio, 1 / ratio):.1f}x {'smaller' if ratio > 1 else 'larger'}"
        return f"it looks {size}, so it is at another depth"
    return None


def _asks_vertical(action: MoveAction | DuplicateAction, instruction: str) -> bool:
    """Whether leaving the ground line was asked for: by the instruction's words, a side above/below, or a dy
    beside a number in the instruction ("move it 50 px", "up"/"down" are words of the list)."""
    return (bool(VERTICAL_WORDS.search(instruction)) or action.side in ("above", "below")
            or (action.dy != 0 and any(c.isdigit() for c in instruction)))


def placement_problems(scene: SceneGraph, action, instruction: str = "") -> list[str]:
    """Short reasons (one sentence each, naming ids) why the action's placement would look implausible; [] when
    it is fine or the action places nothing."""
    if not isinstance(action, (MoveAction, DuplicateAction, ResizeAction, FlipAction, AddAction)):
        return []
    try:
        box = destination_box(scene, action)
    except KeyError as exc:
        return [str(exc.args[0])]
    except ValueError as exc:
        return [str(exc)]
    if isinstance(action, AddAction):
        return []
    obj, w, h = scene.get(action.target), scene.width, scene.height
    problems = []
    outside = _outside_fraction(box, w, h)
    if outside > OUTSIDE_TOLERANCE:
        fix = "a smaller scale" if isinstance(action, ResizeAction) else "a position or a nearer anchor"
        problems.append(f"{_name(obj)} would end up {100 * outside:.0f}% outside the image (box "
                        f"[{', '.join(str(round(v)) for v in box)}] in a {w}x{h} image); choose {fix}")
    if not isinstance(action, (MoveAction, DuplicateAction)):
        return problems
    grounds = [obj.box[3]]  # the surfaces the object may stand on: its own, and a comparable anchor's
    if action.anchor is not None and (action.side in ("above", "below") or abs(_offset(scene, obj, action)[2]) > 0.5):
        anchor = scene.get(action.anchor)
        gap = _anchor_gap(obj, anchor, h)
        if gap is not None:
            position = {"above": "top", "below": "bottom"}.get(action.side, action.side or "right")
            return [*problems, f"{_name(anchor)} is far from {_name(obj)} ({gap}); place #{obj.id} with a position "
                    f"such as '{position}' instead of beside #{anchor.id}"]
        grounds.append(anchor.box[3])
    shift = min(abs(box[3] - g) for g in grounds)
    if shift > GROUND_TOLERANCE * h and not _asks_vertical(action, instruction):
        problems.append(f"{_name(obj)} would leave its ground line (its base moves {abs(box[3] - obj.box[3]):.0f} px "
                        f"{'up' if box[3] < obj.box[3] else 'down'}, off the surface it stands on); keep it at its "
                        "height with a position such as 'left' or 'right'")
    return problems


def _after(scene: SceneGraph, action) -> SceneGraph:
    """The scene's boxes once `action` ran (for checking the plan's next action; masks of moved objects dropped)."""
    if isinstance(action, RemoveAction):
        return scene.model_copy(update={"objects": [o for o in scene.objects if o.id != action.target]})
    if isinstance(action, (MoveAction, ResizeAction, FlipAction)) and scene.has(action.target):
        try:
            box = destination_box(scene, action)
        except (KeyError, ValueError):  # already reported by placement_problems
            return scene
        objects = [o.model_copy(update={"box": box, "mask": None}) if o.id == action.target else o
                   for o in scene.objects]
        return scene.model_copy(update={"objects": objects})
    return scene


def check_plan_placements(plan: EditPlan, scene: SceneGraph, instruction: str) -> None:
    """Raise ValueError naming every implausible placement of the plan, each action judged on the scene the
    actions before it leave."""
    problems = []
    for action in plan.actions:
        problems += placement_problems(scene, action, instruction)
        scene = _after(scene, action)
    if problems:
        raise ValueError("; ".join(problems))


def moved_fully_visible(before: SceneObject, new_mask: np.ndarray) -> str | None:
    """After a move or duplicate: why the placed object is not fully seen (cut by the image border, hidden behind
    other objects), or None when its area is at least VISIBLE_MIN of what it was before."""
    area = before.area  # the mask's area; the box's when the object had no mask
    shown = float(np.count_nonzero(new_mask))
    if area <= 0 or shown >= VISIBLE_MIN * area:
        return None
    border = bool(new_mask[0].any() or new_mask[-1].any() or new_mask[:, 0].any() or new_mask[:, -1].any())
    why = "cut by the image border" if border else "hidden behind other objects"
    return f"{_name(before)} is only {100 * shown / area:.0f}% visible after the edit ({why}); choose another placement"
