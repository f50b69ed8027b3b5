"""Editing tools: remove, recolour, replace, add, move, resize, flip and duplicate scene objects.

Every tool changes only the pixels its action needs and records the change in the SSR. Geometric tools
(move/resize/flip/duplicate) work in every profile: they cut the object with its mask, fill the hole with the
active remover and paste the transformed object with soft edges. Replace and add need a generator backend.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from langchain_core.tools import StructuredTool, ToolException

from cielr_agent.actions import (AddAction, DuplicateAction, FlipAction, MoveAction, Position, ResizeAction,
                                 Side)
from cielr_agent.masks import box_of, composite, dilate, feather, see_through, solid
from cielr_agent.ssr import RLEMask, SceneObject, in_front

from . import placement, transform
from .perception import ObjectArgs
from .workspace import OCCLUDER_MARGIN, Workspace


MIN_SEE_THROUGH = 0.08  # of an object's mask: measured on dog.jpg, the bicycle's spokes 12 %, the dog's fur 3.5 %


class RemoveArgs(ObjectArgs):
    grow: int | None = Field(None, ge=0, le=64, description="pixels to grow the object's mask by (default from config)")


class RecolorArgs(ObjectArgs):
    color: str = Field(description="target colour: a name such as 'blue', 'dark green', or a hex like '#1e90ff'")


class ReplaceArgs(ObjectArgs):
    prompt: str = Field(description="what should stand where the object is, e.g. 'a red vintage car'")


class PlacementArgs(BaseModel):
    position: Position | None = Field(None, description="a place in the image, e.g. 'left' or 'bottom-right'")
    anchor_id: int | None = Field(None, description="a scene object to place it beside")
    side: Side | None = Field(None, description="with anchor_id: which side of that object (default right)")
    dx: float = Field(0.0, description="extra horizontal shift in pixels (positive = right)")
    dy: float = Field(0.0, description="extra vertical shift in pixels (positive = down)")


class AddArgs(BaseModel):
    prompt: str = Field(description="what to add, e.g. 'a small brown dog'")
    box: list[float] | None = Field(None, min_length=4, max_length=4, description="where: [x0, y0, x1, y1] in pixels")
    anchor_id: int | None = Field(None, description="without a box: a scene object to place the new one beside")
    side: Side | None = Field(None, description="with anchor_id: which side of that object (default right)")


class MoveArgs(ObjectArgs, PlacementArgs):
    pass


class DuplicateArgs(ObjectArgs, PlacementArgs):
    pass


class ResizeArgs(ObjectArgs):
    scale: float = Field(gt=0.0, le=8.0, description="scale factor about the object's base, e.g. 1.5 = 50% larger")


class FlipArgs(ObjectArgs):
    axis: Literal["horizontal", "vertical"] = Field("horizontal", description="horizontal mirrors left-right")


def _needs_generator(action: str) -> ToolException:
    return ToolException(
        f"'{action}' needs a generative (inpainting) backend, which the embedded profile does not have; "
        "express the edit as remove/recolor/move/resize/flip/duplicate, or use a profile with "
        "generator = \"sd-inpaint\" (README: Using full models)"
    )


def _label_from_prompt(prompt: str) -> str:
    words = prompt.strip().rstrip(".").split()
    if words and words[0].lower() in ("a", "an", "the", "some"):
        words = words[1:]
    return " ".join(words).lower() or prompt.strip()


class _Editor:
    """The editing operations on one workspace; the tools below are thin typed wrappers around it."""

    def __init__(self, ws: Workspace):
        self.ws = ws

    def target(self, object_id: int) -> SceneObject:
        try:
            return self.ws.scene.get(object_id)
        except KeyError as exc:
            raise ToolException(str(exc)) from None

    def visible_mask(self, object_id: int) -> np.ndarray:
        try:
            return self.ws.mask(object_id)
        except (KeyError, ValueError) as exc:
            raise ToolException(str(exc)) from None

    def region(self, object_id: int, grow: int | None = None, whole: bool = False) -> np.ndarray:
        try:
            return self.ws.edit_mask(object_id, grow=grow, whole=whole)
        except (KeyError, ValueError) as exc:
            raise ToolException(str(exc)) from None

    def see_through(self, object_id: int) -> np.ndarray:
        """Background pockets inside the object (between spokes) that a removal keeps; the other objects are no
        background sample. Scattered pockets that add up to little are the object's own pixels that happen to
        look like the background (a dog's white chest on a white floor), not holes: nothing is kept then."""
        ws = self.ws
        others = self.others(object_id)
        whole = ws.whole_mask(object_id)
        pockets = see_through(ws.image, whole, None if others is None else ~others)
        if pockets.sum() < MIN_SEE_THROUGH * max(1, int(whole.sum())):
            return np.zeros_like(pockets)
        return pockets

    def others(self, object_id: int, include=None) -> np.ndarray | None:
        """The (known) masks of the other objects (those `include` accepts), grown a little; None when none."""
        ws = self.ws
        masks = [ws.mask(o.id) for o in ws.scene.objects
                 if o.id != object_id and o.id in ws.known_masks() and (include is None or include(o))]
        return dilate(np.logical_or.reduce(masks), 3) if masks else None

    def fill_hole(self, object_id: int, region: np.ndarray) -> np.ndarray:
        """The image with the object's `region` filled. Objects in front of it or beside it are never copied in;
        objects it stands in front of are background there (a wheel behind a dog continues into the hole)."""
        target = self.ws.scene.get(object_id)
        protect = self.others(object_id, include=lambda o: not in_front(target, o))
        return self.fill(region, protect=None if protect is None else protect & ~region)

    def fill(self, region: np.ndarray, protect: np.ndarray | None = None) -> np.ndarray:
        """The current image with `region` filled by the active remover (pixels outside it untouched).
        `protect` pixels (other objects) are not copied into the hole by removers that take sources."""
        remover = self.ws.backends.remover
        if protect is not None and getattr(remover, "takes_protect", False):
            filled = remover.remove(self.ws.image, region, protect=protect)
        else:
            filled = remover.remove(self.ws.image, region)
        return composite(self.ws.image, filled, region.astype(np.float32))

    def matrix(self, action: placement.Geometric) -> np.ndarray:
        """The affine map that carries out a geometric action (placement.destination_matrix)."""
        try:
            return placement.destination_matrix(self.ws.scene, action)
        except (KeyError, ValueError) as exc:
            raise ToolException(str(exc)) from None

    def paste(self, obj: SceneObject, matrix: np.ndarray, keep_original: bool) -> tuple[np.ndarray, np.ndarray]:
        """Cut `obj`, fill its hole (unless kept), paste it through `matrix`; returns (image, new mask).

        Objects in front of its new place (depth, else the ground-plane cue) keep their pixels.
        """
        ws = self.ws
        self.visible_mask(obj.id)
        mask = ws.whole_mask(obj.id)
        for occ in ws.occluders(obj.id):
            mask &= ~ws.mask(occ.id)
        alpha = feather(mask, 1)  # half-transparent on the mask's edge: no halo, no lost rim
        pixels, moved = transform.warp(ws.image, alpha, matrix)
        _, hard = transform.warp(ws.image, mask.astype(np.float32), matrix)
        new_mask = hard >= 0.5
        placed = obj.model_copy(update={"box": transform.map_box(obj.box, matrix)})
        for other in ws.scene.objects:  # objects in front of the new place stay in front
            if other.id != obj.id and in_front(other, placed):
                keep = dilate(solid(ws.mask(other.id)), OCCLUDER_MARGIN)
                moved[keep] = 0.0
                new_mask &= ~keep
        if not new_mask.any():
            raise ToolException(f"#{obj.id} {obj.label} would end up outside the image; choose another placement")
        background = ws.image if keep_original else self.fill_hole(obj.id, ws.edit_mask(obj.id, whole=True))
        return composite(background, pixels, moved), new_mask

    def placed_object(self, obj: SceneObject, oid: int, image: np.ndarray, mask: np.ndarray,
                      source: str) -> SceneObject:
        box = tuple(float(v) for v in box_of(mask))
        attrs = {**obj.attributes, **self.ws.backends.describer.describe(image, mask, box),
                 "area_fraction": round(float(mask.mean()), 4)}
        return obj.model_copy(update={"id": oid, "box": box, "mask": RLEMask.from_array(mask), "attributes": attrs,
                                      "source": source or obj.source})

    def transform_object(self, object_id: int, matrix: np.ndarray, tool: str, verb: str,
                         keep_original: bool = False) -> str:
        """Carry out a geometric edit and record it in the SSR (a new object for a duplicate)."""
        ws = self.ws
        obj = self.target(object_id)
        before = ws.changed_pixels()
        image, mask = self.paste(obj, matrix, keep_original)
        if keep_original:
            new = self.placed_object(obj, ws.scene.next_id(), image, mask, source=f"duplicate of #{obj.id}")
            ws.image = image
            ws.scene = ws.scene.apply(f"{verb} #{object_id}", tool, add=[new],
                                      changes=[f"#{new.id} {new.label} is a copy of #{object_id}"])
            ws.set_mask(new.id, mask)
            done = f"duplicated #{object_id} {obj.label} as #{new.id}"
        else:
            new = self.placed_object(obj, obj.id, image, mask, source=obj.source)
            ws.image = image
            ws.scene = ws.scene.apply(f"{verb} #{object_id}", tool, modify=[new],
                                      changes=[f"{verb} #{object_id} {obj.label}: box now "
                                               f"[{', '.join(str(round(v)) for v in new.box)}]"])
            ws.set_mask(obj.id, mask)
            done = f"{verb} #{object_id} {obj.label}"
        box = ", ".join(str(round(v)) for v in new.box)
        return f"{done}: box [{box}], {ws.changed_pixels() - before} px changed"

    def generator(self, action: str):
        if self.ws.backends.generator is None:
            raise _needs_generator(action)
        return self.ws.backends.generator

    def generate(self, region: np.ndarray, prompt: str, action: str) -> np.ndarray:
        """The current image with `region` regenerated to show `prompt`; nothing outside `region` changes."""
        out = self.generator(action).inpaint(self.ws.image, region, prompt)
        return composite(self.ws.image, out, region.astype(np.float32))

    def add_box(self, action: AddAction) -> tuple[float, float, float, float]:
        """The box a new object is generated in (placement.add_box)."""
        try:
            return placement.add_box(self.ws.scene, action)
        except (KeyError, ValueError) as exc:
            raise ToolException(str(exc)) from None

def editing_tools(ws: Workspace, handle_errors: bool = True) -> list[StructuredTool]:
    """The editing tools bound to one workspace.

    With `handle_errors` a ToolException becomes the tool's answer (what agents need); otherwise it raises.
    """
    ed = _Editor(ws)

    def remove_object(object_id: int, grow: int | None = None) -> str:
        """Erase an object from the image and fill its place with the surrounding background.
        Objects in front of it keep their pixels."""
        obj = ed.target(object_id)
        region = ed.region(object_id, grow, whole=True) & ~ed.see_through(object_id)
        before = ws.changed_pixels()
        ws.image = ed.fill_hole(object_id, region)
        ws.scene = ws.scene.apply(f"remove #{object_id}", "remove_object", remove=[object_id],
                                  changes=[f"removed #{object_id} {obj.label}"])
        ws.forget_mask(object_id)
        return f"removed #{object_id} {obj.label}: {ws.changed_pixels() - before} px changed"

    def recolor_object(object_id: int, color: str) -> str:
        """Change the colour of an object, keeping its texture and shading."""
        obj = ed.target(object_id)
        region = ed.region(object_id, 0)
        alpha = feather(region, ws.config.feather) * region
        try:
            recolored = ws.backends.recolorer.recolor(ws.image, alpha, color)
        except ValueError as exc:
            raise ToolException(str(exc)) from None
        before = ws.changed_pixels()
        ws.image = composite(ws.image, recolored, alpha)
        updated = obj.model_copy(update={"attributes": {**obj.attributes, "color": color}})
        ws.scene = ws.scene.apply(f"recolor #{object_id} {color}", "recolor_object", modify=[updated],
                                  changes=[f"#{object_id} {obj.label} is now {color}"])
        return f"recolored #{object_id} {obj.label} to {color}: {ws.changed_pixels() - before} px changed"

    def replace_object(object_id: int, prompt: str) -> str:
        """Replace an object with something else described by the prompt (needs a generative backend)."""
        obj = ed.target(object_id)
        ed.generator("replace")
        region = ed.region(object_id)
        before = ws.changed_pixels()
        ws.image = ed.generate(region, prompt, "replace")
        x0, y0, x1, y1 = box_of(region)
        new = obj.model_copy(update={"label": _label_from_prompt(prompt), "box": (x0, y0, x1, y1),
                                     "mask": None, "score": 1.0, "source": f"generator:{ws.config.generator}",
                                     "attributes": {"generated from": prompt}})
        ws.scene = ws.scene.apply(f"replace #{object_id} with {prompt}", "replace_object", modify=[new],
                                  changes=[f"#{object_id} {obj.label} replaced by {prompt}"])
        ws.forget_mask(object_id)
        return f"replaced #{object_id} {obj.label} with {prompt}: {ws.changed_pixels() - before} px changed"

    def add_object(prompt: str, box: list[float] | None = None, anchor_id: int | None = None,
                   side: Side | None = None) -> str:
        """Add a new object described by the prompt inside a box (pixels) or beside an existing object
        (needs a generative backend)."""
        ed.generator("add")
        x0, y0, x1, y1 = ed.add_box(AddAction(prompt=prompt, box=box, anchor=anchor_id, side=side))
        region = np.zeros(ws.image.shape[:2], bool)
        region[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True
        before = ws.changed_pixels()
        ws.image = ed.generate(region, prompt, "add")
        new = SceneObject(id=ws.scene.next_id(), label=_label_from_prompt(prompt), score=1.0, box=(x0, y0, x1, y1),
                          attributes={"generated from": prompt}, source=f"generator:{ws.config.generator}")
        ws.scene = ws.scene.apply(f"add {prompt}", "add_object", add=[new], changes=[f"added #{new.id} {prompt}"])
        return (f"added #{new.id} {new.label} in [{round(x0)}, {round(y0)}, {round(x1)}, {round(y1)}]: "
                f"{ws.changed_pixels() - before} px changed")

    def move_object(object_id: int, position: Position | None = None, anchor_id: int | None = None,
                    side: Side | None = None, dx: float = 0.0, dy: float = 0.0) -> str:
        """Move an object to a place in the image, beside another object, or by (dx, dy) pixels; the place it
        leaves is filled with background."""
        matrix = ed.matrix(MoveAction(target=object_id, position=position, anchor=anchor_id, side=side, dx=dx, dy=dy))
        return ed.transform_object(object_id, matrix, "move_object", "moved")

    def resize_object(object_id: int, scale: float) -> str:
        """Scale an object about its base (it keeps standing where it stands); the uncovered place is filled."""
        matrix = ed.matrix(ResizeAction(target=object_id, scale=scale))
        return ed.transform_object(object_id, matrix, "resize_object", "resized")

    def flip_object(object_id: int, axis: Literal["horizontal", "vertical"] = "horizontal") -> str:
        """Mirror an object in place (horizontal: it faces the other way)."""
        return ed.transform_object(object_id, ed.matrix(FlipAction(target=object_id, axis=axis)), "flip_object",
                                   "flipped")

    def duplicate_object(object_id: int, position: Position | None = None, anchor_id: int | None = None,
                         side: Side | None = None, dx: float = 0.0, dy: float = 0.0) -> str:
        """Paste a copy of an object at a place, beside an object, or shifted by (dx, dy); default: beside
        itself, on whichever side has room."""
        matrix = ed.matrix(DuplicateAction(target=object_id, position=position, anchor=anchor_id, side=side, dx=dx,
                                           dy=dy))
        return ed.transform_object(object_id, matrix, "duplicate_object", "duplicated", keep_original=True)

    specs = [
        (remove_object, RemoveArgs),
        (recolor_object, RecolorArgs),
        (replace_object, ReplaceArgs),
        (add_object, AddArgs),
        (move_object, MoveArgs),
        (resize_object, ResizeArgs),
        (flip_object, FlipArgs),
        (duplicate_object, DuplicateArgs),
    ]
    return [StructuredTool.from_function(func=f, name=f.__name__, description=f.__doc__.strip(), args_schema=a,
                                         handle_tool_error=handle_errors)
            for f, a in specs]
