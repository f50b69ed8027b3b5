"""What an edit returns: the output, the plan, the chain-of-SSR, and a trace of every step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr

from .actions import EditPlan
from .ssr import RLEMask, SceneGraph


class LLMCall(BaseModel):
    """One LLM decision: which node asked, how long it took, and its token counts."""

    node: str
    seconds: float
    input_tokens: int = 0
    cached_tokens: int = 0  # of input_tokens, those whose KV state was reused (not evaluated again)
    output_tokens: int = 0
    attempts: int = 1
    output: str = ""


class ToolCall(BaseModel):
    """One tool invocation made by the graph, with what it returned."""

    node: str
    tool: str
    args: dict
    observation: str
    seconds: float


class ExecutedAction(BaseModel):
    """One executed action; `region` is exactly the set of pixels it changed."""

    action: dict
    tool: str
    seconds: float
    changed_pixels: int
    region: RLEMask | None = None
    note: str = ""


class EditResult(BaseModel):
    """Everything an edit produced. `output` is the written file (None for dry runs)."""

    instruction: str
    image: str
    status: str = "unknown"  # planned (dry run) | rejected | verified | executed
    output: str | None = None
    plan: EditPlan | None = None
    scenes: list[SceneGraph] = Field(default_factory=list)  # initial, as planned, final; each holds its history
    llm_calls: list[LLMCall] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    executed: list[ExecutedAction] = Field(default_factory=list)
    verification: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    peak_rss_mb: float | None = None
    _image_array: np.ndarray | None = PrivateAttr(default=None)

    @property
    def image_array(self) -> np.ndarray | None:
        """The edited pixels (H×W×3 uint8), when the plan was executed."""
        return self._image_array

    @image_array.setter
    def image_array(self, value: np.ndarray | None) -> None:
        self._image_array = value

    @property
    def scene(self) -> SceneGraph | None:
        return self.scenes[-1] if self.scenes else None

    def summary_json(self) -> dict:
        """The CLI's `--json` object."""
        actions = []
        for action in self.plan.actions if self.plan else []:
            item = action.model_dump(exclude={"target"})
            target_id = getattr(action, "target", None)
            # the object as the planner saw it: found during reasoning, it is not in the initial scene;
            # removed by the edit, it is not in the final one
            obj = next((s.get(target_id) for s in self.scenes if target_id is not None and s.has(target_id)), None)
            if obj is not None:
                item["target"] = {"id": obj.id, "label": obj.label, "box": [round(v, 1) for v in obj.box]}
            actions.append(item)
        return {
            "instruction": self.instruction,
            "status": self.status,
            "plan": {"rationale": self.plan.rationale if self.plan else None, "actions": actions},
            "output": self.output,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def write_trace(self, path: str | Path) -> None:
        from .imaging import write_text_atomic

        write_text_atomic(Path(path), self.model_dump_json(indent=2))
