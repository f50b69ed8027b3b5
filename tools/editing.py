"""Editing tools: remove and recolour objects; replace/add/move/resize need a generative backend."""

from __future__ import annotations

from pydantic import BaseModel, Field
from langchain_core.tools import StructuredTool, ToolException

from cielr_agent.masks import composite, feather

from .perception import ObjectArgs
from .workspace import Workspace


class RemoveArgs(ObjectArgs):
    grow: int | None = Field(None, ge=0, le=64, description="pixels to grow the object's mask by (default from config)")


class RecolorArgs(ObjectArgs):
    color: str = Field(description="target colour: a name such as 'blue', 'dark green', or a hex like '#1e90ff'")


class ReplaceArgs(ObjectArgs):
    prompt: str = Field(description="what should stand where the object is")


class AddArgs(BaseModel):
    prompt: str = Field(description="what to add")
    box: list[float] | None = Field(None, min_length=4, max_length=4, description="where: [x0, y0, x1, y1] in pixels")
    anchor_id: int | None = Field(None, description="a scene object the new one is placed relative to")


class MoveArgs(ObjectArgs):
    dx: float = Field(0.0, description="horizontal shift in pixels (positive = right)")
    dy: float = Field(0.0, description="vertical shift in pixels (positive = down)")


class ResizeArgs(ObjectArgs):
    scale: float = Field(gt=0.0, description="scale factor, e.g. 1.5 for 50% larger")


def _needs_generative_backend(action: str) -> ToolException:
    return ToolException(
        f"'{action}' needs a generative (inpainting) backend, which is not available in the embedded profile; "
        "express the edit as remove or recolor, or use a profile with a diffusion backend (not shipped yet)"
    )


def editing_tools(ws: Workspace, handle_errors: bool = True) -> list[StructuredTool]:
    """The editing tools bound to one workspace.

    With `handle_errors` a ToolException becomes the tool's answer (what agents need); otherwise it raises.
    """

    def remove_object(object_id: int, grow: int | None = None) -> str:
        """Erase an object from the image and fill its place with the surrounding background.
        Objects in front of it keep their pixels."""
        try:
            obj = ws.scene.get(object_id)
            region = ws.edit_mask(object_id, grow=grow)
        except (KeyError, ValueError) as exc:
            raise ToolException(str(exc)) from None
        before = ws.changed_pixels()
        filled = ws.backends.remover.remove(ws.image, region)
        ws.image = composite(ws.image, filled, region.astype("float32"))
        ws.scene = ws.scene.apply(f"remove #{object_id}", "remove_object", remove=[object_id],
                                  changes=[f"removed #{object_id} {obj.label}"])
        ws.forget_mask(object_id)
        return f"removed #{object_id} {obj.label}: {ws.changed_pixels() - before} px changed"

    def recolor_object(object_id: int, color: str) -> str:
        """Change the colour of an object, keeping its texture and shading."""
        try:
            obj = ws.scene.get(object_id)
            region = ws.edit_mask(object_id, grow=0)
        except (KeyError, ValueError) as exc:
            raise ToolException(str(exc)) from None
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
        """Replace an object with something else described by the prompt."""
        raise _needs_generative_backend("replace")

    def add_object(prompt: str, box: list[float] | None = None, anchor_id: int | None = None) -> str:
        """Add a new object described by the prompt at the given box."""
        raise _needs_generative_backend("add")

    def move_object(object_id: int, dx: float = 0.0, dy: float = 0.0) -> str:
        """Move an object by (dx, dy) pixels, filling the place it leaves."""
        raise _needs_generative_backend("move")

    def resize_object(object_id: int, scale: float) -> str:
        """Scale an object about its base."""
        raise _needs_generative_backend("resize")

    specs = [
        (remove_object, RemoveArgs),
        (recolor_object, RecolorArgs),
        (replace_object, ReplaceArgs),
        (add_object, AddArgs),
        (move_object, MoveArgs),
        (resize_object, ResizeArgs),
    ]
    return [StructuredTool.from_function(func=f, name=f.__name__, description=f.__doc__.strip(), args_schema=a,
                                         handle_tool_error=handle_errors)
            for f, a in specs]
