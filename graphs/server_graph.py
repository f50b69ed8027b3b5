"""The graph the LangGraph Agent Server serves as `cielr_edit` (langgraph.json; `langgraph dev --no-browser`).

Input: `{"image": "<path>", "instruction": "<text>", "output": "<path>"}`, optionally `llm`, `profile` and
`confirm` (in the input or the run's `configurable`). Paths must lie inside the folders of `$CIELR_ALLOW`
(separated by the OS path separator; default: the server's working folder). Final state: `status` (verified / executed / rejected /
planned for a run without output) and `output`, plus the plan, the scene text and the result summary.

    plan ─▶ approve ─▶ execute
            (interrupt when confirm)

`plan` perceives and decides (a dry run of the edit graph) and keeps the planned SSR in a file; with `confirm`,
`approve` interrupts with the plan, the scene and an overlay image path, and `Command(resume=...)` takes True /
"approve", False / "reject", an edited plan (`{"rationale": ..., "actions": [...]}`) or `{"object_id": N}` to
retarget a one-action plan; `execute` runs the (approved) plan on that SSR. State holds paths and small JSON,
never pixels. The weights load once per server process (the chat model's and the backends' caches).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt


class ServerState(TypedDict, total=False):
    image: str
    instruction: str
    output: str | None
    llm: str | None
    profile: str | None
    confirm: bool | None
    status: str
    plan: dict | None
    scene: str  # the SSR as text, for people and clients
    scene_file: str  # the planned SSR (JSON, with masks) the plan's ids refer to
    overlay: str  # the input with the objects drawn and the plan's targets in red
    result: dict  # the edit's summary (plan with targets, timings)


def _setting(state: dict, config: RunnableConfig, key: str) -> Any:
    value = state.get(key)
    return value if value is not None else (config.get("configurable") or {}).get(key)


def _work_dir() -> Path:
    from cielr_agent.assets import cache_dir

    folder = cache_dir() / "server"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _progress(node: str):
    try:
        writer = get_stream_writer()
    except RuntimeError:  # not inside a run
        return None
    return lambda where, message: writer({"node": f"{node}/{where}", "message": message})


def _shown(node):
    """The Agent Server shows a failed run's message only for some exception types (ValueError, RuntimeError, ...):
    an OSError a client can act on (image not found, a path outside the allowed folders) becomes a ValueError
    with the same one-line message."""
    @functools.wraps(node)
    def wrapped(state, config):
        try:
            return node(state, config)
        except OSError as exc:
            from cielr_agent.errors import one_line

            raise ValueError(one_line(exc)) from exc
    return wrapped


def _allowed(path: str, must_exist: bool = False) -> Path:
    """A client's path, if inside the folders of $CIELR_ALLOW (default: the server's working folder)."""
    from cielr_agent.paths import PathPolicy

    return PathPolicy.from_env().check(path, must_exist=must_exist)


def _profile(state: dict, config: RunnableConfig) -> str | None:
    profile = _setting(state, config, "profile")
    return str(_allowed(profile)) if profile else None


def plan(state: ServerState, config: RunnableConfig) -> dict:
    """Perceive and decide (no pixels change); keep the planned SSR and an overlay for the approval."""
    from cielr_agent.api import edit
    from cielr_agent.imaging import load_image, save_image_atomic
    from cielr_agent.overlay import draw_overlay
    from cielr_agent.prompts import load_knowledge
    from cielr_agent.sessions import store_file

    from cielr_agent.imaging import check_output_path

    image = state.get("image")
    if not image:
        raise FileNotFoundError("no image: give the path of an image file on the server")
    image = str(_allowed(image, must_exist=True))
    if state.get("output"):
        check_output_path(_allowed(state["output"]), image)
    result = edit(image, state.get("instruction", ""), None, llm=_setting(state, config, "llm"),
                  profile=_profile(state, config), dry_run=True, progress=_progress("plan"))
    scene = result.scenes[-1]
    folder = _work_dir()
    scene_file = folder / store_file(folder, "scenes", scene.model_dump_json().encode(), ".json")
    overlay = folder / "overlays" / f"{hashlib.sha256(scene_file.name.encode() + image.encode()).hexdigest()[:24]}.png"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    save_image_atomic(draw_overlay(load_image(image), scene, result.plan.targets() if result.plan else []), overlay)
    return {"status": "planned", "plan": result.plan.model_dump() if result.plan else None,
            "scene": scene.render(load_knowledge()), "scene_file": str(scene_file), "overlay": str(overlay),
            "result": result.summary_json()}


def approve(state: ServerState, config: RunnableConfig) -> dict:
    """With confirm on: interrupt with the plan, the scene and the overlay; apply the person's answer."""
    if not _setting(state, config, "confirm"):
        return {}
    answer = interrupt({"plan": state["plan"], "scene": state["scene"], "overlay": state["overlay"]})
    if answer is True or (isinstance(answer, str) and answer.strip().lower() in ("y", "yes", "ok", "approve")):
        return {"status": "approved"}
    if isinstance(answer, dict) and "actions" in answer:
        from cielr_agent.actions import EditPlan

        return {"status": "approved", "plan": EditPlan.model_validate(answer).model_dump()}
    if isinstance(answer, dict) and "object_id" in answer:
        actions = state["plan"]["actions"]
        if len(actions) != 1:
            raise ValueError("retargeting by object_id needs a one-action plan; resume with an edited plan instead")
        retargeted = {**state["plan"], "actions": [{**actions[0], "target": int(answer["object_id"])}]}
        return {"status": "approved", "plan": retargeted}
    return {"status": "rejected"}


