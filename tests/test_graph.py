"""Graph logic with a scripted chat model and deterministic backends (no model weights needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph

import cielr_agent
from cielr_agent.actions import EditDecision, PlannedStep, SearchDecision
from cielr_agent.errors import EditError, InstructionError, TargetNotFoundError
from cielr_agent.graphs import EditContext, EditState, build_edit_graph
from cielr_agent.imaging import load_image
from cielr_agent.llm import LLMOutputError
from cielr_agent.tools import Workspace, register_backend
from cielr_agent.tools.protocols import Detection
from fakes import BoxSegmenter, FakeDetector, MeanFillRemover, dog_scene_detections
from cielr_agent.llm.scripted import ScriptedChatModel

DOG = Path(__file__).resolve().parents[1] / "examples" / "dog.jpg"


def remove(oid, reason="target"):
    return EditDecision(reason=reason, steps=[PlannedStep(action="remove", object_id=oid)])


def nothing(reason):
    return EditDecision(reason=reason)


@pytest.fixture
def detector():
    det = FakeDetector(dog_scene_detections(), hidden=[Detection("cup", 0.2, (600.0, 400.0, 660.0, 470.0))])
    register_backend("detector", "fake", lambda ctx: det)
    register_backend("segmenter", "fake", lambda ctx: BoxSegmenter())
    register_backend("remover", "fake", lambda ctx: MeanFillRemover())
    return det


FAKE = {"detector": "fake", "segmenter": "fake", "remover": "fake"}


def test_remove_changes_only_the_target_and_keeps_the_occluder(detector, tmp_path):
    model = ScriptedChatModel([remove(1, "the bicycle has no engine")])
    out = tmp_path / "out.png"
    before = DOG.read_bytes()
    result = cielr_agent.edit(DOG, "Remove the vehicle that has no engine", out, llm=model, **FAKE)

    assert DOG.read_bytes() == before  # input never written
    assert result.status == "verified" and result.output == str(out)
    edited, original = load_image(out), load_image(DOG)
    changed = np.any(edited != original, axis=2)
    # the edit region: bicycle mask (box inset 10 %) grown by 7 px, minus the dog (in front: lower bottom edge)
    bike = BoxSegmenter().segment_box(original, (120.0, 125.0, 575.0, 425.0))
    dog = BoxSegmenter().segment_box(original, (130.0, 220.0, 315.0, 545.0))
    from cielr_agent.masks import dilate

    allowed = dilate(bike, 7) & ~dog
    assert changed.any() and not (changed & ~allowed).any()
    assert not (changed & dog).any()
    # the SSR chain records every step
    final = result.scene
    assert [o.label for o in final.objects] == ["dog", "truck"]
    tools = [u.tool for u in final.history]
    assert tools[0] == "detect_objects" and "segment_object" in tools and "remove_object" in tools
    assert [c.node for c in result.llm_calls] == ["decide"]
    assert result.summary_json()["plan"]["actions"][0]["target"]["label"] == "bicycle"


def test_decision_loop_gathers_missing_objects(detector):
    model = ScriptedChatModel([
        EditDecision(reason="no cup listed", detect=["cups"]),
        remove(4, "the cup"),
    ])
    result = cielr_agent.edit(DOG, "remove the cup", llm=model, dry_run=True, **FAKE)
    assert result.status == "planned" and result.output is None
    scene = result.scene
    assert scene.get(4).label == "cup" and not result.scenes[0].has(4)
    assert result.summary_json()["plan"]["actions"][0]["target"]["label"] == "cup"  # found while reasoning
    assert result.tool_calls[0].tool == "detect_objects" and "cup" in result.tool_calls[0].observation
    second_prompt = model.calls[1][-1].content
    assert "Note: detect_objects" in second_prompt and "#4 cup" in second_prompt
    assert model.calls[0][0].content == model.calls[1][0].content  # one fixed system prompt: a reusable prefix
    assert detector.calls[-1] == (0.15, ("cup",))


def test_loop_is_bounded_by_max_iterations(detector):
    model = ScriptedChatModel([
        EditDecision(reason="colour?", describe=1),
        EditDecision(reason="the truck?", detect=["cup"]),
        EditDecision(reason="more?", detect=["person"], steps=[PlannedStep(action="remove", object_id=1)]),
    ])
    result = cielr_agent.edit(DOG, "remove the bicycle", llm=model, dry_run=True, max_iterations=2, **FAKE)
    assert [c.node for c in result.llm_calls] == ["decide"] * 3
    assert [t.tool for t in result.tool_calls] == ["describe_object", "detect_objects"]
    assert "no more detection is possible" in model.calls[2][-1].content
    assert result.plan.actions[0].target == 1 and model.remaining == 0


def test_repeated_request_stops_gathering(detector):
    ask = EditDecision(reason="colour?", describe=1)
    model = ScriptedChatModel([ask, ask, SearchDecision(thought="a bicycle", labels=["bicycle"]), remove(1)])
    result = cielr_agent.edit(DOG, "remove the bicycle", llm=model, dry_run=True, **FAKE)
    # the repeated request is not run again: that decision is final, and its empty plan leads to the search round
    assert len([t for t in result.tool_calls if t.node == "gather"]) == 1
    assert [c.node for c in result.llm_calls] == ["decide", "decide", "search", "decide"]


def test_invalid_plan_is_retried_once_with_the_error(detector):
    model = ScriptedChatModel([remove(99), remove(2)])
    result = cielr_agent.edit(DOG, "remove the dog", llm=model, dry_run=True, **FAKE)
    assert result.plan.actions[0].target == 2 and result.llm_calls[-1].attempts == 2
    retry_text = " ".join(str(m.content) for m in model.calls[1])
    assert "object_id 99 does not exist" in retry_text


def test_malformed_output_twice_raises_clear_error(detector):
    model = ScriptedChatModel(["not json at all", '{"steps": "nope"}'])
    with pytest.raises(LLMOutputError):
        cielr_agent.edit(DOG, "remove the dog", llm=model, dry_run=True, **FAKE)


def test_recolor_changes_hue_inside_only(detector, tmp_path):
    plan = EditDecision(reason="the truck", steps=[PlannedStep(action="recolor", object_id=3, color="blue")])
    model = ScriptedChatModel([plan])
    out = tmp_path / "blue.png"
    result = cielr_agent.edit(DOG, "make the truck blue", out, llm=model, **FAKE)
    edited, original = load_image(out), load_image(DOG)
    region = BoxSegmenter().segment_box(original, (465.0, 75.0, 690.0, 170.0))
    changed = np.any(edited != original, axis=2)
    assert changed[region].mean() > 0.5 and not (changed & ~region).any()
    pix = edited[region].astype(float)
    assert (pix[:, 2] > pix[:, 0]).mean() > 0.8  # blue dominates red inside the truck
    assert result.scene.get(3).attributes["color"] == "blue"


def test_generative_actions_fail_clearly_before_writing(detector, tmp_path):
    plan = EditDecision(reason="swap", steps=[PlannedStep(action="replace", object_id=2, prompt="a cat")])
    model = ScriptedChatModel([plan])
    out = tmp_path / "out.png"
    with pytest.raises(EditError, match="generative"):
        cielr_agent.edit(DOG, "replace the dog with a cat", out, llm=model, **FAKE)
    assert not out.exists()


def test_missing_target_is_reported_after_one_search(detector):
    model = ScriptedChatModel([nothing("there is no cat in the image"),
                               SearchDecision(thought="a cat", labels=["cat"])])
    with pytest.raises(TargetNotFoundError, match="no cat in the image; also looked for cat: 'cat' is not some"):
        cielr_agent.edit(DOG, "remove the cat", llm=model, dry_run=True, **FAKE)
    assert model.remaining == 0


def test_empty_plan_searches_once_with_plain_names_and_plans_again(detector):
    model = ScriptedChatModel([
        nothing("no listed object is for drinking coffee"),
        SearchDecision(thought="Coffee is drunk from a cup.", labels=["cup", "mug"]),
        remove(4, "the cup"),
    ])
    result = cielr_agent.edit(DOG, "remove what you drink coffee from", llm=model, dry_run=True, **FAKE)
    assert [c.node for c in result.llm_calls] == ["decide", "search", "decide"]
    assert result.plan.actions[0].target == 4 and result.scene.get(4).label == "cup"
    assert result.tool_calls[-1].tool == "detect_objects" and result.tool_calls[-1].args == {"labels": ["cup", "mug"]}
    search_prompt = model.calls[1][-1].content
    assert "Instruction: remove what you drink coffee from" in search_prompt
    assert "knows only" not in search_prompt  # the fake detector declares no closed vocabulary
    replan = model.calls[2][-1].content
    assert ("Note: Coffee is drunk from a cup. The detector looked for cup, mug -> 'mug' is not something this "
            "detector can find; in the scene: #4 cup; (1 newly added). The instruction means the object(s) found.") in replan


def test_search_happens_once_and_names_a_closed_vocabulary(detector):
    detector.closed_vocabulary = ("bicycle", "dog", "truck", "cup")
    model = ScriptedChatModel([
        nothing("nothing fits"),
        SearchDecision(thought="maybe the dog", labels=["dog"]),
        nothing("still nothing fits"),
    ])
    with pytest.raises(TargetNotFoundError, match="still nothing fits"):
        cielr_agent.edit(DOG, "remove the unicorn", llm=model, dry_run=True, **FAKE)
    assert "The detector knows only these kinds of object: bicycle, dog, truck, cup." in model.calls[1][-1].content
    assert model.remaining == 0


def test_empty_instruction_and_bad_image(detector, tmp_path):
    with pytest.raises(InstructionError):
        cielr_agent.edit(DOG, "   ", llm=ScriptedChatModel([]), **FAKE)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    from cielr_agent.imaging import ImageInputError

    with pytest.raises(ImageInputError, match="cannot read"):
        cielr_agent.edit(bad, "remove the dog", llm=ScriptedChatModel([]), **FAKE)
    with pytest.raises(EditError, match="never overwritten"):
        cielr_agent.edit(DOG, "remove the dog", DOG, llm=ScriptedChatModel([]), **FAKE)


@pytest.mark.parametrize("answer,status", [(False, "rejected"), (True, "verified")])
def test_confirm_interrupts_for_approval(detector, tmp_path, answer, status):
    model = ScriptedChatModel([remove(2)])
    seen = []
    out = tmp_path / "out.png"
    result = cielr_agent.edit(DOG, "remove the dog", out, llm=model, confirm=True,
                              approver=lambda payload: seen.append(payload) or answer, **FAKE)
    assert seen and seen[0]["plan"]["actions"][0]["target"] == 2 and "#2 dog" in seen[0]["scene"]
    assert result.status == status
    assert out.exists() == (status == "verified")


def test_verify_runs_one_corrective_round(detector, tmp_path):
    detector.sticky = True
    model = ScriptedChatModel([remove(3)])
    result = cielr_agent.edit(DOG, "remove the truck", tmp_path / "o.png", llm=model, **FAKE)
    # the fake detector still "sees" the truck after removal: one corrective removal, then reported
    assert result.verification == ["#3 truck: corrective removal; still detected"]
    assert [e.tool for e in result.executed] == ["remove_object", "remove_object"]
    assert result.executed[1].action["corrective"] and result.executed[1].changed_pixels > 0


def test_stream_checkpoint_and_subgraph(detector):
    ws = Workspace.open(DOG, cielr_agent.AgentConfig(**FAKE))
    model = ScriptedChatModel([remove(1)])
    graph = build_edit_graph(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t1"}}
    nodes = [next(iter(chunk)) for chunk in graph.stream({"instruction": "remove the bicycle"}, cfg,
                                                         context=EditContext(ws, model), stream_mode="updates")]
    assert nodes == ["perceive", "decide", "approve", "execute", "verify"]
    history = list(graph.get_state_history(cfg))
    assert len(history) >= 5 and history[0].values["status"] == "verified"

    parent = StateGraph(EditState, context_schema=EditContext)
    parent.add_node("edit", build_edit_graph())
    parent.add_edge(START, "edit")
    ws2 = Workspace.open(DOG, cielr_agent.AgentConfig(**FAKE))
    out = parent.compile().invoke({"instruction": "remove the dog"},
                                  context=EditContext(ws2, ScriptedChatModel([remove(2)])))
    assert out["status"] == "verified" and not out["scene"].has(2)


def test_tools_work_in_a_langchain_create_agent(detector):
    from langchain.agents import create_agent

    from cielr_agent.tools import make_tools

    ws = Workspace.open(DOG, cielr_agent.AgentConfig(**FAKE))
    ws.perceive()
    calls = [
        AIMessage(content="", tool_calls=[{"id": "1", "name": "describe_object", "args": {"object_id": 2}}]),
        AIMessage(content="", tool_calls=[{"id": "2", "name": "remove_object", "args": {"object_id": 1}}]),
        AIMessage(content="", tool_calls=[{"id": "3", "name": "add_object", "args": {"prompt": "a cat"}}]),
        AIMessage(content="done"),
    ]
    agent = create_agent(ScriptedChatModel(calls), make_tools(ws))
    messages = agent.invoke({"messages": [("user", "remove the bicycle")]})["messages"]
    tool_msgs = [m for m in messages if m.type == "tool"]
    assert "#2 dog" in tool_msgs[0].content
    assert "removed #1 bicycle" in tool_msgs[1].content
    assert "generative" in tool_msgs[2].content  # a clear error the agent can read
    assert ws.changed_pixels() > 0 and not ws.scene.has(1)


def test_detect_request_for_listed_labels_goes_straight_to_planning(detector):
    model = ScriptedChatModel([EditDecision(reason="check", detect=["bike", "dogs"],
                                            steps=[PlannedStep(action="remove", object_id=1)])])
    result = cielr_agent.edit(DOG, "remove the bike", llm=model, dry_run=True, **FAKE)
    assert result.tool_calls == [] and [c.node for c in result.llm_calls] == ["decide"]


def test_implausible_placement_goes_back_to_the_llm_once(detector, tmp_path):
    """"Move the dog to the right side of the porch": beside the truck across the street is refused with the
    reason, the corrected plan (a position) runs, and the dog stays whole, inside the frame, on its ground."""
    across = EditDecision(reason="the porch is by the truck", steps=[
        PlannedStep(action="move", object_id=2, anchor_id=3, side="right")])
    position = EditDecision(reason="the porch is not listed: a position", steps=[
        PlannedStep(action="move", object_id=2, position="right")])
    model = ScriptedChatModel([across, position])
    result = cielr_agent.edit(DOG, "Move the dog to the right side of the porch", tmp_path / "o.png", llm=model,
                              **FAKE)
    retry = str(model.calls[1][-1].content)
    assert "rejected" in retry and "#3 truck is far from #2 dog" in retry and "outside the image" in retry
    assert result.llm_calls[0].attempts == 2 and result.plan.actions[0].position == "right"
    before, after = result.scenes[0].get(2), result.scene.get(2)
    from cielr_agent.masks import box_of

    mask, old = after.mask.to_array(), BoxSegmenter().segment_box(load_image(DOG), before.box)
    (x0, _, x1, bottom), old_bottom = box_of(mask), box_of(old)[3]
    assert x1 <= 768 and x0 > 384 and abs(bottom - old_bottom) <= 2  # at the right, on the same ground
    assert mask.sum() >= 0.9 * old.sum()


def test_a_second_implausible_placement_fails_with_the_reason(detector):
    across = EditDecision(reason="beside the truck", steps=[PlannedStep(action="move", object_id=2, anchor_id=3)])
    with pytest.raises(LLMOutputError, match="far from #2 dog"):
        cielr_agent.edit(DOG, "Move the dog to the right side of the porch", llm=ScriptedChatModel([across, across]),
                         dry_run=True, **FAKE)


def test_after_the_repair_round_the_executable_steps_still_run(detector):
    """A three-step instruction whose one step names no object (or an unknown one) twice keeps the other steps;
    the rationale says what was left out."""
    mixed = EditDecision(reason="dog, background, truck", steps=[
        PlannedStep(action="remove", object_id=2), PlannedStep(action="replace", prompt="a beach"),
        PlannedStep(action="recolor", object_id=3, color="blue")])
    result = cielr_agent.edit(DOG, "remove the dog, make it a beach, paint the truck blue", dry_run=True,
                              llm=ScriptedChatModel([mixed, mixed]), **FAKE)
    assert [a.type for a in result.plan.actions] == ["remove", "recolor"]
    assert "Left out: step 2 (replace): step 'replace' needs object_id" in result.plan.rationale
    assert result.llm_calls[0].attempts == 2


def test_the_tools_planner_lets_the_model_call_the_typed_tools(detector, tmp_path):
    """planner="tools": a model that calls tools well drives the perception and editing tools itself; the result
    records the same plan, executed regions and calls as the structured planner."""
    calls = [
        AIMessage(content="", tool_calls=[{"id": "1", "name": "describe_object", "args": {"object_id": 1}}]),
        AIMessage(content="", tool_calls=[{"id": "2", "name": "remove_object", "args": {"object_id": 1}}]),
        AIMessage(content="Removed #1 bicycle: it is the vehicle without an engine."),
    ]
    model = ScriptedChatModel(calls)
    out = tmp_path / "out.png"
    result = cielr_agent.edit(DOG, "Remove the vehicle that has no engine", out, llm=model, planner="tools", **FAKE)
    assert result.status == "executed" and result.output == str(out)
    assert [a.type for a in result.plan.actions] == ["remove"] and result.plan.actions[0].target == 1
    assert result.plan.rationale.startswith("Removed #1 bicycle")
    assert [c.tool for c in result.tool_calls] == ["describe_object", "remove_object"]
    changed = np.any(load_image(out) != load_image(DOG), axis=2)
    assert result.executed[0].changed_pixels == int(changed.sum()) > 0
    x0, y0, x1, y1 = (int(v) for v in result.scenes[0].get(1).box)
    assert not changed[:, :max(0, x0 - 2)].any() and not changed[max(0, y1 + 2):].any()  # only around the bicycle
    system = model.calls[0][0].content
    assert "detect_objects" in system and "Instruction: Remove the vehicle" in model.calls[0][1].content
    with pytest.raises(EditError, match="planner='structured'"):
        cielr_agent.edit(DOG, "remove the bicycle", llm=ScriptedChatModel([]), planner="tools", dry_run=True, **FAKE)


def test_execute_plan_runs_a_corrected_plan_on_the_planned_scene_without_an_llm(detector, tmp_path):
    """What the server's approval step does: plan (dry run), a person retargets it, the plan runs on that SSR."""
    from cielr_agent.api import execute_plan

    planned = cielr_agent.edit(DOG, "remove the bicycle", llm=ScriptedChatModel([remove(1)]), dry_run=True, **FAKE)
    scene = planned.scenes[-1]
    corrected = planned.plan.model_dump()
    corrected["actions"][0]["target"] = 3  # the truck, not the bicycle
    out = tmp_path / "out.png"
    result = execute_plan(DOG, corrected, scene, out, instruction="remove the bicycle", **FAKE)
    assert result.status == "verified" and result.output == str(out) and not result.llm_calls
    changed = np.any(load_image(out) != load_image(DOG), axis=2)
    x0, y0, x1, y1 = (int(v) for v in scene.get(3).box)
    assert changed.any() and changed[y0:y1, x0:x1].sum() == changed.sum()  # only inside the truck's box
    with pytest.raises(EditError, match=r"objects \[42\]"):
        execute_plan(DOG, {"rationale": "x", "actions": [{"type": "remove", "target": 42}]}, scene, **FAKE)
