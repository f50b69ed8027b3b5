"""The native tool-calling planner (`planner = "tools"`): for chat models that call tools well (hosted GPT/Claude
class models, larger local models behind an OpenAI-compatible server), LangChain's `create_agent` loop over the
workspace's typed perception and editing tools. The model looks, asks for detail, edits and stops by itself.

The default planner is the structured one (`edit_graph`): one schema-constrained decision per round, portable to
small local models that never emit tool calls. Both leave the same record: the plan (the editing calls as typed
actions), the executed actions with the exact pixels each changed, the tool and LLM calls, the scene before and
after.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import numpy as np
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolMessage

from cielr_agent.actions import ACTION_ADAPTER, EditPlan
from cielr_agent.prompts import load_knowledge, render
from cielr_agent.results import ExecutedAction, LLMCall, ToolCall
from cielr_agent.ssr import RLEMask
from cielr_agent.tools import Workspace, editing_tools, perception_tools

from .nodes import ACTION_TOOLS

_ACTION_OF_TOOL = {tool: action for action, tool in ACTION_TOOLS.items()}


class _Recorder:
    """Wraps each tool: times it and records exactly which pixels an editing call changed."""

    def __init__(self, ws: Workspace, progress: Callable[[str, str], None] | None):
        self.ws, self.progress = ws, progress
        self.executed: list[ExecutedAction] = []
        self.calls: list[ToolCall] = []

    def wrap(self, tool):
        original = tool.func

        def run(**args: Any) -> str:
            if self.progress is not None:
                self.progress("agent", f"{tool.name} {args}")
            before = self.ws.image.copy() if tool.name in _ACTION_OF_TOOL else None
            t0 = time.perf_counter()
            observation = original(**args)
            seconds = round(time.perf_counter() - t0, 3)
            self.calls.append(ToolCall(node="agent", tool=tool.name, args=args, observation=str(observation),
                                       seconds=seconds))
            if before is not None:
                region = np.any(self.ws.image != before, axis=2)
                self.executed.append(ExecutedAction(action=_action(tool.name, args), tool=tool.name, seconds=seconds,
                                                    changed_pixels=int(region.sum()),
                                                    region=RLEMask.from_array(region), note=str(observation)))
            return observation

        return tool.model_copy(update={"func": run})


def _action(tool: str, args: dict) -> dict:
    """The typed action an editing call amounts to (object_id -> target, anchor_id -> anchor)."""
    action = {"type": _ACTION_OF_TOOL[tool], **args}
    if "object_id" in action:
        action["target"] = action.pop("object_id")
    if "anchor_id" in action:
        action["anchor"] = action.pop("anchor_id")
    return action


def run_tool_agent(ws: Workspace, model: BaseChatModel, instruction: str, *, prompt_set: str, max_steps: int,
                   progress: Callable[[str, str], None] | None = None) -> dict:
    """Let `model` edit `ws` with the tools; returns an edit-graph-like state (plan, executed, calls, scenes)."""
    from langchain.agents import create_agent

    t0 = time.perf_counter()
    if ws.scene.version == 0:
        if progress is not None:
            progress("perceive", "detecting objects")
        ws.perceive()
    initial = ws.scene
    perceive_s = time.perf_counter() - t0
    recorder = _Recorder(ws, progress)
    tools = [recorder.wrap(t) for t in (*perception_tools(ws, handle_errors=True), *editing_tools(ws, handle_errors=True))]
    agent = create_agent(model, tools, system_prompt=render("tools_system", prompt_set))
    user = render("tools_user", prompt_set, scene=initial.render(load_knowledge(prompt_set)), instruction=instruction)
    t1 = time.perf_counter()
    state = agent.invoke({"messages": [("user", user)]}, {"recursion_limit": 2 * max_steps + 1})
    llm_s = time.perf_counter() - t1 - sum(c.seconds for c in recorder.calls)
    messages = state["messages"]
    replies = [m for m in messages if isinstance(m, AIMessage)]
    final = replies[-1].content if replies and isinstance(replies[-1].content, str) else ""
    failed = [m.content for m in messages if isinstance(m, ToolMessage) and getattr(m, "status", "") == "error"]
    actions = []
    for done in recorder.executed:  # the plan lists the edits as typed actions where they are valid ones
        try:
            actions.append(ACTION_ADAPTER.validate_python(done.action))
        except ValueError:
            continue
    plan = EditPlan(rationale=final or "the agent made no comment", actions=actions)
    llm_calls = [LLMCall(node="agent", seconds=0.0, input_tokens=(m.usage_metadata or {}).get("input_tokens", 0),
                         output_tokens=(m.usage_metadata or {}).get("output_tokens", 0),
                         output=json.dumps([c["name"] for c in m.tool_calls]) if m.tool_calls else str(m.content))
                 for m in replies]
    if llm_calls:
        llm_calls[0].seconds = round(llm_s, 3)  # the loop's LLM time, not split per call
    return {"plan": plan, "status": "executed" if recorder.executed else "planned", "executed": recorder.executed,
            "tool_calls": recorder.calls, "llm_calls": llm_calls, "initial_scene": initial, "scene": ws.scene,
            "verification": [f"tool error: {text}" for text in failed],
            "timings": {"perceive": perceive_s, "llm": llm_s,
                        "execute": sum(e.seconds for e in recorder.executed)}}
