"""The nodes of the edit graph. Each is small: read the state, do one thing, return an update."""

from __future__ import annotations

import json
import time

import numpy as np

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import ToolException
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from cielr_agent.actions import EditDecision, EditPlan, SearchDecision
from cielr_agent.errors import EditError, TargetNotFoundError
from cielr_agent.llm import LLMOutputError, structured_call
from cielr_agent.masks import box_iou
from cielr_agent.prompts import load_knowledge, render
from cielr_agent.results import ExecutedAction, LLMCall, ToolCall
from cielr_agent.ssr import RLEMask
from cielr_agent.tools import editing_tools, perception_tools
from cielr_agent.tools.protocols import Detection

from .state import EditContext, EditState, PerceptionRequest

PRESENCE_LEFT = 0.3  # classifier probability of a removed (region-found) object's label that means "still there"
ACTION_TOOLS = {
    "remove": "remove_object",
    "recolor": "recolor_object",
    "replace": "replace_object",
    "add": "add_object",
    "move": "move_object",
    "resize": "resize_object",
    "flip": "flip_object",
    "duplicate": "duplicate_object",
}


def _progress(runtime: Runtime[EditContext], node: str, message: str) -> None:
    if runtime.stream_writer is not None:
        runtime.stream_writer({"node": node, "message": message})


def _scene_text(state: EditState, ctx: EditContext, knowledge: bool = True) -> str:
    ps = ctx.workspace.config.prompt_set
    return state["scene"].render(load_knowledge(ps) if knowledge else None)


def _llm_record(node: str, reply) -> LLMCall:
    return LLMCall(node=node, seconds=round(reply.seconds, 3), input_tokens=reply.input_tokens,
                   cached_tokens=reply.cached_tokens, output_tokens=reply.output_tokens, attempts=reply.attempts,
                   output=reply.value.model_dump_json())


def perceive(state: EditState, runtime: Runtime[EditContext]) -> dict:
    """Build the initial SSR (detection + attributes + relations) unless the workspace already has one."""
    ws = runtime.context.workspace
    t0 = time.perf_counter()
    if ws.scene.version == 0:
        _progress(runtime, "perceive", "detecting objects")
        ws.perceive()
    labels = ", ".join(f"#{o.id} {o.label}" for o in ws.scene.objects) or "nothing"
    _progress(runtime, "perceive", f"scene: {labels}")
    return {"scene": ws.scene, "initial_scene": ws.scene, "iterations": 0,
            "timings": {"perceive": time.perf_counter() - t0}}


def decide(state: EditState, runtime: Runtime[EditContext]) -> dict:
    """One LLM call: the plan, or (bounded by `max_iterations`) one perception request first.

    The system prompt is the same for every call, so its evaluated prefix is reused; the scene, the
    instruction and the notes of earlier rounds come last. Invalid plans (unknown ids, bad colours,
    implausible placements) go back to the LLM once with the reason."""
    ctx = runtime.context
    ps = ctx.workspace.config.prompt_set
    observations = state.get("observations", [])
    can_ask = state.get("iterations", 0) < ctx.workspace.config.max_iterations
    notes = "".join(f"Note: {o}\n" for o in observations)
    if not can_ask:
        notes += "Note: no more detection is possible; answer with steps for the listed objects.\n"
    messages = [
        SystemMessage(render("decide_system", ps)),
        HumanMessage(render("decide_user", ps, scene=_scene_text(state, ctx), instruction=state["instruction"],
                            notes=notes)),
    ]
    asked = {_request_key_text(o) for o in observations}

    def validate(decision: EditDecision) -> None:
        if decision.describe is not None and not state["scene"].has(decision.describe):
            raise ValueError(f"describe {decision.describe} does not exist; valid objects: {_ids(state['scene'])}")
        request = _request(decision, ctx.workspace) if can_ask else None
        if request is None or _request_key(request) in asked:
            validate_plan(decision, state)  # this decision is final: its steps must be executable

    _progress(runtime, "decide", "LLM: deciding the edit")
    try:
        reply = structured_call(ctx.model, EditDecision, messages, retries=1, validate=validate)
        decision: EditDecision = reply.value
        call = _llm_record("decide", reply)
    except LLMOutputError as exc:  # still invalid after the repair round: keep the steps that can be executed
        decision = _executable_part(exc, state)
        n_in, n_cached, n_out = exc.usage
        call = LLMCall(node="decide", seconds=round(exc.seconds, 3), input_tokens=n_in, cached_tokens=n_cached,
                       output_tokens=n_out, attempts=exc.attempts, output=decision.model_dump_json())
    record = {"llm_calls": [call], "timings": {"llm": call.seconds}}
    request = _request(decision, ctx.workspace) if can_ask else None
    if request is not None and _request_key(request) not in asked:
        return {**record, "pending": request, "iterations": state.get("iterations", 0) + 1, "status": "gathering"}
    edit_plan = validate_plan(decision, state)
    if not edit_plan.actions:
        if not state.get("searched"):
            _progress(runtime, "decide", f"no target yet: {edit_plan.rationale}")
            return {**record, "pending": None, "plan": edit_plan, "status": "searching"}
        raise _not_found(edit_plan.rationale, state["scene"])
    _progress(runtime, "decide", f"plan: {edit_plan.rationale}")
    return {**record, "pending": None, "plan": edit_plan, "status": "planned"}


