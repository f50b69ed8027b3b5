"""The eval runner and suites with a scripted LLM and fake backends (the real stack: one slow smoke test)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cielr_agent.actions import EditDecision, PlannedStep
from cielr_agent.evals import complexbench, reason_edit, runner, speed
from cielr_agent.evals.harness import EvalContext
from cielr_agent.tools import register_backend
from cielr_agent.tools.protocols import Detection
from fakes import BoxSegmenter, FakeDetector, MeanFillRemover
from cielr_agent.llm.scripted import ScriptedChatModel

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "reason_edit"
SHARED = ROOT.parent / "shared" / "data"
FAKE = {"detector": "fake", "segmenter": "fake", "remover": "fake"}
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="no shared data folder at ../shared/data")


def step(action, oid, **kw):
    return EditDecision(reason=f"{action} #{oid}", steps=[PlannedStep(action=action, object_id=oid, **kw)])


@pytest.fixture
def fake_backends():
    """Fake detector (the same two objects in every image), box segmenter, mean-fill remover."""
    det = FakeDetector([Detection("dog", 0.9, (20.0, 60.0, 110.0, 150.0)),
                        Detection("bicycle", 0.8, (130.0, 40.0, 240.0, 160.0))], sticky=True)
    register_backend("detector", "fake", lambda ctx: det)
    register_backend("segmenter", "fake", lambda ctx: BoxSegmenter())
    register_backend("remover", "fake", lambda ctx: MeanFillRemover())
    return det


def context(tmp_path, data, replies, limit=None) -> EvalContext:
    return EvalContext(data=Path(data), out=tmp_path / "run", llm="scripted", model=ScriptedChatModel(replies),
                       limit=limit, overrides=dict(FAKE))


# ------------------------------------------------------------------------------------------------ reason-edit


def test_reason_edit_loader_reads_the_layout():
    cases = reason_edit.load_benchmark(FIXTURE)
    assert [c["id"] for c in cases] == ["4-Color/001", "6-Reasoning/001", "6-Reasoning/002", "6-Reasoning/003"]
    first = cases[1]
    assert first["instruction"] == "Remove the vehicle in the picture that has no engine"
    assert first["clip_text"] == "an empty porch" and first["mask"].endswith("6-Reasoning/001_mask.jpg")
    assert [c["id"] for c in reason_edit.load_benchmark(FIXTURE / "4-Color")] == ["4-Color/001"]
    assert reason_edit.parse_line("turn it blue\n") == ("turn it blue", None)


def test_reason_edit_loader_rejects_unpaired_files(tmp_path):
    folder = tmp_path / "6-Reasoning"
    shutil.copytree(FIXTURE / "6-Reasoning", folder)
    (folder / "003_mask.jpg").unlink()
    with pytest.raises(ValueError, match="pair up"):
        reason_edit.load_benchmark(tmp_path)
    with pytest.raises(FileNotFoundError, match="subset folders"):
        reason_edit.load_benchmark(tmp_path / "nothing")


def test_reason_edit_run_end_to_end(tmp_path, fake_backends):
    """Two cases: a recolor that runs, and a replace the profile cannot do (output = unchanged source)."""
    replies = [step("recolor", 2, color="red"), step("replace", 1, prompt="a cat")]
    ctx = context(tmp_path, FIXTURE, replies, limit=3)
    ctx.limit = 2
    summary = runner.run_suite("reason-edit", ctx, progress=False)
    rows = runner.read_rows(ctx.out / runner.RESULTS)
    color, bike = rows["4-Color/001"], rows["6-Reasoning/001"]
    assert color["edited"] and color["status"] == "verified" and 0 < color["target_iou"] <= 1
    assert 0 < color["psnr"] < math.inf and color["clip_score"] is None and "clip_score" in color["unavailable"]
    assert (ctx.out / color["output"]).exists() and color["llm_calls"] == 1
    assert not bike["edited"] and bike["failure"].startswith("EditError") and bike["psnr"] == math.inf
    assert summary["finished"] == 2 and summary["errors"] == 0 and summary["edited_only"]["cases"] == 1
    report = (ctx.out / "report.md").read_text()
    assert "Reason-Edit protocol" in report and "edited only" in report
    html = (ctx.out / "gallery.html").read_text()
    for rel in color["gallery"].values():
        assert rel in html and (ctx.out / rel).exists()
    assert json.loads((ctx.out / "summary.json").read_text())["all_cases"]["psnr"] == "inf"


# --------------------------------------------------------------------------------------------------- runner


def fake_suite(fail_id: str):
    def run_case(case, ctx):
        if case["id"] == fail_id:
            raise RuntimeError("boom")
        return {"status": "ok", "value": case["n"] * 2}

    return SimpleNamespace(__doc__="fake: a test suite.", NEEDS_LLM=False,
                           cases=lambda ctx: [{"id": f"c{i}", "n": i} for i in range(3)][: ctx.limit],
                           run_case=run_case, summarize=lambda rows, ctx: {"total": sum(r["value"] for r in rows)},
                           markdown=lambda s: f"total {s['total']}\n")


def test_runner_captures_errors_and_resumes(tmp_path, monkeypatch):
    calls = []
    suite = fake_suite("c1")
    original = suite.run_case
    suite.run_case = lambda case, ctx: calls.append(case["id"]) or original(case, ctx)
    monkeypatch.setattr(runner, "load_suite", lambda name: suite)
    ctx = EvalContext(data=tmp_path, out=tmp_path / "run", llm="none")
    summary = runner.run_suite("fake", ctx, progress=False)
    assert calls == ["c0", "c1", "c2"] and summary["errors"] == 1 and summary["total"] == 2 + 4 - 2
    rows = runner.read_rows(ctx.out / runner.RESULTS)
    assert rows["c1"]["error"] == "RuntimeError: boom" and "seconds" in rows["c0"]
    assert "RuntimeError" in (ctx.out / "report.md").read_text()
    runner.run_suite("fake", ctx, progress=False)  # finished cases are skipped, errors too
    assert calls == ["c0", "c1", "c2"]
    runner.run_suite("fake", ctx, progress=False, retry_errors=True)
    assert calls == ["c0", "c1", "c2", "c1"]
    sessions = json.loads((ctx.out / runner.SETTINGS).read_text())["sessions"]
    assert [s["cases"] for s in sessions] == [3, 1]  # the run that skipped everything records nothing
    assert all(s["git_commit"] and s["started"] for s in sessions)
    assert "3 cases from" in (ctx.out / "report.md").read_text()
    other = EvalContext(data=tmp_path, out=ctx.out, llm="another-llm")
    with pytest.raises(runner.EvalSetupError, match="other settings"):
        runner.run_suite("fake", other, progress=False)
    runner.run_suite("fake", other, progress=False, fresh=True)
    assert len(runner.read_rows(ctx.out / runner.RESULTS)) == 3


def test_cli_eval_reports_setup_errors(tmp_path, capsys):
    from cielr_agent.cli import main

    assert main(["eval", "reason-edit", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "Reason-Edit subset folders" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ complexbench-plan


def test_complexbench_gold_steps_and_scene():
    pairs = [{"edit_type": "change object", "ori obj": "sheep", "new_obj": "brown goat"},
             {"edit_type": "chain two", "ori obj": "nothing", "new_obj": "bell"},
             {"edit_type": "color", "ori obj": "bell", "new_obj": "nothing"}]
    steps = complexbench.gold_steps(pairs)
    assert steps[0]["action"] == "replace" and steps[1]["unsupported"] == "chain two"
    assert steps[2]["unsupported"] == "on an object an earlier step creates"
    assert complexbench.parse_object("far right cup") == ("cup", {"depth": "far", "x": 0.8, "y": 0.25})
    case = {"id": "x/1", "steps": complexbench.gold_steps([
        {"edit_type": "delete object", "ori obj": "left apple", "new_obj": "nothing"},
        {"edit_type": "add object", "ori obj": "nothing", "new_obj": "pigeon"}])}
    scene, ids = complexbench.build_scene(case)
    apples = [o for o in scene.objects if o.label == "apple"]
    assert ids == {"left apple": 1} and len(apples) == 2  # "left apple" implies another apple
    assert scene.get(1).box[2] < apples[1].box[0]  # ... to its right
    assert len(scene.objects) == 2 + complexbench.DISTRACTORS


def test_complexbench_scoring_aligns_by_object():
    case = {"id": "x/2", "steps": complexbench.gold_steps([
        {"edit_type": "add object", "ori obj": "nothing", "new_obj": "pigeon"},
        {"edit_type": "delete object", "ori obj": "cup", "new_obj": "nothing"},
        {"edit_type": "change background", "ori obj": "nothing", "new_obj": "nothing"}])}
    _, ids = complexbench.build_scene(case)
    actions = [{"type": "remove", "target": ids["cup"]}, {"type": "replace", "target": 3, "prompt": "a park"},
               {"type": "add", "prompt": "a grey pigeon", "anchor": 1}]
    scored = complexbench.score(case["steps"], actions, ids)
    assert [s["correct"] for s in scored] == [True, True, False]
    assert scored[2]["predicted"]["type"] == "replace"  # the background step, planned as a replace


def test_complexbench_plan_step_with_a_scripted_llm(tmp_path):
    data = tmp_path / "data" / "complexbench_edit"
    entry = {"img_path": "1.jpg", "new_ins": "delete the dog\r\nchange the color of the cat to blue\r\nadd a hat",
             "edit pair": [{"edit_type": "delete object", "ori obj": "dog", "new_obj": "nothing"},
                           {"edit_type": "color", "ori obj": "cat", "new_obj": "nothing"},
                           {"edit_type": "add object", "ori obj": "nothing", "new_obj": "hat"}]}
    for split in complexbench.SPLITS:
        (data / split).mkdir(parents=True)
        (data / split / "final_update_v2.json").write_text(json.dumps({"1": entry, "2": entry}))
    plan = EditDecision(reason="dog, cat, hat", steps=[PlannedStep(action="remove", object_id=1),
                                                       PlannedStep(action="recolor", object_id=2, color="blue"),
                                                       PlannedStep(action="add", prompt="a hat", object_id=2)])
    ctx = EvalContext(data=tmp_path / "data", out=tmp_path / "run", llm="scripted", limit=1,
                      model=ScriptedChatModel([plan] * 3 + [EditDecision(reason="nothing fits", steps=[]),
                                               "not json", "not json"]))
    summary = runner.run_suite("complexbench-plan", ctx, progress=False)
    assert summary["finished"] == 5 and summary["errors"] == 0 and summary["no_plan"] == 2
    assert summary["per_split"]["COCO-three-obj"]["correct"] == 1.0
    assert summary["per_split"]["two-chain"]["correct"] == 0.0  # invalid LLM output: every step missed
    assert summary["overall"]["steps"] == 15 and summary["overall"]["correct"] == pytest.approx(9 / 15, abs=1e-3)
    assert "Per split" in (ctx.out / "report.md").read_text()


@needs_shared
def test_complexbench_loader_on_the_shared_data(tmp_path):
    ctx = EvalContext(data=SHARED, out=tmp_path, limit=3)
    cases = complexbench.cases(ctx)
    assert len(cases) == 15 and all(len(c["steps"]) == 3 for c in cases)
    assert all(s.get("action") or s.get("unsupported") for c in cases for s in c["steps"])


# --------------------------------------------------------------------------------- reasoning-local, magicbrush


@pytest.fixture
def dog_data(tmp_path):
    """A data folder with photos/dog.jpg (the example photo is the same darknet picture)."""
    (tmp_path / "data" / "photos").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "dog.jpg", tmp_path / "data" / "photos" / "dog.jpg")
    return tmp_path / "data"


def test_reasoning_local_executes_and_measures_the_background(tmp_path, dog_data):
    det = FakeDetector([Detection("bicycle", 0.85, (120.0, 125.0, 575.0, 425.0)),
                        Detection("dog", 0.9, (130.0, 220.0, 315.0, 545.0))])
    register_backend("detector", "fake", lambda ctx: det)
    register_backend("segmenter", "fake", lambda ctx: BoxSegmenter())
    register_backend("remover", "fake", lambda ctx: MeanFillRemover())
    ctx = context(tmp_path, dog_data, [step("remove", 1)], limit=1)  # dog-01: the bicycle
    summary = runner.run_suite("reasoning-local", ctx, progress=False)
    row = runner.read_rows(ctx.out / runner.RESULTS)["dog-01"]
    assert row["correct"] and row["predicted_label"] == "bicycle"
    assert row["psnr_outside_edit"] == math.inf and row["ssim_outside_edit"] == pytest.approx(1.0)
    assert 10 < row["psnr_outside_target"] < math.inf  # the mask grows by 7 px before the fill
    assert row["changed_outside_target"] > 0 and 0 < row["changed_fraction"] < row["target_area"] + 0.05
    assert summary["overall"]["accuracy"] == 1.0 and summary["headline"]["psnr_outside_edit_min"] == math.inf


@needs_shared
def test_magicbrush_failure_counts_as_the_unchanged_source(tmp_path, fake_backends):
    ctx = context(tmp_path, SHARED, [step("replace", 1, prompt="a rabbit")], limit=1)
    summary = runner.run_suite("magicbrush", ctx, progress=False)
    row = runner.read_rows(ctx.out / runner.RESULTS)["85160_3"]
    assert not row["edited"] and row["l1"] == row["l1_no_edit"] > 0 and row["l2"] == row["l2_no_edit"]
    assert summary["edited_only"]["cases"] == 0 and summary["not_edited"]["reasons"] == {"EditError": 1}
    assert set(summary["unavailable"]) == {"clip_i", "dino"} or summary["learned"]["clip_i"] is not None


def test_speed_measures_each_edit_at_512(tmp_path, dog_data, fake_backends):
    replies = [step("remove", 2), step("remove", 2)]  # warm-up, then the case
    ctx = context(tmp_path, dog_data, replies, limit=1)
    summary = runner.run_suite("speed", ctx, progress=False)
    row = runner.read_rows(ctx.out / runner.RESULTS)["dog-remove-bicycle"]
    assert row["size"] == [512, 384] and row["peak_rss_case_mb"] > 0 and row["llm_calls"] == 1
    assert [c["node"] for c in row["calls"]] == ["decide"] and row["calls"][0]["new_tokens"] > 0
    assert row["total_s"] >= row["timings"]["execute"] and summary["warmup"]["instruction"] == "Remove the truck"
    assert summary["stages_s"]["total"]["median"] == row["total_s"]
    # the scripted model is no llama.cpp model: no reference, no ratio, and the report says why
    assert row["ratio"] is None and summary["headline"]["ratio_median"] is None
    assert "ScriptedChatModel" in summary["reference"]["reason"]
    assert summary["headline"]["cold_wall_s"] is None  # no --cold
    report = (ctx.out / "report.md").read_text()
    assert "| dog-remove-bicycle | 512×384 |" in report and "Ratio unavailable" in report


def speed_row(case_id, total, ratio, perceive, calls, peak):
    """A speed row as `speed.run_case` writes it; calls: (node, new, reused, generated tokens, seconds)."""
    timings = {"load_image": 0.01, "perceive": perceive, "llm": sum(c[4] for c in calls), "perception_tools": 0.5,
               "execute": 2.0, "verify": 0.1, "total": total}
    calls = [{"node": n, "new_tokens": new, "reused_tokens": reused, "generated_tokens": gen, "seconds": sec}
             for n, new, reused, gen, sec in calls]
    return {"id": case_id, "size": [512, 384], "timings": timings, "total_s": total, "ratio": ratio,
            "reference_s": 10.0, "other_s": 0.0, "llm_calls": len(calls), "calls": calls,
            "input_tokens": sum(c["new_tokens"] + c["reused_tokens"] for c in calls),
            "new_tokens": sum(c["new_tokens"] for c in calls), "reused_tokens": sum(c["reused_tokens"] for c in calls),
            "output_tokens": sum(c["generated_tokens"] for c in calls), "peak_rss_case_mb": peak,
            "peak_rss_method": "VmHWM reset per case", "load_avg_1m": 1.0}


def test_speed_summary_of_synthetic_rows(tmp_path):
    (tmp_path / "reference.json").write_text(json.dumps(
        {"model": "m.gguf", "seconds": 10.0, "runs_s": [10.5, 10.0], "prompt_tokens": 1000, "generated_tokens": 48}))
    rows = [speed_row("a", 20.0, 2.0, 1.0, [("reason", 900, 0, 40, 8.0), ("plan", 300, 900, 60, 9.0)], 3000.0),
            speed_row("b", 40.0, 4.0, 3.0, [("reason", 1000, 0, 50, 12.0), ("plan", 200, 1000, 80, 20.0)], 3500.0),
            {"id": speed.COLD_ID, "command": "cielr edit …", "wall_s": 61.5, "peak_rss_mb": 2900.0,
             "status": "verified", "timings": {"perceive": 5.0, "total": 50.0}, "startup_s": 11.5}]
    summary = speed.summarize(rows, SimpleNamespace(out=tmp_path))
    head = summary["headline"]
    assert head["total_median_s"] == 30.0 and head["total_p90_s"] == 38.0 and head["peak_rss_max_mb"] == 3500.0
    assert head["ratio_median"] == 3.0 and head["ratio_p90"] == 3.8 and head["reference_s"] == 10.0
    assert head["cold_wall_s"] == 61.5 and head["cold_peak_rss_mb"] == 2900.0 and head["perceive_median_s"] == 2.0
    assert head["llm_median_s"] == 24.5 and summary["edits"] == 2  # the cold row is no timed edit
    assert summary["stages_s"]["perception"]["median"] == 2.5  # perceive + perception tools
    tokens = summary["tokens_per_edit"]
    assert tokens["new"]["median"] == 1200 and tokens["reused"]["median"] == 950 and tokens["output"]["median"] == 115
    plan = summary["llm_calls_by_node"]["plan"]
    assert plan["calls"] == 2 and plan["reused_tokens"]["median"] == 950 and plan["seconds"]["p90"] == 18.9
    assert summary["per_edit"][0]["calls"] == [["reason", 900, 0, 40, 8.0], ["plan", 300, 900, 60, 9.0]]
    text = speed.markdown(summary)
    line = "| a | 512×384 | 20.000 | 2.000 | 1.000 | 0.500 | 17.000 | reason 900+0→40 8.0s; plan 300+900→60 9.0s |"
    assert line in text
    assert "**10.0 s**" in text and "median **3.0**" in text and "**61.5 s** wall" in text


class FakeLlama:
    """What `measure_reference` uses of a `llama_cpp.Llama`; it records the calls and evaluates nothing."""

    def __init__(self):
        self.cache, self.events = "prefix cache", []

    def tokenize(self, text):
        return list(range(len(text.split())))

    def token_eos(self):
        return 7

    def set_cache(self, cache):
        self.cache = cache

    def reset(self):
        self.events.append("reset")

    def create_completion(self, prompt, **kw):
        self.events.append((len(prompt), self.cache, kw))
        return {"usage": {"prompt_tokens": len(prompt), "completion_tokens": kw["max_tokens"]}}


def test_reference_evaluates_1000_tokens_from_an_empty_cache():
    import threading

    llama = FakeLlama()
    ref = speed.measure_reference(llama, threading.Lock())
    assert ref["prompt_tokens"] == 1000 and ref["generated_tokens"] == 48 and len(ref["runs_s"]) == 2
    assert ref["seconds"] == min(ref["runs_s"]) and llama.cache == "prefix cache"  # the prompt cache is back
    assert llama.events[0] == llama.events[2] == "reset"
    n, cache, kw = llama.events[1]
    assert n == 1000 and cache is None and kw["max_tokens"] == 48 and kw["temperature"] == 0
    assert kw["logit_bias"] == {7: -math.inf} and kw["stop"] == []
    assert "reason" in speed.reference(ScriptedChatModel([]))


def test_run_measured_gives_the_child_peak_rss_not_ours():
    import sys

    ballast = b"x" * (1 << 30)  # a forked child's ru_maxrss would count this gigabyte of ours
    code, wall, peak = speed.run_measured([sys.executable, "-c", "import sys; x = b'x' * (300 << 20); sys.exit(3)"])
    assert code == 3 and wall > 0 and 300 < peak < 600 and len(ballast)


def test_cold_start_passes_the_run_settings_to_the_cli(tmp_path, monkeypatch):
    seen = []

    walls = iter([55.0, 52.0, 50.0])

    def fake_run(cmd, stdout, stderr):
        seen.append(cmd)
        wall = next(walls)
        stdout.write(b'{"status": "verified", "timings": {"perceive": 4.0, "total": %.1f}}\n' % (wall - 12))
        return 0, wall, 2800.0 + wall

    monkeypatch.setattr(speed, "run_measured", fake_run)
    ctx = EvalContext(data=tmp_path, out=tmp_path, llm="embedded", profile="p.toml", prompt_set="v2", cold=True)
    case = speed.cases(ctx)[-1]
    assert case["id"] == speed.COLD_ID and len(speed.cases(ctx)) == len(speed.EDITS) + 1
    row = speed.run_case(case, ctx)
    cmd = seen[0]
    assert cmd[1:4] == ["-m", "cielr_agent.cli", "edit"] and cmd[4].endswith("examples/dog.jpg") and "--json" in cmd
    assert cmd[cmd.index("--llm") + 1] == "embedded" and cmd[cmd.index("--profile") + 1] == "p.toml"
    assert cmd[cmd.index("--prompt-set") + 1] == "v2"
    # three fresh processes, the median one reported
    assert len(seen) == 3 and row["runs_wall_s"] == [55.0, 52.0, 50.0] and row["max_peak_rss_mb"] == 2855.0
    assert row["wall_s"] == 52.0 and row["peak_rss_mb"] == 2852.0 and row["startup_s"] == 12.0
    assert row["timings"]["perceive"] == 4.0


# ---------------------------------------------------------------------------------------- the real stack


@pytest.mark.slow
@pytest.mark.assets
def test_reasoning_local_smoke_with_the_embedded_stack(tmp_path):
    """One real case through `cielr eval` (embedded LLM, detector, segmenter, inpainter): about a minute."""
    from cielr_agent.assets import EMBEDDED_PROFILE_ASSETS, is_ready
    from cielr_agent.cli import main

    if not SHARED.is_dir() or not all(is_ready(a) for a in EMBEDDED_PROFILE_ASSETS):
        pytest.skip("needs ../shared/data and the embedded models (`cielr setup`)")
    assert main(["eval", "reasoning-local", "--limit", "1", "--out", str(tmp_path), "-q"]) == 0
    row = runner.read_rows(tmp_path / runner.RESULTS)["dog-01"]
    assert "error" not in row and row["llm_calls"] >= 1 and (tmp_path / "gallery.html").exists()
    assert np.isfinite(row["timings"]["total"])