def route_after_approve(state: ServerState) -> str:
    return END if state.get("status") == "rejected" or not state.get("output") else "execute"


def execute(state: ServerState, config: RunnableConfig) -> dict:
    """Run the plan on the planned SSR and write the output atomically."""
    from cielr_agent.api import execute_plan
    from cielr_agent.ssr import SceneGraph

    scene = SceneGraph.model_validate_json(Path(state["scene_file"]).read_text(encoding="utf-8"))
    result = execute_plan(_allowed(state["image"], must_exist=True), state["plan"], scene, _allowed(state["output"]),
                          instruction=state.get("instruction", ""), profile=_profile(state, config),
                          progress=_progress("execute"))
    return {"status": result.status, "output": result.output, "result": result.summary_json()}


def build_server_graph():
    """Compile the served graph (the server supplies the checkpointer)."""
    g = StateGraph(ServerState)
    g.add_node("plan", _shown(plan))
    g.add_node("approve", approve)
    g.add_node("execute", _shown(execute))
    g.add_edge(START, "plan")
    g.add_edge("plan", "approve")
    g.add_conditional_edges("approve", route_after_approve, ["execute", END])
    g.add_edge("execute", END)
    return g.compile(name="cielr_edit")


class SessionServerState(TypedDict, total=False):
    """`cielr_session`: one request on a session (cielr_agent.sessions) per run."""

    session: str  # a name under $CIELR_SESSIONS or a folder path
    op: str  # new | edit | undo | redo | checkout | history
    image: str | None  # new: the original image
    instruction: str | None  # edit
    version: int | None  # checkout
    llm: str | None
    profile: str | None
    head: int
    head_image: str
    last: str
    versions: list[dict]
    edit: dict | None  # an edit's summary


def session_request(state: SessionServerState, config: RunnableConfig) -> dict:
    """Run the request on the session; the session's own SQLite thread keeps its history."""
    from cielr_agent.sessions import run_request

    from cielr_agent.sessions import resolve_folder, sessions_root

    options = {} if state.get("op") != "edit" else {"llm": _setting(state, config, "llm"),
                                                     "profile": _profile(state, config)}
    folder = resolve_folder(state["session"])
    if sessions_root().resolve() not in folder.resolve().parents:  # a folder path: inside the allowed folders
        _allowed(str(folder))
    image = str(_allowed(state["image"], must_exist=True)) if state.get("image") else None
    out = run_request(state["session"], state.get("op", "history"), image=image,
                      instruction=state.get("instruction"), version=state.get("version"),
                      progress=_progress("session"), **options)
    return {"head": out["head"], "head_image": out["image"], "last": out["last"], "versions": out["versions"],
            "edit": out["edit"]}


def build_session_server_graph():
    """Compile `cielr_session`: the same session code as the CLI, the API and the MCP tools."""
    g = StateGraph(SessionServerState)
    g.add_node("session_request", _shown(session_request))
    g.add_edge(START, "session_request")
    g.add_edge("session_request", END)
    return g.compile(name="cielr_session")


graph = build_server_graph()
session_graph = build_session_server_graph()