def _executable_part(exc: LLMOutputError, state: EditState) -> EditDecision:
    """The last reply's executable steps, in order, when it parses and some are valid (a three-step instruction
    whose "change the background" step names no object still gets its other two); the rationale says what was
    left out and why. Re-raises `exc` when nothing can be executed."""
    try:
        decision = EditDecision.model_validate_json(exc.raw)
    except ValueError:
        raise exc from None
    kept, dropped = [], []
    for i, step in enumerate(decision.steps, start=1):
        try:
            validate_plan(decision.model_copy(update={"steps": [*kept, step]}), state)
            kept.append(step)
        except (ValueError, KeyError) as err:
            dropped.append(f"step {i} ({step.action}): {err}")
    if not kept:
        raise exc
    return decision.model_copy(update={"steps": kept, "detect": [], "describe": None,
                                       "reason": f"{decision.reason} Left out: {'; '.join(dropped)}"})


def _ids(scene) -> str:
    return ", ".join(f"#{o.id} {o.label}" for o in scene.objects) or "none"


def _request(decision: EditDecision, ws) -> PerceptionRequest | None:
    """The perception tool a decision asks for: detect the labels the scene lacks, else describe an object."""
    if decision.detect:
        present = {label for o in ws.scene.objects for label in (o.label, *o.alternatives)}
        wanted = [t for t in decision.detect if t.strip() and ws.backends.detector.resolve_label(t) not in present]
        if wanted:
            return PerceptionRequest(tool="detect_objects", labels=wanted)
    if decision.describe is not None and not decision.steps:
        return PerceptionRequest(tool="describe_object", object_id=decision.describe)
    return None


def _request_key(request: PerceptionRequest) -> str:
    args = {"labels": sorted(request.labels)} if request.tool == "detect_objects" else {"object_id": request.object_id}
    return f"{request.tool}({json.dumps(args, sort_keys=True)})"


def _request_key_text(observation: str) -> str:
    return observation.split(" -> ", 1)[0]


def route_after_decide(state: EditState) -> str:
    status = state.get("status")
    return "gather" if status == "gathering" else "search" if status == "searching" else "approve"


def gather(state: EditState, runtime: Runtime[EditContext]) -> dict:
    """Run the perception tool the LLM asked for; its observation and the grown SSR feed the next decision."""
    ws = runtime.context.workspace
    request: PerceptionRequest = state["pending"]
    tools = {t.name: t for t in perception_tools(ws, handle_errors=False)}
    args = {"labels": request.labels} if request.tool == "detect_objects" else {"object_id": request.object_id}
    _progress(runtime, "gather", f"{request.tool} {args}")
    t0 = time.perf_counter()
    try:
        observation = tools[request.tool].invoke(args)
    except ToolException as exc:
        observation = f"error: {exc}"
    seconds = time.perf_counter() - t0
    return {"scene": ws.scene, "pending": None, "status": "gathered",
            "observations": [f"{_request_key(request)} -> {observation}"],
            "tool_calls": [ToolCall(node="gather", tool=request.tool, args=args, observation=observation,
                                    seconds=round(seconds, 3))],
            "timings": {"perception_tools": seconds}}


