"""Explicit edit actions (a discriminated union), the edit plan, and the flat form an LLM fills in."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Model(BaseModel):
    """Base of plans and decisions: an LLM's NaN or infinity never passes as a number."""

    model_config = ConfigDict(allow_inf_nan=False)


class RemoveAction(_Model):
    """Erase the object and fill its region with plausible background."""

    type: Literal["remove"] = "remove"
    target: int


class RecolorAction(_Model):
    """Change the object's colour (a CSS colour name or #rrggbb), keeping texture and shading."""

    type: Literal["recolor"] = "recolor"
    target: int
    color: str


class ReplaceAction(_Model):
    """Replace the object with something described by `prompt` (needs a generative backend)."""

    type: Literal["replace"] = "replace"
    target: int
    prompt: str


Side = Literal["left", "right", "above", "below"]
Position = Literal["left", "right", "top", "bottom", "center", "top-left", "top-right", "bottom-left", "bottom-right"]


class AddAction(_Model):
    """Add a new object described by `prompt` in `box`, or beside the `anchor` object (needs a generative backend)."""

    type: Literal["add"] = "add"
    prompt: str
    box: tuple[float, float, float, float] | None = None
    anchor: int | None = None  # an SSR object the new one is placed relative to
    side: Side | None = None


class Placement(_Model):
    """Where an object goes: a named `position` of the image, beside the `anchor` object, and/or (dx, dy) px."""

    target: int
    dx: float = 0.0
    dy: float = 0.0
    position: Position | None = None
    anchor: int | None = None
    side: Side | None = None


class MoveAction(Placement):
    """Move the object: to a named `position` of the image, beside the `anchor` object, and/or by (dx, dy) px."""

    type: Literal["move"] = "move"


class ResizeAction(_Model):
    """Scale the object about its base by `scale` (e.g. 1.5 = 50 % larger)."""

    type: Literal["resize"] = "resize"
    target: int
    scale: float = Field(gt=0.0, le=8.0)


class FlipAction(_Model):
    """Mirror the object in place (horizontal = facing the other way, vertical = upside down)."""

    type: Literal["flip"] = "flip"
    target: int
    axis: Literal["horizontal", "vertical"] = "horizontal"


class DuplicateAction(Placement):
    """Paste a copy of the object beside itself or the `anchor`, at a `position`, or shifted by (dx, dy) px."""

    type: Literal["duplicate"] = "duplicate"


EditAction = Annotated[
    Union[RemoveAction, RecolorAction, ReplaceAction, AddAction, MoveAction, ResizeAction, FlipAction,
          DuplicateAction],
    Field(discriminator="type"),
]
ActionType = Literal["remove", "recolor", "replace", "add", "move", "resize", "flip", "duplicate"]
ACTION_ADAPTER: TypeAdapter[EditAction] = TypeAdapter(EditAction)


class EditPlan(_Model):
    """The ordered explicit actions that carry out an instruction, with the LLM's short rationale."""

    rationale: str
    actions: list[EditAction]

    def targets(self) -> list[int]:
        return [a.target for a in self.actions if hasattr(a, "target")]

    def anchors(self) -> list[int]:
        return [a.anchor for a in self.actions if getattr(a, "anchor", None) is not None]


class PlannedStep(_Model):
    """One step as the LLM writes it: a flat record that small models fill in reliably."""

    action: ActionType
    object_id: int | None = Field(None, description="id (#n) of the scene object the action applies to")
    color: str | None = Field(None, description="for recolor: a colour name such as 'blue' or a #rrggbb hex")
    prompt: str | None = Field(None, description="for replace/add: what the new content should be")
    scale: float | None = Field(None, description="for resize: scale factor, e.g. 2 = twice as large")
    position: Position | None = Field(None, description="for move/duplicate: where in the image it should go")
    anchor_id: int | None = Field(None, description="for move/duplicate/add: the object to place it beside")
    side: Side | None = Field(None, description="with anchor_id: which side of that object")
    box: list[float] | None = Field(None, min_length=4, max_length=4,
                                    description="for add: [x0, y0, x1, y1] in pixels where the new object goes")
    axis: Literal["horizontal", "vertical"] | None = Field(None, description="for flip (default horizontal)")
    dx: float | None = Field(None, description="for move/duplicate: horizontal shift in pixels")
    dy: float | None = Field(None, description="for move/duplicate: vertical shift in pixels")

    def to_action(self) -> EditAction:
        """Convert to the typed action; raises ValueError naming the missing field."""
        data: dict = {"type": self.action}
        if self.action != "add":
            if self.object_id is None:
                raise ValueError(f"step '{self.action}' needs object_id")
            data["target"] = self.object_id
        if self.action == "recolor":
            if not self.color:
                raise ValueError("step 'recolor' needs color")
            data["color"] = self.color
        if self.action in ("replace", "add"):
            if not self.prompt:
                raise ValueError(f"step '{self.action}' needs prompt")
            data["prompt"] = self.prompt
        if self.action == "add":
            anchor = self.anchor_id if self.anchor_id is not None else self.object_id
            if self.box is None and anchor is None:
                raise ValueError("step 'add' needs a box [x0, y0, x1, y1] or an anchor_id to place it beside")
            data.update(box=self.box, anchor=anchor, side=self.side)
        if self.action == "resize":
            if not self.scale:
                raise ValueError("step 'resize' needs scale")
            data["scale"] = self.scale
        if self.action == "flip":
            data["axis"] = self.axis or "horizontal"
        if self.action in ("move", "duplicate"):
            data.update(dx=self.dx or 0.0, dy=self.dy or 0.0, position=self.position, anchor=self.anchor_id,
                        side=self.side)
            if self.action == "move" and not (self.dx or self.dy or self.position or self.anchor_id is not None):
                raise ValueError("step 'move' needs a position, an anchor_id with a side, or dx/dy")
        return ACTION_ADAPTER.validate_python(data)


def _decision_order(schema: dict, _cls: type) -> None:
    # required in the JSON schema (so a grammar emits reason, detect, steps in this order) yet defaulted in Python
    schema["required"] = ["reason", "detect", "steps"]


class EditDecision(_Model):
    """The LLM's one decision per round: the plan's steps, or first what the detector should look for.

    `detect` names things the scene lacks (the graph detects them and asks again); `describe` asks for one
    object's look. With neither and no steps the image has nothing the instruction means."""

    model_config = ConfigDict(json_schema_extra=_decision_order)

    reason: str = Field(max_length=160, description="one sentence: which object(s) the instruction means and why")
    detect: list[str] = Field(default_factory=list, max_length=3,
                              description="plain names of things to look for first, when the list lacks them; else []")
    steps: list[PlannedStep] = Field(default_factory=list, max_length=6,
                                     description="the actions; empty while detect or describe asks for more")
    describe: int | None = Field(None, description="an object id whose look decides the choice (steps empty)")

    def to_plan(self) -> EditPlan:
        return EditPlan(rationale=self.reason, actions=[s.to_action() for s in self.steps])


class SearchDecision(_Model):
    """After an empty plan: the kinds of object the instruction may mean, for one more detection round."""

    thought: str = Field(max_length=120, description="one short sentence: what the instruction refers to")
    labels: list[str] = Field(min_length=1, max_length=3,
                              description="1-3 simple nouns for the thing(s) to look for, most likely first")
