"""Public Python API: `edit(image, instruction, ...)` and `perceive(image, ...)`."""

from __future__ import annotations

import resource
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .actions import EditPlan
from .config import AgentConfig
from .errors import EditError, InstructionError
from .imaging import check_output_path, load_image
from .results import EditResult
from .ssr import SceneGraph

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

Progress = Callable[[str, str], None]  # (node, message)
Approver = Callable[[dict], Any]  # plan payload -> True / False / edited plan / {"object_id": N} / {"point": [x, y]}


def _workspace(image: str | Path | np.ndarray, config: AgentConfig, scene: SceneGraph | None = None):
    """The workspace of an image; with `scene`, its SSR is that one (no perception)."""
    from cielr_agent.tools import Workspace

    if isinstance(image, np.ndarray):
        ws = Workspace(image, config)
    else:
        ws = Workspace(load_image(image), config, source=str(image))
    if scene is not None:
        if (scene.width, scene.height) != (ws.image.shape[1], ws.image.shape[0]):
            raise EditError(f"the scene is of a {scene.width}x{scene.height} image, not of this "
                            f"{ws.image.shape[1]}x{ws.image.shape[0]} one")
        ws.scene = scene
    return ws


def _preload_in_background(model: Any) -> None:
    """Start loading a local model's weights (ChatLlamaCpp.preload) while the image is perceived: the first LLM
    call then finds them loaded."""
    if callable(getattr(model, "preload", None)):
        from .llm.llama_weights import in_background

        in_background(model.preload)


# Third-party only: they import none of this package's modules, so importing them beside the perception (which
# imports this package's own) can never meet it halfway through an import.
_PLANNING_LIBRARIES = ("langchain_core.language_models", "langchain_core.messages", "langchain_core.tools",
                       "langgraph.graph", "langgraph.checkpoint.memory", "langgraph.types")


def _import_in_background(modules: tuple[str, ...]) -> threading.Thread:
    """Import `modules` in a daemon thread (an import error surfaces later, where the module is used)."""
    import importlib

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:
                pass

    thread = threading.Thread(target=run, name="cielr-imports", daemon=True)
    thread.start()
    return thread


def _perceive_first(ws, progress: Progress | None) -> float:
    """Perceive the workspace's image unless its SSR is known (the graph's perceive node then only reports it)."""
    if ws.scene.version != 0:
        return 0.0
    if progress is not None:
        progress("perceive", "detecting objects")
    t0 = time.perf_counter()
    ws.perceive()
    return time.perf_counter() - t0


def perceive(image: str | Path | np.ndarray, *, profile: str | Path | None = None, **overrides: Any) -> SceneGraph:
    """The initial SSR of an image (detection, attributes, relations) without any LLM."""
    config = AgentConfig.load(profile, **overrides)
    return _workspace(image, config).perceive()


def edit(
    image: str | Path | np.ndarray,
    instruction: str,
    output: str | Path | None = None,
    *,
    llm: str | BaseChatModel | None = None,
    profile: str | Path | None = None,
    dry_run: bool = False,
    approver: Approver | None = None,
    progress: Progress | None = None,
    scene: SceneGraph | None = None,
    notes: list[str] | None = None,
    **overrides: Any,
) -> EditResult:
    """Carry out a (possibly implicit) instruction on an image.

    `llm` is a provider spec ("embedded", "openai:gpt-4o-mini", "ollama:qwen2.5", "llamacpp:/path.gguf", ...) or
    any LangChain chat model. Other keyword arguments override `AgentConfig` fields. The output (if given) is
    written atomically; the input file is never written. With `confirm=True` the plan is passed to `approver`
    (default: approve) before anything is executed. `scene` is the image's SSR when it is already known (a
    session's previous edit: its object ids stay), `notes` are lines the planner reads with the instruction
    (what earlier edits of a session did).
    """
    if not isinstance(instruction, str) or not instruction.strip():
        raise InstructionError("the instruction is empty; say what to change, e.g. \"remove the bicycle\"")
    started = time.perf_counter()
    config = AgentConfig.load(profile, **({"llm": llm} if isinstance(llm, str) else {}), **overrides)
    if output is not None:
        check_output_path(output, None if isinstance(image, np.ndarray) else image)
    if config.planner == "tools" and (dry_run or config.confirm):
        raise EditError("the tools planner edits as it goes: dry runs and approval need planner='structured'")
    # Perception needs neither LangChain, LangGraph nor the LLM: the weights start loading and those libraries are
    # imported in worker threads while the image is perceived (a fresh `cielr edit` saves ~2 s).
    if llm is None or isinstance(llm, str):
        from .llm.llama_weights import preload

        preload(config.llm, config.llm_options)
    else:
        _preload_in_background(llm)
    warming = _import_in_background(_PLANNING_LIBRARIES)
    t0 = time.perf_counter()
    ws = _workspace(image, config, scene)
    load_image_s = time.perf_counter() - t0
    perceive_s = _perceive_first(ws, progress)
    warming.join()
    from langgraph.checkpoint.memory import InMemorySaver

    from cielr_agent.graphs import EditContext, build_edit_graph
    from cielr_agent.graphs.state import checkpoint_serializer

    from .llm import make_chat_model

    model = make_chat_model(config.llm, **config.llm_options) if llm is None or isinstance(llm, str) else llm
    if config.planner == "tools":
        from cielr_agent.graphs.tool_agent import run_tool_agent

        state = run_tool_agent(ws, model, instruction.strip(), prompt_set=config.prompt_set,
                               max_steps=2 * config.max_iterations + 6, progress=progress)
        state["timings"]["perceive"] += perceive_s
        return _result(instruction, ws, state, None, output, load_image_s, started)
    graph = build_edit_graph(checkpointer=InMemorySaver(serde=checkpoint_serializer()) if config.confirm else None)
    run_config = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": 4 * config.max_iterations + 20}
    context = EditContext(workspace=ws, model=model, execute=not dry_run)
    payload: Any = {"instruction": instruction.strip(), "timings": {"perceive": perceive_s},
                    **({"observations": list(notes)} if notes else {})}
    state, planned_scene = _run(graph, payload, run_config, context, config.confirm, approver, progress)
    return _result(instruction, ws, state, planned_scene, output, load_image_s, started)


