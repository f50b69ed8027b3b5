"""speed: latency breakdown and peak memory of a fixed set of edits on the shared photos at 512 px.

Each photo is resized (Lanczos) to a longest side of 512 px and written as PNG first; the edit reads that file.
All edits run in one process after one warm-up edit (model loading is reported apart, as the cold start), so
the per-stage times are those of a long-lived process. Peak memory per case is the process's peak resident set
during that case: the kernel's high-water mark (VmHWM) is reset before the case through /proc/self/clear_refs
and read after it; it includes the models already resident. Where that reset is not possible, the process
lifetime peak (getrusage) is reported and marked so.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cielr_agent.imaging import save_image_atomic

from .harness import run_edit, safe_name
from .metrics import STAGES, cost, percentile
from .report import table

NEEDS_LLM = True
SIDE = 512
EDITS = [
    ("dog-remove-bicycle", "photos/dog.jpg", "Remove the bicycle"),
    ("dog-recolor-dog", "photos/dog.jpg", "Make the dog purple"),
    ("horses-remove-horse", "photos/horses.jpg", "Remove the horse on the far left"),
    ("person-remove-dog", "photos/person.jpg", "Remove the dog"),
    ("giraffe-recolor-zebra", "photos/giraffe.jpg", "Paint the zebra red"),
    ("eagle-recolor-bird", "photos/eagle.jpg", "Make the bird blue"),
    ("kite-remove-kite", "photos/kite.jpg", "Remove the kite"),
]
WARMUP = ("photos/dog.jpg", "Remove the truck")
GALLERY_FIELDS = ("total_s", "peak_rss_case_mb")


def cases(ctx) -> list[dict]:
    return [{"id": i, "image": img, "instruction": text} for i, img, text in EDITS][: ctx.limit]


def resized_input(ctx, image: str) -> Path:
    """The photo scaled (Lanczos) to a longest side of 512 px, as a PNG under `<out>/inputs/` (written once)."""
    path = ctx.out / "inputs" / f"{safe_name(Path(image).stem)}_{SIDE}.png"
    if not path.exists():
        im = Image.open(ctx.data / image).convert("RGB")
        scale = SIDE / max(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
        save_image_atomic(np.asarray(im), path)
    return path


def reset_peak_rss() -> bool:
    """Reset this process's resident-set high-water mark (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """VmHWM of this process in MB (Linux), else the lifetime peak from getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(ctx) -> None:
    """One warm-up edit: loads every model once; its time is the cold start."""
    t0 = time.perf_counter()
    outcome = run_edit(ctx, resized_input(ctx, WARMUP[0]), WARMUP[1])
    info = {"instruction": WARMUP[1], "image": WARMUP[0], "seconds": round(time.perf_counter() - t0, 2),
            "failure": outcome.failure, "peak_rss_mb": round(peak_rss_mb(), 1)}
    if outcome.result is not None:
        info["timings"] = cost(outcome.result)["timings"]
    (ctx.out / "warmup.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def run_case(case: dict, ctx) -> dict:
    path = resized_input(ctx, case["image"])
    load = os.getloadavg()[0]  # other processes on the machine slow every stage down
    was_reset = reset_peak_rss()
    outcome = run_edit(ctx, path, case["instruction"])
    peak = peak_rss_mb()
    if outcome.result is None:
        raise RuntimeError(f"the timed edit did not run through: {outcome.failure}")
    c = cost(outcome.result)
    stages = sum(c["timings"][s] for s in STAGES)
    row = {"size": list(outcome.source.shape[1::-1]), "status": outcome.result.status, "plan": outcome.plan_summary(),
           **c, "other_s": round(c["timings"]["total"] - stages, 3), "total_s": c["timings"]["total"],
           "load_avg_1m": round(load, 2), "peak_rss_case_mb": round(peak, 1),
           "peak_rss_method": "VmHWM reset per case" if was_reset else "process lifetime peak (getrusage)"}
    row["gallery"] = ctx.save_gallery(case["id"], input=outcome.source, overlay=outcome.overlay(),
                                      output=outcome.output)
    return row


def _dist(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3) if values else None,
            "p90": round(percentile(values, 90), 3) if values else None}


def summarize(rows: list[dict], ctx) -> dict:
    warmup_path = ctx.out / "warmup.json"
    stages = {s: _dist([r["timings"][s] for r in rows]) for s in (*STAGES, "total")}
    stages["other"] = _dist([r["other_s"] for r in rows])
    peaks = [r["peak_rss_case_mb"] for r in rows]
    return {
        "edits": len(rows),
        "stages_s": stages,
        "llm_calls": _dist([r["llm_calls"] for r in rows]),
        "input_tokens": _dist([r["input_tokens"] for r in rows]),
        "output_tokens": _dist([r["output_tokens"] for r in rows]),
        "peak_rss_case_mb": {"median": statistics.median(peaks) if peaks else None, "max": max(peaks, default=None),
                             "method": sorted({r["peak_rss_method"] for r in rows})},
        "load_avg_1m": _dist([r["load_avg_1m"] for r in rows if "load_avg_1m" in r]),
        "cold_start": json.loads(warmup_path.read_text(encoding="utf-8")) if warmup_path.exists() else None,
        "headline": {"total_median_s": stages["total"]["median"], "total_p90_s": stages["total"]["p90"],
                     "llm_median_s": stages["llm"]["median"], "peak_rss_max_mb": max(peaks, default=None)},
    }


def markdown(summary: dict) -> str:
    s = summary["stages_s"]
    cold = summary["cold_start"]
    names = {"load_image": "load", "perceive": "perceive", "llm": "llm", "perception_tools": "perception_tools",
             "execute": "execute", "verify": "verify", "other": "other (graph, bookkeeping)", "total": "total"}
    return "\n".join([
        f"## Latency per edit ({summary['edits']} edits at {SIDE} px, warm process)\n",
        table(["stage", "median s", "p90 s"], [[names[k], v["median"], v["p90"]] for k, v in
                                               ((k, s[k]) for k in names)]),
        f"The machine's 1-minute load average at the start of each edit: median {summary['load_avg_1m']['median']}, "
        f"p90 {summary['load_avg_1m']['p90']} (on {os.cpu_count()} cores; above that, other processes were "
        "competing for the CPU and every stage is slower).\n",
        table(["", "median", "p90"], [["LLM calls", summary["llm_calls"]["median"], summary["llm_calls"]["p90"]],
                                      ["prompt tokens", summary["input_tokens"]["median"], summary["input_tokens"]["p90"]],
                                      ["generated tokens", summary["output_tokens"]["median"],
                                       summary["output_tokens"]["p90"]]]),
        "## Memory\n",
        f"Peak resident set per edit: median {summary['peak_rss_case_mb']['median']} MB, max "
        f"{summary['peak_rss_case_mb']['max']} MB ({', '.join(summary['peak_rss_case_mb']['method'])}; the models "
        "stay resident between edits, so this is the process's footprint while the edit runs).\n",
        "## Cold start\n",
        (f"The warm-up edit (\"{cold['instruction']}\" on {cold['image']} at {SIDE} px, loading every model) took "
         f"{cold['seconds']} s; peak RSS after it {cold['peak_rss_mb']} MB.\n" if cold else "no warm-up recorded\n"),
    ])
