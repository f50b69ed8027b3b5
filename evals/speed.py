"""speed: latency breakdown, LLM tokens and peak memory of a fixed set of edits on the shared photos at 512 px.

Each photo is resized (Lanczos) to a longest side of 512 px and written as PNG first; the edit reads that file.
All edits run in one process after one warm-up edit that loads every model, so the per-stage times are those of
a long-lived process. Peak memory per case is the process's peak resident set during that case: the kernel's
high-water mark (VmHWM) is reset before the case through /proc/self/clear_refs and read after it; it includes the
models already resident. Where that reset is not possible, the process lifetime peak (getrusage) is reported and
marked so.

After the warm-up, the reference time of the run's own llama.cpp model is measured (a fixed 1,000-token prompt
from an empty KV cache, then 48 generated tokens; the faster of two runs). An edit's wall time divided by it is a
ratio that compares across machines. With `--cold`, the README edit also runs as a fresh `cielr edit` process
(case `cold-start`): its wall time and peak RSS, the median of three runs.
"""
from __future__ import annotations

import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
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
COLD_ID = "cold-start"
COLD_RUNS = 3  # this machine is shared and noisy: the median of three fresh processes is reported
COLD = ("examples/dog.jpg", "Remove the vehicle in the foreground that has no engine")  # the README's edit
REPO = Path(__file__).resolve().parents[1]
GALLERY_FIELDS = ("total_s", "ratio", "peak_rss_case_mb", "wall_s")
REFERENCE_TEXT = (
    "The old lighthouse stood at the end of a narrow stone pier, its white paint peeling in long strips after "
    "decades of salt wind. Every evening the keeper climbed the spiral stairs, trimmed the wick, polished the "
    "great lens and wrote the weather into a leather book: the direction of the wind, the height of the waves, "
    "the ships that passed and the hour the fog came in from the sea. "
)
REFERENCE_PROMPT, REFERENCE_GENERATE, REFERENCE_RUNS = 1000, 48, 2
_MEASURE = ("import json, resource, subprocess, sys, time; t0 = time.perf_counter(); "
            "code = subprocess.call(sys.argv[2:]); wall = time.perf_counter() - t0; "
            "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss; "
            "open(sys.argv[1], 'w').write(json.dumps([code, wall, peak]))")  # run_measured's go-between