def validate_plan(decision: EditDecision, state: EditState) -> EditPlan:
    """Typed plan from the LLM's decision; ValueError (fed back to the LLM) when it is not executable or a
    placement makes no physical sense."""
    from cielr_agent.tools.embedded.recolor import parse_color
    from cielr_agent.tools.placement import check_plan_placements

    plan = decision.to_plan()
    scene = state["scene"]
    for action in plan.actions:
        for name, oid in (("object_id", getattr(action, "target", None)), ("anchor_id", getattr(action, "anchor", None))):
            if oid is not None and not scene.has(oid):
                raise ValueError(f"{name} {oid} does not exist; valid objects: {_ids(scene)}")
        if action.type == "recolor":
            parse_color(action.color)
    check_plan_placements(plan, scene, state["instruction"])
    return plan


def _not_found(rationale: str, scene, searched: str = "") -> TargetNotFoundError:
    return TargetNotFoundError(f"nothing to edit: {rationale}{searched} (objects in the image: {_ids(scene)})")


def search(state: EditState, runtime: Runtime[EditContext]) -> dict:
    """After an empty plan, once: ask the LLM for plain names of what the instruction means and detect them.

    Small LLMs often give up on an indirect description ("the neckwear") instead of asking the detector, so the
    planner gets one more look with whatever this round finds; when nothing is found the edit stops here."""
    ctx = runtime.context
    ws, ps = ctx.workspace, ctx.workspace.config.prompt_set
    rationale = state["plan"].rationale or "no listed object fits"
    known = getattr(ws.backends.detector, "closed_vocabulary", None)
    hint = getattr(ws.backends.detector, "vocabulary_hint", None)
    vocabulary = (f"The detector knows only these kinds of object: {', '.join(known)}.\n" if known
                  else f"{hint}\n" if hint else "")
    messages = [
        SystemMessage(render("search_system", ps)),
        HumanMessage(render("search_user", ps, scene=_scene_text(state, ctx, knowledge=False),
                            instruction=state["instruction"], vocabulary=vocabulary)),
    ]
    _progress(runtime, "search", "LLM: what should the detector look for?")
    reply = structured_call(ctx.model, SearchDecision, messages, retries=1)
    labels = [t.strip() for t in reply.value.labels if t.strip()]
    tool = next(t for t in perception_tools(ws, handle_errors=False) if t.name == "detect_objects")
    t0 = time.perf_counter()
    observation = tool.invoke({"labels": labels}) if labels else "no names given"
    seconds = time.perf_counter() - t0
    wanted = {ws.backends.detector.resolve_label(t) for t in labels} - {None}
    found = any(o.label in wanted for o in ws.scene.objects)
    _progress(runtime, "search", f"detect_objects {labels}: {observation}")
    if not found:
        raise _not_found(rationale, ws.scene, f"; also looked for {', '.join(labels) or 'nothing'}: {observation}")
    return {"scene": ws.scene, "searched": True, "status": "searched",
            "observations": [f"{reply.value.thought.strip()} The detector looked for {', '.join(labels)} -> "
                             f"{observation.replace(chr(10), '; ')}. The instruction means the object(s) found."],
            "llm_calls": [_llm_record("search", reply)],
            "tool_calls": [ToolCall(node="search", tool="detect_objects", args={"labels": labels},
                                    observation=observation, seconds=round(seconds, 3))],
            "timings": {"llm": reply.seconds, "perception_tools": seconds}}


