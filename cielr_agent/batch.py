"""`cielr batch`: many edits in one run, in worker processes or on Ray actors, resumable, with a report.

Every finished job is appended to `DIR/.cielr-batch/records.jsonl` as it arrives; a later run over the same jobs
skips those whose output was written and still exists, and retries the others. At the end `DIR/summary.json`
and `DIR/gallery.html` (with JPEG thumbnails in `DIR/thumbs/`) describe every job.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .imaging import write_bytes_atomic, write_text_atomic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
STATE_DIR = ".cielr-batch"
RECORDS = "records.jsonl"
THUMB_PX = 256
EditFn = Callable[..., Any]  # (image, instruction, output, llm=..., profile=...) -> EditResult


class BatchUsageError(ValueError):
    """The jobs cannot be read: a missing file, a malformed line, an empty instruction, no images."""


@dataclass(frozen=True)
class Job:
    """One edit: `image` to `output` following `instruction`; `index` is its place in the job list."""

    index: int
    image: str
    instruction: str
    output: str


# ------------------------------------------------------------------------------------------------------ jobs

def jobs_from_jsonl(path: str | Path, out: str | Path) -> list[Job]:
    """The jobs of a JSONL file: one `{"image", "instruction", "output"?}` object a line (blank lines skipped);
    relative paths are relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise BatchUsageError(f"jobs file not found: {path}")
    specs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            specs.append(_parse_line(line, number, path))
    if not specs:
        raise BatchUsageError(f"{path} has no jobs; write one JSON object a line: "
                              '{"image": "photo.jpg", "instruction": "remove the bicycle"}')
    return _with_outputs(specs, Path(out))


