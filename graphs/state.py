"""Typed state and runtime context of the edit graph."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Literal, TypedDict

from langchain_core.language_models import BaseChatModel

from pydantic import BaseModel

from cielr_agent.actions import EditPlan
from cielr_agent.results import ExecutedAction, LLMCall, ToolCall
from cielr_agent.ssr import SceneGraph
from cielr_agent.tools import Workspace


def add_timings(left: dict[str, float] | None, right: dict[str, float] | None) -> dict[str, float]:
    """Reducer: sum timings per key."""
    out = dict(left or {})
    for k, v in (right or {}).items():
        out[k] = out.get(k, 0.0) + v
    return out


class PerceptionRequest(BaseModel):
    """A perception tool the LLM asked for before planning."""

    tool: Literal["detect_objects", "describe_object"]
    labels: list[str] = []
    object_id: int | None = None


class EditState(TypedDict, total=False):
    """Checkpointed state: the instruction, the SSR chain, the reasoning trace, the plan and what ran."""

    instruction: str
    scene: SceneGraph
    initial_scene: SceneGraph
    iterations: int
    pending: PerceptionRequest | None
    searched: bool  # the one extra detection round after an empty plan has run
    observations: Annotated[list[str], operator.add]
    plan: EditPlan | None
    status: str  # gathering | gathered | searching | searched | planned | rejected | executed | verified
    llm_calls: Annotated[list[LLMCall], operator.add]
    tool_calls: Annotated[list[ToolCall], operator.add]
    executed: Annotated[list[ExecutedAction], operator.add]
    verification: Annotated[list[str], operator.add]
    timings: Annotated[dict[str, float], add_timings]


@dataclass
class EditContext:
    """Runtime context (not checkpointed): the workspace with its image and backends, and the chat model.

    `execute` stops the graph after planning when False (dry runs).
    """

    workspace: Workspace
    model: BaseChatModel
    execute: bool = True


def checkpoint_serializer(*extra: type):
    """A checkpoint serializer that loads this package's state types (and `extra`) by name: no "unregistered type"
    warning now, and no break when LangGraph blocks unregistered types."""
    import inspect
    from enum import Enum

    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from cielr_agent import actions, results, ssr

    modules = (actions, results, ssr, inspect.getmodule(PerceptionRequest))
    types = [obj for module in modules for _, obj in inspect.getmembers(module, inspect.isclass)
             if obj.__module__ == module.__name__ and issubclass(obj, (BaseModel, Enum))]
    return JsonPlusSerializer(allowed_msgpack_modules=[*types, *extra])