def approve(state: EditState, runtime: Runtime[EditContext]) -> dict:
    """Human approval (LangGraph interrupt) when `confirm` is on. Resume with True/False, an edited plan, or a
    correction of a one-action plan's target: `{"object_id": N}` or `{"point": [x, y]}` (a click on the image)."""
    if not runtime.context.workspace.config.confirm:
        return {}
    answer = interrupt({"plan": state["plan"].model_dump(), "scene": state["scene"].render()})
    if isinstance(answer, dict) and "actions" in answer:
        return {"plan": EditPlan.model_validate(answer)}
    if isinstance(answer, dict) and ("object_id" in answer or "point" in answer):
        return _retarget(state["plan"], runtime.context.workspace, answer)
    if answer is True or (isinstance(answer, str) and answer.strip().lower() in ("y", "yes", "ok", "approve")):
        return {}
    return {"status": "rejected"}


def object_at_point(ws, x: float, y: float) -> int | None:
    """The id of the smallest object whose visible mask covers the point, or None."""
    hits = [(int(ws.mask(o.id).sum()), o.id) for o in ws.scene.objects if ws.mask(o.id)[int(y), int(x)]]
    return min(hits)[1] if hits else None


def _retarget(plan: EditPlan, ws, answer: dict) -> dict:
    """The plan with its one action aimed at another object: an id, or the object under a point (segmented from
    the point when no known object covers it, and added to the SSR)."""
    if len(plan.actions) != 1 or getattr(plan.actions[0], "target", None) is None:
        raise EditError("retargeting needs a plan of one action on an object; answer with an edited plan instead")
    action = plan.actions[0]
    if "object_id" in answer:
        target = int(answer["object_id"])
        if not ws.scene.has(target):
            raise EditError(f"there is no object #{target} in the scene")
    else:
        x, y = (float(v) for v in answer["point"])
        h, w = ws.image.shape[:2]
        if not (0 <= x < w and 0 <= y < h):
            raise EditError(f"point ({x:.0f}, {y:.0f}) is outside the {w}x{h} image")
        target = object_at_point(ws, x, y)
        if target is None:
            segmenter = ws.backends.segmenter
            if not hasattr(segmenter, "segment_points"):
                raise EditError(f"the segmenter '{ws.config.segmenter}' takes no point prompts; click a known object")
            label = str(answer.get("label") or ws.scene.get(action.target).label)
            target = ws.add_segmented(label, segmenter.segment_points(ws.image, [(x, y)], [1]),
                                      request=f"clicked at ({x:.0f}, {y:.0f})").id
    if target == action.target:
        return {}
    retargeted = action.model_copy(update={"target": target})
    return {"plan": plan.model_copy(update={"actions": [retargeted],
                                            "rationale": f"{plan.rationale} (target corrected to #{target})"}),
            "scene": ws.scene}


def route_after_approve(state: EditState, runtime: Runtime[EditContext]) -> str:
    if state.get("status") == "rejected" or not runtime.context.execute:
        return "end"
    return "execute"


def _run_edit_tool(ws, name: str, args: dict, action: dict) -> ExecutedAction:
    """Invoke one editing tool and record exactly which pixels it changed."""
    tool = next(t for t in editing_tools(ws, handle_errors=False) if t.name == name)
    t0 = time.perf_counter()
    before = ws.image.copy()
    try:
        note = tool.invoke(args)
    except ToolException as exc:
        raise EditError(f"cannot {action['type']}: {exc}") from None
    region = np.any(ws.image != before, axis=2)
    return ExecutedAction(action=action, tool=name, seconds=round(time.perf_counter() - t0, 3),
                          changed_pixels=int(region.sum()), region=RLEMask.from_array(region), note=note)


def tool_args(action) -> dict:
    """The editing tool's arguments for a typed action (target → object_id, anchor → anchor_id)."""
    args = action.model_dump(exclude={"type"}, exclude_none=True)
    if "target" in args:
        args["object_id"] = args.pop("target")
    if "anchor" in args:
        args["anchor_id"] = args.pop("anchor")
    if "box" in args:
        args["box"] = list(args["box"])
    return args


