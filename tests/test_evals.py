"""The reasoning-local benchmark: its cases and its scoring."""

from pathlib import Path

from PIL import Image

from cielr_agent.evals.reasoning_local import OPEN_CASES, load_cases, score_case
from cielr_agent.tools.embedded.coco_detection import COCO_LABELS


def summary(action, label, **extra):
    return {"plan": {"actions": [{"type": action, "target": {"id": 1, "label": label, "box": [0, 0, 1, 1]}, **extra}]}}


def test_cases_are_well_formed():
    cases = load_cases()
    assert len(cases) >= 40 and len({c["id"] for c in cases}) == len(cases)
    assert {c["action"] for c in cases} == {"remove", "recolor"}
    assert all(c["target_label"] in COCO_LABELS for c in cases)
    assert all(c.get("color") for c in cases if c["action"] == "recolor")


DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_open_vocabulary_cases_are_well_formed():
    """At least 40 cases whose target is no COCO class, each with a gold box inside its image."""
    cases = load_cases(OPEN_CASES)
    assert len(cases) >= 40 and len({c["id"] for c in cases}) == len(cases)
    assert not {c["id"] for c in cases} & {c["id"] for c in load_cases()}
    assert all(c["target_label"] not in COCO_LABELS for c in cases)
    assert all(c.get("color") for c in cases if c["action"] == "recolor")
    for c in cases:
        x0, y0, x1, y1 = c["target_box"]
        assert 0 <= x0 < x1 and 0 <= y0 < y1
        if DATA.exists():
            w, h = Image.open(DATA / c["image"]).size
            assert x1 <= w and y1 <= h, c["id"]


def test_open_cases_are_scored_by_the_gold_box():
    case = {"action": "remove", "target_label": "loudspeaker", "target_box": [100, 100, 200, 300]}
    def plan(box, label="bear"):
        return {"plan": {"actions": [{"type": "remove", "target": {"id": 2, "label": label, "box": box}}]}}
    assert score_case(case, plan([105, 95, 205, 290]))["correct"]  # the right object, whatever its label
    assert not score_case(case, plan([300, 100, 400, 300], "loudspeaker"))["correct"]  # the label alone is not enough


def test_scoring():
    case = {"action": "recolor", "target_label": "horse", "color": "Blue"}
    assert score_case(case, summary("recolor", "horse", color="blue"))["correct"]
    assert not score_case(case, summary("recolor", "horse", color="red"))["correct"]
    assert not score_case(case, summary("remove", "horse"))["correct"]
    assert not score_case(case, summary("recolor", "sheep", color="blue"))["correct"]
    # the right object under the detector's wrong label counts
    assert score_case(case, summary("recolor", "sheep", color="blue"), ("cow", "horse"))["target_ok"]
    assert not score_case(case, {"plan": {"actions": []}})["correct"]


def test_summary_strict_accuracy_ignores_alternatives():
    from cielr_agent.evals.reasoning_local import summarize

    def row(label, correct, detected=("dog",)):
        return {"id": label, "action": "remove", "target_label": "dog", "predicted_label": label, "correct": correct,
                "action_ok": True, "target_ok": correct, "detected": list(detected), "difficulty": "implicit"}

    s = summarize([row("dog", True), row("sheep", True), row("cat", False), row(None, False, ())], ctx=None)
    assert s["overall"]["correct"] == 2 and s["strict"]["correct"] == 1
    assert s["when_target_detected"] == {"cases": 3, "correct": 2, "accuracy": 0.667}
    assert s["by_action"]["remove"]["accuracy"] == 0.5 and s["headline"]["strict_accuracy"] == 0.25
