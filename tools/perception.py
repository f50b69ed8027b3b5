"""Perception tools: detect, segment, describe, and update the scene (SSR) of a workspace."""

from __future__ import annotations

from pydantic import BaseModel, Field
from langchain_core.tools import StructuredTool, ToolException

from cielr_agent.masks import see_through

from .workspace import Workspace


class DetectArgs(BaseModel):
    labels: list[str] = Field(min_length=1, max_length=8, description="names of the things to look for, e.g. ['cup', 'knife']")


class ObjectArgs(BaseModel):
    object_id: int = Field(description="id of an object in the scene (the n in #n)")


class PointArgs(BaseModel):
    x: float = Field(description="horizontal pixel coordinate of a point on the object")
    y: float = Field(description="vertical pixel coordinate of a point on the object")
    label: str = Field(description="what the object is, e.g. 'vase'")


class UpdateSceneArgs(BaseModel):
    object_id: int = Field(description="id of the object to change")
    label: str | None = Field(None, description="corrected label")
    attributes: dict[str, str] = Field(default_factory=dict, description="attributes to set, e.g. {'material': 'wood'}")
    remove: bool = Field(False, description="drop the object from the scene (a false detection)")
    reason: str = Field("", description="why the scene changes")


def _line(obj) -> str:
    x0, y0, x1, y1 = (round(v) for v in obj.box)
    attrs = ", ".join(f"{k}: {v}" for k, v in obj.attributes.items())
    return f"#{obj.id} {obj.label} ({obj.score:.2f}) box [{x0},{y0},{x1},{y1}] {attrs}".rstrip()


def perception_tools(ws: Workspace, handle_errors: bool = True) -> list[StructuredTool]:
    """The perception tools bound to one workspace.

    With `handle_errors` a ToolException becomes the tool's answer (what agents need); otherwise it raises.
    """

    def detect_objects(labels: list[str]) -> str:
        """Look for specific kinds of objects in the image and add any new ones to the scene.
        Use it when the instruction needs a thing the scene does not list yet."""
        resolved, missing = {}, []
        for text in labels:
            label = ws.backends.detector.resolve_label(text)
            if label is None:
                missing.append(text)
            else:
                resolved.setdefault(label, text)
        notes = [f"'{t}' is not something this detector can find" for t in missing]
        if resolved:
            found = ws.backends.detector.detect(ws.image, min_score=ws.config.refine_min_score, labels=list(resolved))
            added = ws.add_detections(found, request=f"detect {', '.join(labels)}")
            present = [o for o in ws.scene.objects if o.label in resolved]
            if present:
                notes.append("in the scene: " + ", ".join(f"#{o.id} {o.label}" for o in present))
                if added:
                    notes.append(f"({len(added)} newly added)")
            else:
                notes.append(f"no {', '.join(resolved)} found in the image")
        return "\n".join(notes)

    def segment_object(object_id: int) -> str:
        """Compute the pixel mask of one scene object (needed for exact area and colour)."""
        try:
            m = ws.mask(object_id)
        except (KeyError, ValueError) as exc:
            raise ToolException(str(exc)) from None
        obj = ws.scene.get(object_id)
        return f"#{obj.id} {obj.label}: mask of {int(m.sum())} px ({100 * m.mean():.1f}% of the image)"

    def describe_object(object_id: int) -> str:
        """Describe one scene object in detail: colours, size, position (refines its attributes)."""
        try:
            obj = ws.scene.get(object_id)
            m = ws.mask(object_id)
        except (KeyError, ValueError) as exc:
            raise ToolException(str(exc)) from None
        own = m & ~see_through(ws.image, m, tolerance=20)  # not the background seen through it (between spokes)
        attrs = ws.backends.describer.describe(ws.image, own if own.any() else m, obj.box, detail=True)
        obj = ws.scene.get(object_id)
        updated = obj.model_copy(update={"attributes": {**obj.attributes, **attrs}})
        ws.scene = ws.scene.apply(f"describe #{object_id}", "describe_object", modify=[updated],
                                  changes=[f"attributes of #{object_id}: {attrs}"])
        return _line(updated)

    def segment_at_point(x: float, y: float, label: str) -> str:
        """Add the object under a clicked point to the scene, with its mask (needs a point-prompt segmenter
        such as SAM)."""
        segmenter = ws.backends.segmenter
        if not hasattr(segmenter, "segment_points"):
            raise ToolException(f"the segmenter '{ws.config.segmenter}' takes boxes only; point prompts need "
                                "segmenter = \"sam\", \"sam-hf\" or \"sam2\"")
        h, w = ws.image.shape[:2]
        if not (0 <= x < w and 0 <= y < h):
            raise ToolException(f"point ({x}, {y}) is outside the {w}x{h} image")
        try:
            obj = ws.add_segmented(label, segmenter.segment_points(ws.image, [(x, y)], [1]),
                                   request=f"segment at ({round(x)}, {round(y)})")
        except ValueError as exc:
            raise ToolException(str(exc)) from None
        return _line(obj)

    def update_scene(object_id: int, label: str | None = None, attributes: dict[str, str] | None = None,
                     remove: bool = False, reason: str = "") -> str:
        """Merge new evidence into the scene: relabel an object, set attributes, or drop a false detection."""
        try:
            obj = ws.scene.get(object_id)
        except KeyError as exc:
            raise ToolException(str(exc)) from None
        if remove:
            ws.scene = ws.scene.apply(reason or f"drop #{object_id}", "update_scene", remove=[object_id],
                                      changes=[f"dropped #{object_id} {obj.label}"])
            ws.forget_mask(object_id)
            return f"dropped #{object_id} {obj.label}"
        changes = {"label": label} if label else {}
        updated = obj.model_copy(update={**changes, "attributes": {**obj.attributes, **(attributes or {})}})
        ws.scene = ws.scene.apply(reason or f"update #{object_id}", "update_scene", modify=[updated],
                                  changes=[f"updated #{object_id}: {label or ''} {attributes or ''}".strip()])
        return _line(updated)

    specs = [
        (detect_objects, DetectArgs),
        (segment_object, ObjectArgs),
        (describe_object, ObjectArgs),
        (segment_at_point, PointArgs),
        (update_scene, UpdateSceneArgs),
    ]
    return [StructuredTool.from_function(func=f, name=f.__name__, description=f.__doc__.strip(), args_schema=a,
                                         handle_tool_error=handle_errors)
            for f, a in specs]
