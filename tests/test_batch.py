"""`cielr batch`: job files, output naming, failures, resume, the report, local workers and Ray."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cielr_agent import batch
from cielr_agent.actions import EditPlan
from cielr_agent.assets import EMBEDDED_PROFILE_ASSETS, is_ready
from cielr_agent.batch import BatchUsageError, Job, jobs_from_folder, jobs_from_jsonl, read_records, run_batch
from cielr_agent.cli import main
from cielr_agent.errors import MissingDependencyError, TargetNotFoundError
from cielr_agent.imaging import load_image, save_image_atomic
from cielr_agent.results import EditResult

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed: pip install 'cielr-agent[batch]'")


def fake_edit(image, instruction, output, *, llm=None, profile=None):
    """Inverts the image; "unicorn" instructions fail like a real edit whose target is not in the image, "crash"
    ones end the worker process like the kernel's OOM killer."""
    if "crash" in instruction:
        os._exit(3)
    if "unicorn" in instruction:
        raise TargetNotFoundError("there is no unicorn in the image")
    pixels = load_image(image)
    time.sleep(float(os.environ.get("FAKE_EDIT_SECONDS", "0")))
    save_image_atomic(255 - pixels, output)
    plan = EditPlan(rationale=f"<b>{instruction}</b> & done", actions=[{"type": "remove", "target": 1}])
    return EditResult(instruction=instruction, image=str(image), status="verified", output=str(output), plan=plan,
                      timings={"total": 0.01}, peak_rss_mb=1.0)


def _photo(path: Path, color=(200, 40, 40), size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _jsonl(path: Path, items: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items), encoding="utf-8")
    return path


@pytest.fixture
def three_jobs(tmp_path) -> tuple[Path, Path]:
    """A jobs file with two editable photos and one job that fails; (jobs file, output folder)."""
    _photo(tmp_path / "in" / "dog.jpg")
    _photo(tmp_path / "in" / "cat.png", (20, 90, 200))
    jobs = _jsonl(tmp_path / "in" / "jobs.jsonl", [
        {"image": "dog.jpg", "instruction": "remove the bicycle"},
        {"image": "cat.png", "instruction": "paint the <cat> \"blue\" & more"},
        {"image": "dog.jpg", "instruction": "remove the unicorn", "output": "unicorn.png"},
    ])
    return jobs, tmp_path / "out"


# ---------------------------------------------------------------------------------------------- job files

def test_jsonl_paths_are_relative_to_the_file_and_outputs_are_unique(tmp_path):
    jobs = jobs_from_jsonl(_jsonl(tmp_path / "j" / "jobs.jsonl", [
        {"image": "a/dog.jpg", "instruction": " remove the bicycle "},
        "",
        {"image": "b/dog.jpg", "instruction": "paint the dog blue", "note": "extra keys are ignored"},
        {"image": str(tmp_path / "x.png"), "instruction": "remove the cup", "output": "custom/x-out.png"},
    ]), tmp_path / "out")
    out = (tmp_path / "out").resolve()
    assert jobs == [
        Job(0, str((tmp_path / "j" / "a" / "dog.jpg").resolve()), "remove the bicycle", str(out / "dog.png")),
        Job(1, str((tmp_path / "j" / "b" / "dog.jpg").resolve()), "paint the dog blue", str(out / "dog-1.png")),
        Job(2, str((tmp_path / "x.png").resolve()), "remove the cup",
            str((tmp_path / "j" / "custom" / "x-out.png").resolve())),
    ]


@pytest.mark.parametrize("line,message", [
    ('{"image": "a.jpg", "instruction": "x"', "not valid JSON"),
    ('["a.jpg", "x"]', "expected a JSON object"),
    ('{"image": "a.jpg"}', '"instruction" must be a non-empty string'),
    ('{"image": "a.jpg", "instruction": "   "}', '"instruction" must be a non-empty string'),
    ('{"image": 3, "instruction": "x"}', '"image" must be a non-empty string'),
    ('{"image": "a.jpg", "instruction": "x", "output": 7}', '"output" must be a non-empty string'),
])
def test_a_malformed_line_is_named_by_its_number(tmp_path, line, message):
    path = _jsonl(tmp_path / "jobs.jsonl", [{"image": "ok.jpg", "instruction": "remove the dog"}, "", line])
    with pytest.raises(BatchUsageError, match=rf"jobs\.jsonl:3: .*{message}"):
        jobs_from_jsonl(path, tmp_path / "out")