def cases(ctx) -> list[dict]:
    edits = [{"id": i, "image": img, "instruction": text} for i, img, text in EDITS][: ctx.limit]
    return edits + ([{"id": COLD_ID, "image": COLD[0], "instruction": COLD[1]}] if ctx.cold else [])


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
    """One warm-up edit that loads every model, then the LLM's reference time (`reference.json`)."""
    t0 = time.perf_counter()
    outcome = run_edit(ctx, resized_input(ctx, WARMUP[0]), WARMUP[1])
    info = {"instruction": WARMUP[1], "image": WARMUP[0], "seconds": round(time.perf_counter() - t0, 2),
            "failure": outcome.failure, "peak_rss_mb": round(peak_rss_mb(), 1)}
    if outcome.result is not None:
        info["timings"] = cost(outcome.result)["timings"]
    (ctx.out / "warmup.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (ctx.out / "reference.json").write_text(json.dumps(reference(ctx.model), indent=2) + "\n", encoding="utf-8")


def reference(model) -> dict:
    """The reference measurement of the run's chat model; `seconds` None and a `reason` when it has none."""
    from cielr_agent.llm import ChatLlamaCpp, load_llama

    if not isinstance(model, ChatLlamaCpp):
        return {"seconds": None, "reason": f"the LLM ({type(model).__name__}) does not run in llama.cpp in this "
                                           "process, so it has no reference time"}
    llama, lock = load_llama(model.model_path, model.n_ctx, model.n_threads, seed=model.seed)
    return {"model": Path(model.model_path).name, **measure_reference(llama, lock)}


def measure_reference(llama, lock) -> dict:
    """Seconds for a `llama_cpp.Llama` to evaluate a fixed 1,000-token prompt from an empty KV cache and generate
    48 tokens greedily (EOS suppressed): the faster of two runs. Its prompt cache is set aside meanwhile."""
    tokens = llama.tokenize((REFERENCE_TEXT * 40).encode())[:REFERENCE_PROMPT]
    if len(tokens) < REFERENCE_PROMPT:
        raise ValueError(f"the reference text gives only {len(tokens)} tokens")
    runs = []
    with lock:
        saved = llama.cache
        llama.set_cache(None)
        try:
            for _ in range(REFERENCE_RUNS):
                llama.reset()  # evaluation restarts at position 0: nothing in the KV cache is reused
                t0 = time.perf_counter()
                out = llama.create_completion(tokens, max_tokens=REFERENCE_GENERATE, temperature=0.0, stop=[],
                                              logit_bias={llama.token_eos(): float("-inf")})
                runs.append((time.perf_counter() - t0, out["usage"]["completion_tokens"]))
        finally:
            llama.set_cache(saved)
    return {"seconds": round(min(t for t, _ in runs), 3), "runs_s": [round(t, 3) for t, _ in runs],
            "prompt_tokens": len(tokens), "generated_tokens": min(n for _, n in runs)}


def cold_start(ctx) -> dict:
    """The README edit as a fresh `cielr edit --json` process with the run's --llm, --profile and --prompt-set."""
    if ctx.overrides:
        raise RuntimeError(f"agent overrides {sorted(ctx.overrides)} cannot be passed to `cielr edit`")
    output = ctx.out / "outputs" / "cold.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cielr_agent.cli", "edit", str(REPO / COLD[0]), COLD[1], "-o", str(output),
           "--json", "--llm", ctx.llm]
    cmd += ["--profile", str(ctx.profile)] if ctx.profile else []
    cmd += ["--prompt-set", ctx.prompt_set] if ctx.prompt_set else []
    log = ctx.out / "cold.log"
    runs = []
    for _ in range(COLD_RUNS):
        with open(log, "wb") as err, open(ctx.out / "cold.json", "w+b") as out:
            code, wall, peak = run_measured(cmd, stdout=out, stderr=err)
            out.seek(0)
            printed = out.read().decode()
        if code != 0:
            raise RuntimeError(f"exit status {code}: {log.read_text(errors='replace')[-500:]}")
        runs.append((wall, peak, json.loads(printed.strip().splitlines()[-1])))
    wall, peak, reply = sorted(runs, key=lambda r: r[0])[len(runs) // 2]  # the median run
    return {"command": shlex.join(cmd), "wall_s": round(wall, 2), "peak_rss_mb": round(peak, 1),
            "status": reply["status"], "timings": reply["timings"],
            "startup_s": round(wall - reply["timings"]["total"], 2),
            "runs_wall_s": [round(r[0], 2) for r in runs], "max_peak_rss_mb": round(max(r[1] for r in runs), 1)}


def run_measured(cmd: list[str], **popen) -> tuple[int, float, float]:
    """Run a command to its end: (exit code, wall seconds, peak RSS in MB).

    A child's ru_maxrss also counts the memory of the process it was forked from (up to its exec), and this one
    holds every model: a small Python process runs the command and reports its child's peak (RUSAGE_CHILDREN)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rusage.json"
        subprocess.run([sys.executable, "-c", _MEASURE, str(report), *cmd], check=True, **popen)
        code, wall, peak_kib = json.loads(report.read_text(encoding="utf-8"))
    return code, wall, peak_kib / 1024  # Linux: KiB


def run_case(case: dict, ctx) -> dict:
    if case["id"] == COLD_ID:
        return cold_start(ctx)
    path = resized_input(ctx, case["image"])
    ref = json.loads((ctx.out / "reference.json").read_text(encoding="utf-8"))["seconds"]  # this session's
    load = os.getloadavg()[0]  # other processes on the machine slow every stage down
    was_reset = reset_peak_rss()
    outcome = run_edit(ctx, path, case["instruction"])
    peak = peak_rss_mb()
    if outcome.result is None:
        raise RuntimeError(f"the timed edit did not run through: {outcome.failure}")
    c = cost(outcome.result)
    total = c["timings"]["total"]
    row = {"size": list(outcome.source.shape[1::-1]), "status": outcome.result.status, "plan": outcome.plan_summary(),
           **c, "other_s": round(total - sum(c["timings"][s] for s in STAGES), 3), "total_s": total,
           "reference_s": ref, "ratio": round(total / ref, 2) if ref else None,
           "load_avg_1m": round(load, 2), "peak_rss_case_mb": round(peak, 1),
           "peak_rss_method": "VmHWM reset per case" if was_reset else "process lifetime peak (getrusage)"}
    row["gallery"] = ctx.save_gallery(case["id"], input=outcome.source, overlay=outcome.overlay(),
                                      output=outcome.output)
    return row


def _dist(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3) if values else None,
            "p90": round(percentile(values, 90), 3) if values else None}


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _per_edit(row: dict) -> dict:
    """One edit's line of the report; each LLM call as [node, new, reused, generated tokens, seconds]."""
    t = row["timings"]
    return {"id": row["id"], "size": row["size"], "total_s": row["total_s"], "ratio": row.get("ratio"),
            "perceive_s": t["perceive"], "perception_tools_s": t["perception_tools"], "llm_s": t["llm"],
            "calls": [[c["node"], c["new_tokens"], c["reused_tokens"], c["generated_tokens"], c["seconds"]]
                      for c in row.get("calls", [])],
            "execute_s": t["execute"], "verify_s": t["verify"], "peak_rss_mb": row["peak_rss_case_mb"]}


def _by_node(rows: list[dict]) -> dict:
    """Per LLM node: its calls' new / reused / generated tokens and seconds."""
    calls: dict[str, list[dict]] = {}
    for row in rows:
        for call in row.get("calls", []):
            calls.setdefault(call["node"], []).append(call)
    return {node: {"calls": len(mine), **{k: _dist([c[k] for c in mine])
                                          for k in ("new_tokens", "reused_tokens", "generated_tokens", "seconds")}}
            for node, mine in calls.items()}


def summarize(rows: list[dict], ctx) -> dict:
    cold = next((r for r in rows if r["id"] == COLD_ID), None)
    rows = [r for r in rows if r["id"] != COLD_ID]
    stages = {s: _dist([r["timings"][s] for r in rows]) for s in (*STAGES, "total")}
    stages["perception"] = _dist([r["timings"]["perceive"] + r["timings"]["perception_tools"] for r in rows])
    stages["other"] = _dist([r["other_s"] for r in rows])
    peaks = [r["peak_rss_case_mb"] for r in rows]
    ratio = _dist([r["ratio"] for r in rows if r.get("ratio") is not None])
    ref = _read_json(ctx.out / "reference.json") or {"seconds": None, "reason": "no reference was measured"}
    if cold:
        cold = {k: cold[k] for k in ("command", "wall_s", "peak_rss_mb", "status", "timings", "startup_s",
                                     "runs_wall_s", "max_peak_rss_mb") if k in cold}
    return {
        "edits": len(rows),
        "per_edit": [_per_edit(r) for r in rows],
        "stages_s": stages,
        "llm_calls": _dist([r["llm_calls"] for r in rows]),
        "tokens_per_edit": {k: _dist([r.get(f"{k}_tokens", 0) for r in rows])
                            for k in ("input", "new", "reused", "output")},
        "llm_calls_by_node": _by_node(rows),
        "reference": ref,
        "ratio": ratio,
        "peak_rss_case_mb": {"median": statistics.median(peaks) if peaks else None, "max": max(peaks, default=None),
                             "method": sorted({r["peak_rss_method"] for r in rows})},
        "load_avg_1m": _dist([r["load_avg_1m"] for r in rows if "load_avg_1m" in r]),
        "warmup": _read_json(ctx.out / "warmup.json"),
        "cold_start": cold,
        "headline": {"total_median_s": stages["total"]["median"], "total_p90_s": stages["total"]["p90"],
                     "llm_median_s": stages["llm"]["median"], "peak_rss_max_mb": max(peaks, default=None),
                     "ratio_median": ratio["median"], "ratio_p90": ratio["p90"], "reference_s": ref["seconds"],
                     "cold_wall_s": cold["wall_s"] if cold else None,
                     "cold_peak_rss_mb": cold["peak_rss_mb"] if cold else None,
                     "perceive_median_s": stages["perceive"]["median"]},
    }


def _calls_text(calls: list[list]) -> str:
    return "; ".join(f"{node} {new}+{reused}→{gen} {s:.1f}s" for node, new, reused, gen, s in calls)


def markdown(summary: dict) -> str:
    s, ref, ratio = summary["stages_s"], summary["reference"], summary["ratio"]
    names = {"load_image": "load", "perceive": "perceive", "perception_tools": "perception_tools",
             "perception": "perception (perceive + tools)", "llm": "llm", "execute": "execute", "verify": "verify",
             "other": "other (graph, bookkeeping)", "total": "total"}
    tokens = summary["tokens_per_edit"]
    parts = [
        f"## Edits ({summary['edits']} at {SIDE} px, warm process)\n",
        "LLM calls: node, new + reused prompt tokens → generated tokens, seconds (reused: KV state kept from an "
        "earlier call, not evaluated again).\n",
        table(["case", "size", "total s", "ratio", "perceive s", "tools s", "LLM s", "LLM calls", "execute s",
               "verify s", "peak RSS MB"],
              [[e["id"], "×".join(map(str, e["size"])), e["total_s"], e["ratio"], e["perceive_s"],
                e["perception_tools_s"], e["llm_s"], _calls_text(e["calls"]), e["execute_s"], e["verify_s"],
                e["peak_rss_mb"]] for e in summary["per_edit"]]),
        "## Reference and ratio\n",
        (f"Reference: `{ref['model']}` evaluates a fixed {ref['prompt_tokens']}-token prompt from an empty KV cache "
         f"and generates {ref['generated_tokens']} tokens in **{ref['seconds']} s** (the faster of "
         f"{', '.join(map(str, ref['runs_s']))} s), measured in this process after the warm-up. Ratio = edit wall "
         f"time ÷ reference: median **{ratio['median']}**, p90 {ratio['p90']}.\n" if ref["seconds"] else
         f"Ratio unavailable: {ref['reason']}.\n"),
        "## Latency per stage\n",
        table(["stage", "median s", "p90 s"], [[names[k], s[k]["median"], s[k]["p90"]] for k in names]),
        f"The machine's 1-minute load average at the start of each edit: median {summary['load_avg_1m']['median']}, "
        f"p90 {summary['load_avg_1m']['p90']} (on {os.cpu_count()} cores; above that, other processes were "
        "competing for the CPU and every stage is slower).\n",
        table(["per edit", "median", "p90"],
              [["LLM calls", summary["llm_calls"]["median"], summary["llm_calls"]["p90"]]]
              + [[label, tokens[k]["median"], tokens[k]["p90"]] for k, label in
                 (("input", "prompt tokens"), ("new", "new prompt tokens"), ("reused", "reused prompt tokens"),
                  ("output", "generated tokens"))]),
        table(["LLM node", "calls", "new tokens median", "reused median", "generated median", "s median", "s p90"],
              [[node, n["calls"], n["new_tokens"]["median"], n["reused_tokens"]["median"],
                n["generated_tokens"]["median"], n["seconds"]["median"], n["seconds"]["p90"]]
               for node, n in summary["llm_calls_by_node"].items()]),
        "## Memory\n",
        f"Peak resident set per edit: median {summary['peak_rss_case_mb']['median']} MB, max "
        f"{summary['peak_rss_case_mb']['max']} MB ({', '.join(summary['peak_rss_case_mb']['method'])}; the models "
        "stay resident between edits, so this is the process's footprint while the edit runs).\n",
        "## Cold start\n",
    ]
    cold, warm = summary["cold_start"], summary["warmup"]
    if cold:
        runs = (f" (median of {len(cold['runs_wall_s'])} fresh processes: {', '.join(map(str, cold['runs_wall_s']))} s;"
                f" highest peak {cold['max_peak_rss_mb']} MB)") if cold.get("runs_wall_s") else ""
        parts += [f"`cielr edit examples/dog.jpg \"{COLD[1]}\" --json` as a fresh process: **{cold['wall_s']} s** "
                  f"wall, peak RSS **{cold['peak_rss_mb']} MB**{runs}, status {cold['status']}; {cold['startup_s']} s "
                  "of the wall time are outside the edit's own `total` (interpreter start, imports).\n",
                  table(["stage (the CLI's --json timings)", "s"], [[k, v] for k, v in cold["timings"].items()])]
    else:
        parts.append("Not measured (run with `--cold`).\n")
    if warm:
        parts.append(f"In-process warm-up (\"{warm['instruction']}\" on {warm['image']} at {SIDE} px, loading every "
                     f"model): {warm['seconds']} s; peak RSS after it {warm['peak_rss_mb']} MB.\n")
    return "\n".join(parts)