def execute(state: EditState, runtime: Runtime[EditContext]) -> dict:
    """Run each action's tool in order; every action updates the image and the SSR."""
    ws = runtime.context.workspace
    done: list[ExecutedAction] = []
    for action in state["plan"].actions:
        name = ACTION_TOOLS[action.type]
        _progress(runtime, "execute", f"{name} {tool_args(action)}")
        done.append(_run_edit_tool(ws, name, tool_args(action), action.model_dump()))
    return {"scene": ws.scene, "executed": done, "status": "executed",
            "timings": {"execute": sum(d.seconds for d in done)}}


def verify(state: EditState, runtime: Runtime[EditContext]) -> dict:
    """Check each removal on the result: the changed pixels cover the target's mask, and the target is no longer
    seen in its old box (re-detected, or for a label the detector finds only in regions, classified there).
    One corrective removal with a larger mask where it is still seen."""
    ws = runtime.context.workspace
    if not ws.config.verify:
        return {}
    t0 = time.perf_counter()
    initial = state["initial_scene"]
    changed = np.any(ws.image != ws.original, axis=2)
    notes: list[str] = []
    corrections: list[ExecutedAction] = []
    notes += _placement_notes(ws, state)
    for action in state["plan"].actions:
        if action.type != "remove" or not initial.has(action.target):
            continue
        gone = initial.get(action.target)
        if gone.mask is not None:
            target = gone.mask.to_array()
            covered = float((changed & target).sum()) / max(1, int(target.sum()))
            notes.append(f"#{gone.id} {gone.label}: {100 * covered:.0f}% of its mask changed")
        again = _still_seen(ws, gone)
        if not again:
            notes.append(f"#{gone.id} {gone.label}: gone")
            continue
        _progress(runtime, "verify", f"{gone.label} still detected; corrective removal")
        (added,) = ws.add_detections(again[:1], request=f"verify removal of #{gone.id}") or (None,)
        if added is None:
            notes.append(f"#{gone.id} {gone.label}: still detected, no corrective round possible")
            continue
        grow = 3 * ws.config.mask_dilation
        corrections.append(_run_edit_tool(ws, "remove_object", {"object_id": added.id, "grow": grow},
                                          {"type": "remove", "target": added.id, "corrective": True}))
        notes.append(f"#{gone.id} {gone.label}: corrective removal; "
                     f"{'gone' if not _still_seen(ws, gone) else 'still detected'}")
    return {"scene": ws.scene, "verification": notes, "executed": corrections, "status": "verified",
            "timings": {"verify": time.perf_counter() - t0}}


def _placement_notes(ws, state: EditState) -> list[str]:
    """For each moved or duplicated object: is it fully visible where it was put?"""
    from cielr_agent.tools.placement import moved_fully_visible

    initial, notes = state["initial_scene"], []
    for action in state["plan"].actions:
        if action.type not in ("move", "duplicate") or not initial.has(action.target):
            continue
        before = initial.get(action.target)
        source = f"duplicate of #{before.id}"
        placed = [o for o in ws.scene.objects if (o.id == before.id) == (action.type == "move")
                  and (action.type == "move" or o.source == source)]
        if placed and placed[-1].mask is not None and before.mask is not None:
            problem = moved_fully_visible(before, placed[-1].mask.to_array())
            notes.append(problem or f"#{before.id} {before.label}: fully visible where it was put")
    return notes


def _still_seen(ws, gone) -> list:
    """Detections of the removed object's label at its old place in the current image."""
    from cielr_agent.tools.embedded.coco_detection import COCO_LABELS

    detector = ws.backends.detector
    presence = getattr(detector, "presence", None)
    if presence is not None and gone.label not in COCO_LABELS:
        score = presence(ws.image, gone.label, gone.box)
        return [Detection(gone.label, round(score, 3), gone.box)] if score >= PRESENCE_LEFT else []
    return [d for d in detector.detect(ws.image, min_score=ws.config.min_score, labels=[gone.label])
            if box_iou(d.box, gone.box) > 0.5]