def test_unusable_job_files(tmp_path):
    with pytest.raises(BatchUsageError, match="jobs file not found"):
        jobs_from_jsonl(tmp_path / "missing.jsonl", tmp_path / "out")
    with pytest.raises(BatchUsageError, match="has no jobs"):
        jobs_from_jsonl(_jsonl(tmp_path / "empty.jsonl", ["", "  "]), tmp_path / "out")
    same = [{"image": "a.jpg", "instruction": "x", "output": "o.png"}, {"image": "b.jpg", "instruction": "y",
                                                                          "output": "o.png"}]
    with pytest.raises(BatchUsageError, match=r"dup\.jsonl:2: .*also the output of .*dup\.jsonl:1"):
        jobs_from_jsonl(_jsonl(tmp_path / "dup.jsonl", same), tmp_path / "out")
    onto_input = [{"image": "a.jpg", "instruction": "x"}, {"image": "b.jpg", "instruction": "y", "output": "a.jpg"}]
    with pytest.raises(BatchUsageError, match="is an input image"):
        jobs_from_jsonl(_jsonl(tmp_path / "in.jsonl", onto_input), tmp_path / "out")


def test_folder_jobs_are_sorted_images_and_never_named_like_an_input(tmp_path):
    for name in ("b.png", "a.webp", "a.jpg", "C.JPEG"):
        _photo(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    jobs = jobs_from_folder(tmp_path, " make it red ", tmp_path)  # outputs in the input folder itself
    names = [(Path(j.image).name, Path(j.output).name) for j in jobs]
    assert names == [("C.JPEG", "C.png"), ("a.jpg", "a.png"), ("a.webp", "a-2.png"), ("b.png", "b-3.png")]
    assert {j.instruction for j in jobs} == {"make it red"}
    with pytest.raises(BatchUsageError, match="--instruction"):
        jobs_from_folder(tmp_path, "  ", tmp_path / "out")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(BatchUsageError, match="no images"):
        jobs_from_folder(tmp_path / "nothing", "x", tmp_path / "out")


# --------------------------------------------------------------------------------------------- running

def test_a_failing_job_is_recorded_and_the_others_run(three_jobs):
    jobs_file, out = three_jobs
    before = {p: p.read_bytes() for p in jobs_file.parent.iterdir()}
    summary = run_batch(jobs_from_jsonl(jobs_file, out), out, edit_fn=fake_edit, progress=False)
    assert (summary["total"], summary["done"], summary["failed"], summary["skipped"]) == (3, 2, 1, 0)
    assert summary["statuses"] == {"verified": 2, "failed": 1} and summary["mode"] == "local"
    done, _, failed = summary["records"]
    assert done["status"] == "verified" and done["output"] == str((out / "dog.png").resolve())
    assert done["plan"]["rationale"] == "<b>remove the bicycle</b> & done"
    assert done["plan"]["actions"] == [{"type": "remove"}]
    assert done["worker"] == f"pid:{os.getpid()}" and done["seconds"] >= 0 and done["peak_rss_mb"] > 0
    assert failed == {"index": 2, "image": str((jobs_file.parent / "dog.jpg").resolve()),
                      "instruction": "remove the unicorn", "status": "failed",
                      "error": "TargetNotFoundError: there is no unicorn in the image", "seconds": failed["seconds"],
                      "peak_rss_mb": failed["peak_rss_mb"], "worker": f"pid:{os.getpid()}"}
    assert np.array_equal(load_image(out / "dog.png"), 255 - load_image(jobs_file.parent / "dog.jpg"))
    assert {p: p.read_bytes() for p in before} == before  # inputs untouched
    assert summary["peak_rss_mb_per_worker"] == {f"pid:{os.getpid()}": done["peak_rss_mb"]}
    assert summary["edits_per_minute"] > 0 and summary["median_seconds"] is not None
    assert json.loads((out / "summary.json").read_text()) == summary


def test_resume_skips_done_jobs_and_retries_failed_ones(three_jobs, monkeypatch):
    jobs_file, out = three_jobs
    run_batch(jobs_from_jsonl(jobs_file, out), out, edit_fn=fake_edit, progress=False)
    mtime = (out / "dog.png").stat().st_mtime_ns
    (out / "cat.png").unlink()  # a done job whose output is gone runs again
    calls = []

    def counting(image, instruction, output, **options):
        calls.append(instruction)
        return fake_edit(image, instruction, output, **options)

    summary = run_batch(jobs_from_jsonl(jobs_file, out), out, edit_fn=counting, progress=False)
    assert sorted(calls) == ["paint the <cat> \"blue\" & more", "remove the unicorn"]
    assert (summary["done"], summary["failed"], summary["skipped"], summary["ran"]) == (2, 1, 1, 2)
    assert (out / "dog.png").stat().st_mtime_ns == mtime and (out / "cat.png").exists()
    lines = (out / ".cielr-batch" / "records.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2, 1, 2]
    # a changed job at the same index is not taken for the one done before
    _jsonl(jobs_file, [{"image": "cat.png", "instruction": "remove the bicycle"}])
    calls.clear()
    assert run_batch(jobs_from_jsonl(jobs_file, out), out, edit_fn=counting, progress=False)["ran"] == 1
    assert calls == ["remove the bicycle"]


def test_a_half_written_last_record_is_ignored(three_jobs):
    jobs_file, out = three_jobs
    run_batch(jobs_from_jsonl(jobs_file, out), out, edit_fn=fake_edit, progress=False)
    records = out / ".cielr-batch" / "records.jsonl"
    whole = records.read_text()
    records.write_text(whole + '{"index": 0, "status": "verif')  # the run was killed mid-write
    assert read_records(records) == read_records(_jsonl(out / "copy.jsonl", whole.splitlines()))
    summary = run_batch(jobs_from_jsonl(jobs_file, out), out, edit_fn=fake_edit, progress=False)
    assert (summary["skipped"], summary["ran"]) == (2, 1)
    lines = records.read_text().splitlines()
    assert lines[-2] == '{"index": 0, "status": "verif' and json.loads(lines[-1])["index"] == 2


def test_summary_and_gallery(three_jobs, tmp_path):
    jobs_file, out = three_jobs
    run_batch(jobs_from_jsonl(jobs_file, out), out, edit_fn=fake_edit, progress=False)
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    page = (moved / "gallery.html").read_text()
    assert "paint the &lt;cat&gt; &quot;blue&quot; &amp; more" in page and "<cat>" not in page
    assert "&lt;b&gt;remove the bicycle&lt;/b&gt; &amp; done" in page
    assert "TargetNotFoundError: there is no unicorn in the image" in page
    sources = [part.split('"')[0] for part in page.split('<img src="')[1:]]
    assert len(sources) == 5  # two inputs and outputs, and the failed job's input
    for src in sources:
        assert src.startswith("thumbs/") and src.endswith(".jpg")
        with Image.open(moved / src) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 256
    summary = json.loads((moved / "summary.json").read_text())
    assert [r["index"] for r in summary["records"]] == [0, 1, 2]
    assert {"wall_seconds", "edits_per_minute", "median_seconds", "workers", "environment"} <= set(summary)


def test_two_local_worker_processes(three_jobs, monkeypatch):
    jobs_file, out = three_jobs
    monkeypatch.setenv("FAKE_EDIT_SECONDS", "0.3")
    summary = run_batch(jobs_from_jsonl(jobs_file, out), out, workers=2, edit_fn=fake_edit, progress=False)
    assert (summary["done"], summary["failed"], summary["workers"]) == (2, 1, 2)
    workers = {r["worker"] for r in summary["records"]}
    assert workers == set(summary["peak_rss_mb_per_worker"]) and f"pid:{os.getpid()}" not in workers
    assert np.array_equal(load_image(out / "cat.png"), 255 - load_image(jobs_file.parent / "cat.png"))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU pinning on this OS")
def test_workers_get_their_own_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert batch.core_sets(2) == [{0, 1}, {2, 3}]
    assert batch.core_sets(3) == [{0}, {1}, {2}]
    assert batch.core_sets(3, 2) == [{0, 1}, {2, 3}, {0, 1}]  # more CPUs asked for than there are: shared
    assert batch.core_sets(1) == [{0, 1, 2, 3}]


def test_a_dying_worker_process_fails_the_jobs_left(tmp_path):
    _photo(tmp_path / "a.png")
    jobs_file = _jsonl(tmp_path / "jobs.jsonl", [{"image": "a.png", "instruction": "crash"}] +
                       [{"image": "a.png", "instruction": "recolor", "output": f"{i}.png"} for i in range(3)])
    summary = run_batch(jobs_from_jsonl(jobs_file, tmp_path / "out"), tmp_path / "out", workers=2, edit_fn=fake_edit,
                        progress=False)
    crashed = summary["records"][0]
    assert crashed["status"] == "failed" and crashed["error"].startswith("BrokenProcessPool")
    assert summary["failed"] >= 1 and summary["done"] + summary["failed"] == 4
    assert len(read_records(tmp_path / "out" / ".cielr-batch" / "records.jsonl")) == 4


# -------------------------------------------------------------------------------------------------- CLI

def test_cli_exit_codes(three_jobs, tmp_path, monkeypatch, capsys):
    import cielr_agent.api

    monkeypatch.setattr(cielr_agent.api, "edit", fake_edit)
    jobs_file, out = three_jobs
    assert main(["batch", str(jobs_file), "--out", str(out), "-q"]) == 1  # one job failed
    assert "2/3 done, 1 failed, 0 skipped" in capsys.readouterr().out
    assert (out / "summary.json").exists() and (out / "gallery.html").exists()
    ok = _jsonl(tmp_path / "ok.jsonl", [{"image": str(jobs_file.parent / "dog.jpg"), "instruction": "remove it"}])
    assert main(["batch", str(ok), "--out", str(tmp_path / "ok"), "-q"]) == 0
    assert main(["batch", str(jobs_file.parent), "--instruction", "recolor it", "--out", str(tmp_path / "f"),
                 "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "f").glob("*.png")) == ["cat.png", "dog.png"]
    capsys.readouterr()
    bad = _jsonl(tmp_path / "bad.jsonl", [{"image": "a.jpg", "instruction": "x"}, "{oops"])
    for argv, message in [
        ([str(tmp_path / "missing.jsonl")], "jobs file not found"),
        ([str(bad)], "bad.jsonl:2: not valid JSON"),
        ([str(jobs_file.parent), "--instruction", " "], "--instruction"),
        ([str(tmp_path / "out" / "thumbs")], "--instruction"),
        ([str(jobs_file), "--instruction", "x"], "--instruction is for a folder"),
        ([str(jobs_file), "--workers", "0"], "--workers must be at least 1"),
    ]:
        assert main(["batch", *argv, "--out", str(tmp_path / "o2"), "-q"]) == 2, argv
        assert message in capsys.readouterr().err, argv
    (tmp_path / "empty").mkdir()
    assert main(["batch", str(tmp_path / "empty"), "--instruction", "x", "--out", str(tmp_path / "o3")]) == 2
    assert "no images" in capsys.readouterr().err


def test_ray_missing_names_the_extra(three_jobs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'cielr-agent\[batch\]'"):
        batch.import_ray()
    jobs_file, out = three_jobs
    assert main(["batch", str(jobs_file), "--out", str(out), "--ray", "local", "-q"]) == 2
    assert "cielr-agent[batch]" in capsys.readouterr().err


def test_a_local_ray_cluster_too_small_for_the_actors_is_refused():
    class SmallRay:
        @staticmethod
        def cluster_resources():
            return {"CPU": 2.0, "memory": 8 * 2**30}

    batch._check_local_fits(SmallRay, 2, 1, 3 * 2**30)
    with pytest.raises(BatchUsageError, match="lower --workers or --cpus-per-worker"):
        batch._check_local_fits(SmallRay, 2, 2, 3 * 2**30)
    with pytest.raises(BatchUsageError, match="lower --workers or --memory-per-worker"):
        batch._check_local_fits(SmallRay, 2, 1, 5 * 2**30)


@needs_ray
def test_ray_actors_with_a_fake_edit(three_jobs, monkeypatch):
    """A local Ray cluster, the fake edit (the actors import this module through PYTHONPATH)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    jobs_file, out = three_jobs
    with jobs_file.open("a") as f:  # the actor dies on the 4th job, the 5th is never run
        f.write('{"image": "dog.jpg", "instruction": "crash"}\n')
        f.write('{"image": "cat.png", "instruction": "recolor", "output": "x.png"}\n')
    summary = run_batch(jobs_from_jsonl(jobs_file, out), out, ray="local", workers=1, cpus_per_worker=1,
                        memory_per_worker=0.5, edit_fn=fake_edit, progress=False)
    assert (summary["done"], summary["failed"], summary["mode"], summary["ray"]) == (2, 3, "ray", "local")
    assert [r["status"] for r in summary["records"]] == ["verified", "verified", "failed", "failed", "failed"]
    assert all("Actor" in r["error"] for r in summary["records"][3:])
    (worker,) = set(summary["peak_rss_mb_per_worker"])
    assert worker.startswith("actor:") and {r["worker"] for r in summary["records"][:3]} == {worker}
    assert (out / "cat.png").exists()


# ------------------------------------------------------------------------------------------- real edits

@pytest.mark.slow
@pytest.mark.assets
@needs_ray
@pytest.mark.skipif(not all(is_ready(a) for a in EMBEDDED_PROFILE_ASSETS),
                    reason="the embedded models are not set up: run `cielr setup`")
def test_real_batch_on_ray_resumes(tmp_path):
    if not (PHOTOS / "dog.jpg").exists():
        pytest.skip("../shared/data is not beside the checkout")
    jobs_file = _jsonl(tmp_path / "jobs.jsonl", [
        {"image": str(PHOTOS / "dog.jpg"), "instruction": "remove the bicycle"},
        {"image": str(PHOTOS / "giraffe.jpg"), "instruction": "Make the animal with black and white stripes red"},
        {"image": "no-such-photo.jpg", "instruction": "remove the dog"},
    ])
    out = tmp_path / "out"
    argv = ["batch", str(jobs_file), "--out", str(out), "--ray", "local", "--workers", "1", "--cpus-per-worker", "1",
            "--memory-per-worker", "2", "-q"]
    assert main(argv) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"], summary["skipped"]) == (2, 1, 0), summary["records"]
    dog, giraffe, missing = summary["records"]
    assert missing["status"] == "failed" and missing["error"].startswith("ImageInputError: image not found")
    for record, photo in ((dog, "dog.jpg"), (giraffe, "giraffe.jpg")):
        assert record["status"] in ("verified", "executed") and record["worker"].startswith("actor:")
        assert record["plan"]["actions"] and record["plan"]["rationale"]
        edited, original = load_image(record["output"]), load_image(PHOTOS / photo)
        assert edited.shape == original.shape and np.any(edited != original, axis=2).mean() > 0.01
    assert dog["plan"]["actions"][0]["target"]["label"] == "bicycle"
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert main(argv) == 1
    again = json.loads((out / "summary.json").read_text())
    assert (again["done"], again["failed"], again["skipped"], again["ran"]) == (2, 1, 2, 1)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.png")} == mtimes
    assert again["records"][2]["status"] == "failed" and again["records"][:2] == [dog, giraffe]

