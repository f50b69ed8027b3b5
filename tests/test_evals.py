"""The reasoning-local benchmark: its cases and its scoring."""

from cielr_agent.evals.reasoning_local import load_cases, score_case
from cielr_agent.tools.embedded.coco_detection import COCO_LABELS


def summary(action, label, **extra):
    return {"plan": {"actions": [{"type": action, "target": {"id": 1, "label": label, "box": [0, 0, 1, 1]}, **extra}]}}


def test_cases_are_well_formed():
    cases = load_cases()
    assert len(cases) >= 40 and len({c["id"] for c in cases}) == len(cases)
    assert {c["action"] for c in cases} == {"remove", "recolor"}
    assert all(c["target_label"] in COCO_LABELS for c in cases)
    assert all(c.get("color") for c in cases if c["action"] == "recolor")


def test_scoring():
    case = {"action": "recolor", "target_label": "horse", "color": "Blue"}
    assert score_case(case, summary("recolor", "horse", color="blue"))["correct"]
    assert not score_case(case, summary("recolor", "horse", color="red"))["correct"]
    assert not score_case(case, summary("remove", "horse"))["correct"]
    assert not score_case(case, summary("recolor", "sheep", color="blue"))["correct"]
    # the right object under the detector's wrong label counts
    assert score_case(case, summary("recolor", "sheep", color="blue"), ("cow", "horse"))["target_ok"]
    assert not score_case(case, {"plan": {"actions": []}})["correct"]
