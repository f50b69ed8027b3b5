"""reasoning-local: the project's implicit instructions (evals/cases/reasoning_local.jsonl) edited for real.

Each case names an image in the shared data folder, an implicit instruction, and the expected action and COCO
label of its target. The edit is executed. Target accuracy: the first planned action has the expected type and
its target the expected label (or the detector gave the chosen object that label as an alternative), and, for
recolor, the expected colour. Background preservation: PSNR/SSIM with the changed region zeroed (∞/1 by
construction: pixels outside the edited objects are copied back), PSNR/SSIM outside the target's own mask as
segmented on the input (finite: the edit region is the mask grown, and the fill spills over), and the fraction
of pixels changed.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from cielr_agent.masks import box_iou

from .harness import run_edit
from .metrics import changed_fraction, cost, outside, percentile
from .report import table

CASES = Path(__file__).parent / "cases" / "reasoning_local.jsonl"
OPEN_CASES = Path(__file__).parent / "cases" / "reasoning_local_open.jsonl"  # targets that are no COCO class
TARGET_IOU = 0.5  # box IoU with the gold box that counts as the right object (cases with `target_box`)
NEEDS_LLM = True
GALLERY_FIELDS = ("correct", "predicted_action", "predicted_label", "psnr_outside_target", "changed_fraction")


def load_cases(path: Path = CASES) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score_case(case: dict, summary: dict, alternatives: tuple[str, ...] = ()) -> dict:
    """Compare a `--json` style summary with the case's expectation.

    `alternatives` are the labels the detector also gave the chosen object ("could also be"): choosing the
    right object under the detector's wrong label counts as the right target.
    """
    actions = summary["plan"]["actions"]
    first = actions[0] if actions else {}
    label = (first.get("target") or {}).get("label")
    action_ok = first.get("type") == case["action"]
    if "target_box" in case:  # open-vocabulary cases: the chosen object is the one in the gold box
        box = (first.get("target") or {}).get("box")
        target_ok = box is not None and box_iou(tuple(box), tuple(case["target_box"])) >= TARGET_IOU
    else:
        target_ok = case["target_label"] in (label, *alternatives)
    color_ok = case["action"] != "recolor" or (first.get("color") or "").lower() == case.get("color", "").lower()
    return {"action_ok": action_ok, "target_ok": target_ok, "color_ok": color_ok,
            "correct": action_ok and target_ok and color_ok, "predicted_label": label,
            "predicted_action": first.get("type")}


def cases(ctx) -> list[dict]:
    return (load_cases() + load_cases(OPEN_CASES))[: ctx.limit]


def run_case(case: dict, ctx) -> dict:
    outcome = run_edit(ctx, ctx.data / case["image"], case["instruction"])
    row: dict = {"plan": outcome.plan_summary()}
    if outcome.result is None:  # no plan, or a plan the profile cannot execute: wrong by definition
        attempted = [m.split(" ", 1)[0].removesuffix("_object") for m in row["plan"].get("attempted", [])]
        row.update(status="failed", failure=outcome.failure, correct=False, action_ok=False, target_ok=False,
                   predicted_action=attempted[0] if attempted else None)
        return row
    result = outcome.result
    target = outcome.target()
    alternatives = tuple(target.alternatives) if target else ()
    scene = result.scenes[1] if len(result.scenes) > 1 else result.scenes[0]
    row.update(score_case(case, result.summary_json(), alternatives), status=result.status,
               alternatives=list(alternatives),
               detected=sorted({label for o in scene.objects for label in (o.label, *o.alternatives)}), **cost(result))
    if "target_box" in case:  # was the gold object in the scene at any point of the chain-of-SSR?
        row["found"] = any(box_iou(o.box, tuple(case["target_box"])) >= TARGET_IOU
                           for s in result.scenes for o in s.objects)
    row["changed_fraction"] = changed_fraction(outcome.source, outcome.output)
    region = outcome.edited_region()
    if region.any():
        bg = outside(outcome.source, outcome.output, region)
        row.update(psnr_outside_edit=bg["psnr"], ssim_outside_edit=bg["ssim"])
    mask = outcome.target_mask(ctx)
    if mask is not None:
        bg = outside(outcome.source, outcome.output, mask)
        row.update(psnr_outside_target=bg["psnr"], ssim_outside_target=bg["ssim"],
                   changed_outside_target=changed_fraction(outcome.source, outcome.output, ~mask),
                   target_area=float(mask.mean()))
    row["gallery"] = ctx.save_gallery(case["id"], input=outcome.source, overlay=outcome.overlay(),
                                      output=outcome.output)
    return row


def _rate(rows: list[dict], key: str = "correct") -> dict:
    n = len(rows)
    return {"cases": n, "correct": sum(bool(r.get(key)) for r in rows),
            "accuracy": round(sum(bool(r.get(key)) for r in rows) / n, 3) if n else None}


def _stats(values: list[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    return {"n": len(values), "infinite": len(values) - len(finite),
            "median": statistics.median(values) if values else None,
            "mean_finite": round(statistics.fmean(finite), 3) if finite else None,
            "min": min(values) if values else None}


def _detected(r: dict) -> bool:
    return bool(r.get("found")) if "target_box" in r else r["target_label"] in r.get("detected", [])


def summarize(rows: list[dict], ctx) -> dict:
    detectable = [r for r in rows if _detected(r)]
    sets = {"coco": [r for r in rows if "target_box" not in r], "open": [r for r in rows if "target_box" in r]}
    executed = [r for r in rows if "changed_fraction" in r]

    def col(key: str) -> list[float]:
        return [r[key] for r in executed if key in r]

    totals = [r["timings"]["total"] for r in executed]
    overall = _rate(rows)
    # strict: the chosen object's own label must be the expected one ("could also be" labels do not count)
    strict = _rate([{"correct": r.get("correct") and r.get("predicted_label") == r["target_label"]} for r in rows])
    background = {k: _stats(col(k)) for k in ("psnr_outside_edit", "ssim_outside_edit", "psnr_outside_target",
                                              "ssim_outside_target", "changed_fraction", "changed_outside_target")}
    return {
        "overall": overall,
        "strict": strict,
        "action_accuracy": _rate(rows, "action_ok")["accuracy"],
        "target_accuracy": _rate(rows, "target_ok")["accuracy"],
        "when_target_detected": _rate(detectable),
        "by_set": {k: {**_rate(v), "target_found": _rate([{"correct": _detected(r)} for r in v])["accuracy"],
                       "when_target_found": _rate([r for r in v if _detected(r)])["accuracy"]}
                   for k, v in sets.items() if v},
        "by_action": {a: _rate([r for r in rows if r["action"] == a]) for a in ("remove", "recolor")},
        "by_difficulty": {d: _rate([r for r in rows if r.get("difficulty") == d])
                          for d in sorted({r.get("difficulty") for r in rows if r.get("difficulty")})},
        "failed": {"count": sum(r.get("status") == "failed" for r in rows),
                   "reasons": sorted({r["failure"].split(":", 1)[0] for r in rows if r.get("failure")})},
        "background": background,
        "cost": {"median_total_s": statistics.median(totals) if totals else None, "p90_total_s": percentile(totals, 90),
                 "median_llm_s": statistics.median(r["timings"]["llm"] for r in executed) if executed else None,
                 "llm_calls_mean": round(statistics.fmean(r["llm_calls"] for r in executed), 2) if executed else None,
                 "input_tokens_mean": round(statistics.fmean(r["input_tokens"] for r in executed)) if executed else None,
                 "output_tokens_mean": round(statistics.fmean(r["output_tokens"] for r in executed)) if executed else None,
                 "peak_rss_mb": max((r["peak_rss_mb"] for r in executed if r.get("peak_rss_mb")), default=None)},
        "headline": {"accuracy": overall["accuracy"], "strict_accuracy": strict["accuracy"],
                     "accuracy_when_target_detected": _rate(detectable)["accuracy"],
                     "psnr_outside_edit_min": background["psnr_outside_edit"]["min"],
                     "psnr_outside_target_median": background["psnr_outside_target"]["median"],
                     "changed_fraction_median": background["changed_fraction"]["median"],
                     "median_total_s": statistics.median(totals) if totals else None},
    }


def markdown(summary: dict) -> str:
    o, d, bg, c = summary["overall"], summary["when_target_detected"], summary["background"], summary["cost"]
    st = summary["strict"]
    acc = [["all", o["cases"], o["correct"], o["accuracy"]],
           ["all, strict (the object's own label)", st["cases"], st["correct"], st["accuracy"]],
           ["target detected", d["cases"], d["correct"], d["accuracy"]]]
    acc += [[f"{k} targets ({'COCO labels' if k == 'coco' else 'not COCO, scored by box'}); target in the scene "
             f"{v['target_found']}, accuracy then {v['when_target_found']}", v["cases"], v["correct"], v["accuracy"]]
            for k, v in summary.get("by_set", {}).items()]
    acc += [[f"action {k}", v["cases"], v["correct"], v["accuracy"]] for k, v in summary["by_action"].items()]
    acc += [[f"{k}", v["cases"], v["correct"], v["accuracy"]] for k, v in summary["by_difficulty"].items()]
    return "\n".join([
        "## Target accuracy\n",
        "Correct = first planned action has the expected type, its target the expected COCO label (or the detector "
        "gave that object the label as an alternative), and for recolor the expected colour. *Strict* does not "
        "accept alternatives: where the detector lists the right label only as an alternative of another object "
        "(e.g. a horse detected as \"sheep, could also be cow, horse or dog\"), choosing that object is not "
        "counted.\n",
        table(["subset", "cases", "correct", "accuracy"], acc),
        f"Action type right: {summary['action_accuracy']}; target right: {summary['target_accuracy']}. "
        f"Cases where the agent made no edit (no plan, or an action this profile cannot execute): "
        f"{summary['failed']['count']} ({', '.join(summary['failed']['reasons']) or 'none'}).\n",
        "## Background preservation (executed edits)\n",
        "Native resolution, [0, 1] data. *Outside edit*: the pixels the actions changed are zeroed in both images "
        "(∞ / 1 is the bit-exact guarantee). *Outside target*: the planned target's mask as segmented on the input "
        "is zeroed (finite: the edit region is that mask grown by `mask_dilation`, and the fill may spill over).\n",
        table(["metric", "cases", "infinite", "median", "mean of finite", "min"],
              [[k, v["n"], v["infinite"], v["median"], v["mean_finite"], v["min"]] for k, v in bg.items()]),
        "## Cost\n",
        table(["median s / edit", "p90 s", "median LLM s", "LLM calls", "prompt tokens", "generated tokens",
               "peak RSS (MB, process)"],
              [[c["median_total_s"], c["p90_total_s"], c["median_llm_s"], c["llm_calls_mean"], c["input_tokens_mean"],
                c["output_tokens_mean"], c["peak_rss_mb"]]]),
    ])