def execute_plan(
    image: str | Path | np.ndarray,
    plan: EditPlan | dict,
    scene: SceneGraph,
    output: str | Path | None = None,
    *,
    instruction: str = "",
    profile: str | Path | None = None,
    progress: Progress | None = None,
    **overrides: Any,
) -> EditResult:
    """Execute a given plan on an image whose SSR is `scene` (the plan's object ids refer to it), without an LLM:
    the plan a person approved or corrected after a dry run. The same execute and verify steps as `edit`."""
    from langgraph.checkpoint.memory import InMemorySaver

    from cielr_agent.graphs import EditContext, build_edit_graph
    from cielr_agent.graphs.state import checkpoint_serializer

    started = time.perf_counter()
    if output is not None:
        check_output_path(output, None if isinstance(image, np.ndarray) else image)
    config = AgentConfig.load(profile, **{**overrides, "confirm": False})
    plan = plan if isinstance(plan, EditPlan) else EditPlan.model_validate(plan)
    missing = [t for t in plan.targets() if not scene.has(t)]
    if missing:
        raise EditError(f"the plan names objects {missing} that the scene does not have "
                        f"(it has {', '.join(f'#{o.id} {o.label}' for o in scene.objects) or 'none'})")
    t0 = time.perf_counter()
    ws = _workspace(image, config, scene)
    load_image_s = time.perf_counter() - t0
    graph = build_edit_graph(checkpointer=InMemorySaver(serde=checkpoint_serializer()))
    run_config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    context = EditContext(workspace=ws, model=None, execute=True)  # type: ignore[arg-type] - no LLM step runs
    # the run starts after the decision: the approval step (off here), then execute and verify
    graph.update_state(run_config, {"instruction": instruction, "scene": scene, "initial_scene": scene, "plan": plan,
                                    "status": "planned"}, as_node="decide")
    state, planned_scene = _run(graph, None, run_config, context, False, None, progress)
    return _result(instruction, ws, state, planned_scene or scene, output, load_image_s, started)


def _run(graph, payload: Any, run_config: dict, context, confirm: bool, approver: Approver | None,
         progress: Progress | None) -> tuple[dict, SceneGraph | None]:
    """Stream the edit graph to its end (answering approval interrupts); the last state and the planned scene."""
    from langgraph.types import Command

    state: dict = {}
    planned_scene = None
    while True:
        for mode, chunk in graph.stream(payload, run_config, context=context, stream_mode=["custom", "values"]):
            if mode == "values":
                state = chunk
                if chunk.get("status") == "planned":
                    planned_scene = chunk["scene"]
            elif progress is not None:
                progress(chunk["node"], chunk["message"])
        if not confirm:
            return state, planned_scene
        snapshot = graph.get_state(run_config)
        if not snapshot.interrupts:
            return state, planned_scene
        # in-process approvers also get the planned SSR itself (objects with masks: an overlay, a click to retarget)
        value = {**snapshot.interrupts[0].value, "scene_graph": snapshot.values.get("scene")}
        answer = approver(value) if approver else True
        payload = Command(resume=answer)


def _result(instruction: str, ws, state: dict, planned_scene: SceneGraph | None, output: str | Path | None,
            load_image_s: float, started: float) -> EditResult:
    """The EditResult of a finished run; the output (if any) written atomically."""
    executed = state.get("status") in ("executed", "verified")
    written = None
    if executed and output is not None:
        written = str(ws.save(output))
    timings = {"load_image": load_image_s, **state.get("timings", {}), "total": time.perf_counter() - started}
    result = EditResult(
        instruction=instruction.strip(),
        image=ws.source,
        output=written,
        plan=state.get("plan"),
        scenes=[s for s in (state.get("initial_scene"), planned_scene, state.get("scene")) if s is not None],
        llm_calls=state.get("llm_calls", []),
        tool_calls=state.get("tool_calls", []),
        executed=state.get("executed", []),
        verification=state.get("verification", []),
        timings=timings,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        status=state.get("status", "unknown"),
    )
    result.image_array = ws.image if executed else None
    return result