def _parse_line(line: str, number: int, path: Path) -> tuple[Path, str, Path | None, str]:
    """(image, instruction, output or None, where) of one JSONL line; `where` names the line in messages."""
    where = f"{path}:{number}"
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BatchUsageError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(item, dict):
        raise BatchUsageError(f"{where}: expected a JSON object with \"image\" and \"instruction\"")
    for key in ("image", "instruction"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            raise BatchUsageError(f"{where}: \"{key}\" must be a non-empty string")
    output = item.get("output")
    if output is not None and (not isinstance(output, str) or not output.strip()):
        raise BatchUsageError(f"{where}: \"output\" must be a non-empty string when given")
    base = path.parent
    return base / item["image"], item["instruction"].strip(), base / output if output else None, where


def jobs_from_folder(folder: str | Path, instruction: str | None, out: str | Path) -> list[Job]:
    """One job per image of a folder (sorted by name), all with the same instruction."""
    folder = Path(folder)
    if not instruction or not instruction.strip():
        raise BatchUsageError("give the instruction for the folder's images with --instruction \"...\"")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise BatchUsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return _with_outputs([(p, instruction.strip(), None, str(p)) for p in images], Path(out))


def _with_outputs(specs: list[tuple[Path, str, Path | None, str]], out: Path) -> list[Job]:
    """Jobs with absolute paths; a job without an output gets `out/<image stem>.png`, suffixed with its index
    when that path is taken (by another job's output or input). Two jobs may not share an output, and no output
    may be an input."""
    inputs = {image.resolve() for image, _, _, _ in specs}
    taken: dict[Path, str] = {}
    for image, _, output, where in specs:
        if output is None:
            continue
        output = output.resolve()
        if output in inputs:
            raise BatchUsageError(f"{where}: the output {output} is an input image; inputs are never overwritten")
        if output in taken:
            raise BatchUsageError(f"{where}: the output {output} is also the output of {taken[output]}")
        taken[output] = where
    jobs = []
    for index, (image, instruction, output, where) in enumerate(specs):
        if output is None:
            output = (out / f"{image.stem}.png").resolve()
            if output in taken or output in inputs:
                output = (out / f"{image.stem}-{index}.png").resolve()
            taken[output] = where
        jobs.append(Job(index, str(image.resolve()), instruction, str(output.resolve())))
    return jobs


# ------------------------------------------------------------------------------------------------- workers

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(job: Job, edit_fn: EditFn, options: dict, worker: str) -> dict:
    """Edit one job and describe the outcome as a record; an exception becomes a failed record, never escapes."""
    t0 = time.perf_counter()
    try:
        result = edit_fn(job.image, job.instruction, job.output, **options)
    except Exception as exc:  # noqa: BLE001 - any failure of one job is recorded; the batch goes on
        return failed_record(job, exc, time.perf_counter() - t0, round(_peak_rss_mb(), 1), worker)
    return {"index": job.index, "image": job.image, "instruction": job.instruction, "status": result.status,
            "output": result.output, "plan": result.summary_json()["plan"],
            "seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(_peak_rss_mb(), 1), "worker": worker}


def failed_record(job: Job, exc: BaseException, seconds: float, peak_rss_mb: float | None, worker: str | None) -> dict:
    """The record of a job whose edit raised `exc`."""
    return {"index": job.index, "image": job.image, "instruction": job.instruction, "status": "failed",
            "error": f"{type(exc).__name__}: {exc}", "seconds": round(seconds, 3), "peak_rss_mb": peak_rss_mb,
            "worker": worker}


class EditWorker:
    """Edits jobs one after another in its process; the models the edits load stay loaded in the process (the
    API caches its LLM and vision backends per process), so only the first job pays for loading them. With
    `cores`, the process runs on those CPU cores only (the LLM sizes its thread pool to them)."""

    def __init__(self, edit_fn: EditFn | None, options: dict, on_ray: bool = False, cores: set[int] | None = None):
        if edit_fn is None:
            from .api import edit as edit_fn
        if cores:
            os.sched_setaffinity(0, cores)
        self.edit_fn = edit_fn
        self.options = options
        self.worker = f"actor:{_actor_id()}" if on_ray else f"pid:{os.getpid()}"

    def run(self, job: Job) -> dict:
        return run_job(job, self.edit_fn, self.options, self.worker)


def _actor_id() -> str:
    import ray

    return ray.get_runtime_context().get_actor_id()


def core_sets(workers: int, per_worker: int | None = None) -> list[set[int] | None]:
    """Disjoint sets of `per_worker` (default: an equal share) of this process's CPU cores, one per worker,
    wrapping around when the cores run out. Each worker's backends otherwise size their thread pools for the
    whole machine (measured on 2 cores, 5 edits: 2 unpinned workers 75 s, 2 workers on a core each 43 s, like
    1 worker). None for each where the OS cannot pin processes."""
    if not hasattr(os, "sched_setaffinity"):
        return [None] * workers
    cores = sorted(os.sched_getaffinity(0))
    per_worker = per_worker or max(1, len(cores) // workers)
    return [{cores[(i * per_worker + j) % len(cores)] for j in range(per_worker)} for i in range(workers)]


def _run_inline(jobs: list[Job], edit_fn: EditFn | None, options: dict) -> Iterator[dict]:
    """The jobs one after another in this process."""
    worker = EditWorker(edit_fn, options)
    for job in jobs:
        yield worker.run(job)


_POOL_WORKER: EditWorker | None = None


def _init_pool_worker(edit_fn: EditFn | None, options: dict, cores) -> None:
    """Make this pool process's worker, on the next core set of the `cores` queue."""
    global _POOL_WORKER
    _POOL_WORKER = EditWorker(edit_fn, options, cores=cores.get())


def _pool_run(job: Job) -> dict:
    assert _POOL_WORKER is not None
    return _POOL_WORKER.run(job)


def _run_pool(jobs: list[Job], workers: int, edit_fn: EditFn | None, options: dict) -> Iterator[dict]:
    """The jobs on `workers` spawned processes (no fork: the parent may hold threads), records as they finish."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    cores = context.SimpleQueue()  # each worker takes its own set of cores
    for core_set in core_sets(workers):
        cores.put(core_set)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_pool_worker,
                               initargs=(edit_fn, options, cores))
    try:
        futures = {pool.submit(_pool_run, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except BrokenProcessPool as exc:  # a worker died (killed for memory?): no job left is run;
                # each is recorded as failed (a rerun retries them)
                yield failed_record(futures[future], exc, 0.0, None, None)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------------------- Ray

def import_ray():
    """The `ray` module, or a MissingDependencyError that says how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report to the internet
    try:
        import ray
    except ImportError as exc:
        from .errors import MissingDependencyError

        raise MissingDependencyError(f"`cielr batch --ray` needs Ray: pip install 'cielr-agent[batch]' ({exc})")
    return ray


def _start_ray(ray, address: str) -> bool:
    """Connect to (or, for "local", start) a Ray cluster; True when this call started it."""
    if ray.is_initialized():
        return False
    if address == "local":
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 object_store_memory=2**30)  # records are small and images go by path: no big object store
        return True
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except ConnectionError as exc:
        raise BatchUsageError(f"no Ray cluster at --ray {address} ({exc}); start one with `ray start --head`, "
                              "or use --ray local") from None
    return True


def _check_local_fits(ray, workers: int, cpus: float, memory: int) -> None:
    """Actors that a local cluster cannot place would wait forever: refuse them with what to change."""
    have = ray.cluster_resources()
    if workers * cpus > have.get("CPU", 0):
        raise BatchUsageError(f"{workers} workers x {cpus:g} CPUs need {workers * cpus:g} CPUs; this machine's Ray "
                              f"has {have.get('CPU', 0):g}: lower --workers or --cpus-per-worker")
    if workers * memory > have.get("memory", 0):
        raise BatchUsageError(f"{workers} workers x {memory / 2**30:g} GB need more than the "
                              f"{have.get('memory', 0) / 2**30:.1f} GB this machine's Ray can give: lower --workers "
                              "or --memory-per-worker")


def _run_ray(jobs: list[Job], address: str, workers: int, cpus: float, memory_gb: float, edit_fn: EditFn | None,
             options: dict) -> Iterator[dict]:
    """The jobs on `workers` Ray actors fed by an ActorPool, records as they finish."""
    ray = import_ray()
    from ray.util import ActorPool

    started = _start_ray(ray, address)
    try:
        memory = int(memory_gb * 2**30)
        if address == "local":
            _check_local_fits(ray, workers, cpus, memory)
        actor = ray.remote(num_cpus=cpus, memory=memory)(EditWorker)
        # on this machine the actors share its cores as they reserved them; elsewhere Ray places them
        cores = core_sets(workers, max(1, int(cpus))) if address == "local" else [None] * workers
        pool = ActorPool([actor.remote(edit_fn, options, on_ray=True, cores=c) for c in cores])
        left = {job.index: job for job in jobs}
        try:
            for record in pool.map_unordered(lambda a, job: a.run.remote(job), jobs):
                del left[record["index"]]
                yield record
        except ray.exceptions.RayError as exc:  # an actor died (killed for memory?): no job left is run;
            for job in left.values():  # each is recorded as failed (a rerun retries them)
                yield failed_record(job, exc, 0.0, None, None)
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------------------------- records

def is_done(record: dict | None) -> bool:
    """A job is done when its edit wrote the output (not for a failed edit or a rejected plan)."""
    return bool(record) and record["status"] != "failed" and bool(record.get("output"))


def read_records(path: str | Path) -> dict[int, dict]:
    """The last record of each job index in a records file; lines that do not parse (a half-written last line
    of an interrupted run) are ignored."""
    records: dict[int, dict] = {}
    path = Path(path)
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            if "status" in record:
                records[int(record["index"])] = record
        except (ValueError, KeyError, TypeError):
            continue
    return records


class RecordLog:
    """Appends records to the records file, one flushed line each."""

    def __init__(self, path: str | Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torn = path.exists() and path.stat().st_size > 0 and _last_byte(path) != b"\n"
        self.file = path.open("a", encoding="utf-8")
        if torn:
            self.file.write("\n")  # end an interrupted run's half-written line: it stays unparseable alone

    def append(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _finished_before(job: Job, record: dict | None) -> bool:
    """True when a previous run did this very job and its output is still there."""
    return (is_done(record) and record.get("image") == job.image and record.get("instruction") == job.instruction
            and record["output"] == job.output and Path(job.output).exists())


# ------------------------------------------------------------------------------------------------------ run

def run_batch(jobs: list[Job], out: str | Path, *, workers: int = 1, ray: str | None = None,
              cpus_per_worker: float = 2, memory_per_worker: float = 3, llm: str | None = None,
              profile: str | None = None, edit_fn: EditFn | None = None, progress: bool = True) -> dict:
    """Run the jobs not done yet, append their records as they finish, write summary.json and gallery.html
    in `out`; return the summary. `edit_fn` defaults to `cielr_agent.api.edit`; `ray` is "local", "auto" or
    a cluster address (None: local worker processes)."""
    if workers < 1:
        raise BatchUsageError("--workers must be at least 1")
    out = Path(out)
    started = time.perf_counter()
    previous = read_records(out / STATE_DIR / RECORDS)
    skipped = {job.index: previous[job.index] for job in jobs if _finished_before(job, previous.get(job.index))}
    todo = [job for job in jobs if job.index not in skipped]
    options = {"llm": llm, "profile": profile}
    if ray:
        records = _run_ray(todo, ray, workers, cpus_per_worker, memory_per_worker, edit_fn, options)
    elif workers > 1:
        records = _run_pool(todo, workers, edit_fn, options)
    else:
        records = _run_inline(todo, edit_fn, options)
    with closing(records):  # ends the worker processes or the Ray cluster, also on an interrupt
        fresh = _collect(records, out / STATE_DIR / RECORDS, len(todo), len(skipped), progress) if todo else []
    final = {**skipped, **{r["index"]: r for r in fresh}}
    summary = _summary([final[job.index] for job in jobs], fresh, time.perf_counter() - started, workers, ray)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(out / "gallery.html", gallery(summary, out))
    return summary


def _collect(records: Iterable[dict], path: Path, total: int, skipped: int, show: bool) -> list[dict]:
    """Append each record as it arrives, with a progress bar on stderr; the records of this run."""
    from tqdm import tqdm

    fresh: list[dict] = []
    counts = {"done": 0, "failed": 0, "skipped": skipped}
    log = RecordLog(path)
    bar = tqdm(total=total, desc="cielr batch", unit="edit", file=sys.stderr, disable=not show, dynamic_ncols=True,
               postfix=counts)
    try:
        for record in records:
            log.append(record)
            fresh.append(record)
            counts["done" if is_done(record) else "failed"] += 1
            bar.set_postfix(counts, refresh=False)
            bar.update(1)
    finally:
        bar.close()
        log.close()
    return fresh


def _summary(records: list[dict], fresh: list[dict], wall: float, workers: int, ray: str | None) -> dict:
    """The summary of a run: counts over all jobs (`records`, one each), speed and memory of this run's edits."""
    from cielr_agent.evals.report import environment

    done_now = [r for r in fresh if is_done(r)]
    peaks: dict[str, float] = {}
    for record in fresh:
        if record["worker"]:
            peaks[record["worker"]] = max(peaks.get(record["worker"], 0.0), record["peak_rss_mb"] or 0.0)
    done = sum(is_done(r) for r in records)
    return {
        "total": len(records),
        "done": done,
        "failed": len(records) - done,
        "skipped": len(records) - len(fresh),
        "ran": len(fresh),
        "statuses": dict(Counter(r["status"] for r in records)),
        "mode": "ray" if ray else "local",
        "ray": ray,
        "workers": workers,
        "wall_seconds": round(wall, 2),
        "edits_per_minute": round(60 * len(done_now) / wall, 3) if done_now else 0.0,
        "median_seconds": round(statistics.median(r["seconds"] for r in done_now), 3) if done_now else None,
        "peak_rss_mb_per_worker": peaks,
        "environment": environment(),
        "records": records,
    }


# ------------------------------------------------------------------------------------------------- gallery

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #ddd;padding:.4em;vertical-align:top}
img{max-width:256px;max-height:256px;display:block}.failed{color:#c22}.ok{color:#282}.na{color:#888}
code{background:#f0f0f0;padding:0 .2em;font-size:.85em}
"""


def thumbnail(image: str | Path, folder: Path) -> str | None:
    """A JPEG thumbnail (at most THUMB_PX px) of an image in `folder`, named by the image's path, size and
    mtime (kept across runs while the image is unchanged); its file name, or None when the image is unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        stat = Path(image).stat()
        key = hashlib.sha1(f"{Path(image).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        name = f"{key}.jpg"
        if not (folder / name).exists():
            with Image.open(image) as im:
                small = ImageOps.exif_transpose(im).convert("RGB")
                small.thumbnail((THUMB_PX, THUMB_PX))
            buffer = io.BytesIO()
            small.save(buffer, format="JPEG", quality=85)
            write_bytes_atomic(folder / name, buffer.getvalue())
        return name
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def gallery(summary: dict, out: Path) -> str:
    """A self-contained page, one row per job: input and output thumbnails, instruction, status, and the plan's
    rationale or the error. Thumbnails go to `out/thumbs/` and are linked relatively."""
    e = html.escape
    rows = []
    for record in summary["records"]:
        cells = []
        for path in (record.get("image"), record.get("output")):
            name = thumbnail(path, out / "thumbs") if path else None
            cells.append(f'<img src="thumbs/{e(name)}" alt="{e(Path(path).name)}" loading="lazy">' if name
                         else '<span class="na">–</span>')
        plan = record.get("plan") or {}
        actions = "".join(f"<br><code>{e(json.dumps(a))}</code>" for a in plan.get("actions", []))
        detail = (f'<span class="failed">{e(record["error"])}</span>' if record.get("error")
                  else f"{e(str(plan.get('rationale') or ''))}{actions}")
        css = "ok" if is_done(record) else "failed"
        rows.append(f"<tr><td>{record['index']}</td><td>{cells[0]}</td><td>{cells[1]}</td>"
                    f"<td>{e(record['instruction'])}</td><td class=\"{css}\">{e(record['status'])}</td>"
                    f"<td>{detail}</td></tr>")
    s = summary
    head = (f"{s['total']} jobs: {s['done']} done, {s['failed']} failed, {s['skipped']} skipped as already done; "
            f"{s['mode']} mode, {s['workers']} worker(s), {s['edits_per_minute']} edits/min in this run")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>cielr batch</title><style>{_CSS}</style>"
            f"</head><body><h1>cielr batch</h1><p>{e(head)}</p><table><tr><th>#</th><th>input</th><th>output</th>"
            f"<th>instruction</th><th>status</th><th>rationale / error</th></tr>{''.join(rows)}</table>"
            f"</body></html>\n")
