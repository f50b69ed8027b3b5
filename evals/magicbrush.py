"""magicbrush: the 20 MagicBrush triplets in the shared data (source, instruction, ground-truth edit).

Each instruction is executed on the source and the output compared with the ground truth by MagicBrush's L1
and L2 (mean absolute / mean squared difference on [0, 1] after resizing the output to the ground truth's
size). When the agent cannot do an instruction (no such object, or an action that needs a generative backend)
its output is the unchanged source. Reported: all cases (failures = unchanged source), edited cases only, and
the no-edit baseline (source vs ground truth). CLIP-I and DINO need pretrained weights and are reported only
when they are on this machine.
"""

from __future__ import annotations

import json
import statistics

from cielr_agent.imaging import load_image

from .harness import run_edit
from .metrics import clip_image_similarity, cost, dino_similarity, l1, l2
from .report import table

NEEDS_LLM = True
GALLERY_FIELDS = ("edited", "l1", "l2", "l1_no_edit")
_FOLDER = "magicbrush_samples"


def cases(ctx) -> list[dict]:
    path = ctx.data / _FOLDER / "metadata.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"MagicBrush samples not found at {path}; pass --data with a {_FOLDER}/ folder")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"id": r["id"], "instruction": r["instruction"], "source": f"{_FOLDER}/{r['source']}",
             "target": f"{_FOLDER}/{r['target']}"} for r in rows][: ctx.limit]


def run_case(case: dict, ctx) -> dict:
    outcome = run_edit(ctx, ctx.data / case["source"], case["instruction"])
    target = load_image(ctx.data / case["target"])
    row = {"plan": outcome.plan_summary(), "edited": outcome.edited,
           "status": outcome.result.status if outcome.result else "failed", "failure": outcome.failure,
           "l1": l1(outcome.output, target), "l2": l2(outcome.output, target),
           "l1_no_edit": l1(outcome.source, target), "l2_no_edit": l2(outcome.source, target)}
    unavailable = {}
    for name, fn in (("clip_i", clip_image_similarity), ("dino", dino_similarity)):
        row[name], reason = fn(outcome.output, target)
        if reason:
            unavailable[name] = reason
    row["unavailable"] = unavailable
    if outcome.result is not None:
        row.update(cost(outcome.result))
    row["gallery"] = ctx.save_gallery(case["id"], input=outcome.source, overlay=outcome.overlay(),
                                      output=outcome.output, ground_truth=target)
    return row


def _means(rows: list[dict], *keys: str) -> dict:
    return {k: round(statistics.fmean(r[k] for r in rows), 4) if rows else None for k in keys}


def summarize(rows: list[dict], ctx) -> dict:
    edited = [r for r in rows if r["edited"]]
    keys = ("l1", "l2", "l1_no_edit", "l2_no_edit")
    reasons: dict[str, int] = {}
    for r in rows:
        if r["failure"]:
            kind = r["failure"].split(":", 1)[0]
            reasons[kind] = reasons.get(kind, 0) + 1
    learned = {k: _means([r for r in rows if r.get(k) is not None], k)[k] for k in ("clip_i", "dino")}
    unavailable = {k: v for r in rows for k, v in r.get("unavailable", {}).items()}
    all_cases = _means(rows, *keys)
    return {
        "all_cases": {"cases": len(rows), **all_cases},
        "edited_only": {"cases": len(edited), **_means(edited, *keys)},
        "not_edited": {"cases": len(rows) - len(edited), "reasons": reasons},
        "learned": learned,
        "unavailable": unavailable,
        "headline": {"l1_all": all_cases["l1"], "l2_all": all_cases["l2"], "edited_cases": len(edited),
                     "l1_edited": _means(edited, "l1")["l1"], "l1_no_edit": all_cases["l1_no_edit"]},
    }


def markdown(summary: dict) -> str:
    a, e = summary["all_cases"], summary["edited_only"]
    unavailable = "".join(f"- {k}: unavailable ({v})\n" for k, v in summary["unavailable"].items())
    learned = "".join(f"- {k}: {v}\n" for k, v in summary["learned"].items() if v is not None)
    return "\n".join([
        "## Distance to the ground-truth edit (lower is better)\n",
        "L1 = mean |output − ground truth|, L2 = mean (output − ground truth)² on [0, 1], output resized to the "
        "ground truth's 512×512 (MagicBrush's `image_eval.py`). The no-edit columns compare the unchanged source "
        "with the ground truth over the same cases.\n",
        table(["cases", "n", "L1", "L2", "L1 no edit", "L2 no edit"],
              [["all (failures = unchanged source)", a["cases"], a["l1"], a["l2"], a["l1_no_edit"], a["l2_no_edit"]],
               ["edited only", e["cases"], e["l1"], e["l2"], e["l1_no_edit"], e["l2_no_edit"]]]),
        f"Not edited: {summary['not_edited']['cases']} "
        f"({', '.join(f'{k}: {v}' for k, v in summary['not_edited']['reasons'].items()) or 'none'}). EditError: "
        "the planned action could not run (replace/add need a generative backend, which the embedded profile "
        "lacks, or a tool failed); TargetNotFoundError: the planner found no object the instruction means; "
        "LLMOutputError: no valid plan. See results.jsonl / the gallery for each message.\n",
        "## Learned metrics\n",
        learned + unavailable or "none computed\n",
    ])
