"""reason-edit: SmartEdit's Reason-Edit benchmark protocol on a folder in its layout.

Layout (as SmartEdit's `test/metrics_evaluation.py` reads it): subset folders `1-Left-Right`, `2-Relative-Size`,
`3-Mirror`, `4-Color`, `5-Multiple-Objects`, `6-Reasoning`, each holding input images `*.png`, ground-truth
edit masks `*_mask.jpg` (white = the region to edit) and one text file (`Left_Right_text.txt`, `Size_text.txt`,
`Mirror_text.txt`, `Color_text.txt`, `MultipleObjects_text.txt`, `Reason_test.txt`) with one line per image,
`<instruction> CLIP: <text describing the edited region>`. Images, masks and lines pair up in sorted file-name
order. `--data` is the benchmark folder (or one subset folder).

Metrics per case: background preservation by the protocol (256×256, edited region zeroed by the ground-truth
mask, PSNR / SSIM / MSE / LPIPS on the whole frame), CLIP score of the mask's box (when CLIP ViT-L/14 weights
are on this machine), and grounding: IoU of the planned target's mask, of its box, and of the changed pixels
with the ground-truth mask. When the agent cannot carry out the instruction, the output is the unchanged
source; such cases are reported apart (their background metrics are perfect by definition).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from cielr_agent.masks import box_of

from .harness import draw_mask_outline, run_edit
from .metrics import cost, iou_box, iou_mask, reason_edit_background, resize_to
from .report import table

NEEDS_LLM = True
TEXT_FILES = {
    "1-Left-Right": "Left_Right_text.txt",
    "2-Relative-Size": "Size_text.txt",
    "3-Mirror": "Mirror_text.txt",
    "4-Color": "Color_text.txt",
    "5-Multiple-Objects": "MultipleObjects_text.txt",
    "6-Reasoning": "Reason_test.txt",
}
GALLERY_FIELDS = ("edited", "psnr", "ssim", "target_iou", "box_iou")


def parse_line(line: str) -> tuple[str, str | None]:
    """"<instruction> CLIP: <text>" -> (instruction, text); a line without "CLIP: " has no text."""
    instruction, sep, text = line.partition("CLIP: ")
    return instruction.rstrip(), (text.strip() if sep else None)


def _text_file(folder: Path) -> Path | None:
    known = folder / TEXT_FILES.get(folder.name, "")
    if known.is_file():
        return known
    texts = sorted(folder.glob("*.txt"))
    return texts[0] if len(texts) == 1 else None


def load_subset(folder: Path) -> list[dict]:
    """The cases of one subset folder, paired in sorted file-name order as upstream does."""
    images = sorted(folder.glob("*.png"))
    masks = sorted(folder.glob("*_mask.jpg"))
    text = _text_file(folder)
    if text is None:
        raise FileNotFoundError(f"{folder}: no prompt file ({TEXT_FILES.get(folder.name, 'one *.txt file')})")
    lines = [ln for ln in text.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not (len(images) == len(masks) == len(lines)):
        raise ValueError(f"{folder}: {len(images)} *.png images, {len(masks)} *_mask.jpg masks and {len(lines)} "
                         f"lines in {text.name}; they must pair up one to one")
    cases = []
    for image, mask, line in zip(images, masks, lines):
        instruction, clip_text = parse_line(line)
        cases.append({"id": f"{folder.name}/{image.stem}", "subset": folder.name, "image": str(image),
                      "mask": str(mask), "instruction": instruction, "clip_text": clip_text})
    return cases


def load_benchmark(root: Path) -> list[dict]:
    """Every subset under `root` (or `root` itself when it is a subset folder)."""
    if _text_file(root) is not None and any(root.glob("*.png")):
        return load_subset(root)
    subsets = [d for d in sorted(root.iterdir()) if d.is_dir() and _text_file(d) is not None] if root.is_dir() else []
    if not subsets:
        raise FileNotFoundError(f"no Reason-Edit subset folders ({', '.join(TEXT_FILES)}) under {root}; pass "
                                "--data PATH to the benchmark (a synthetic one is in tests/fixtures/reason_edit)")
    return [case for d in subsets for case in load_subset(d)]


def cases(ctx) -> list[dict]:
    return load_benchmark(Path(ctx.data))[: ctx.limit]


def run_case(case: dict, ctx) -> dict:
    outcome = run_edit(ctx, case["image"], case["instruction"])
    h, w = outcome.source.shape[:2]
    mask = np.asarray(Image.open(case["mask"]).convert("L"))
    protocol = reason_edit_background(outcome.source, outcome.output, mask, text=case["clip_text"])
    gt = resize_to(mask, w, h, Image.Resampling.NEAREST) > 127
    row = {"plan": outcome.plan_summary(), "edited": outcome.edited, "failure": outcome.failure,
           "status": outcome.result.status if outcome.result else "failed", **protocol}
    target = outcome.target()
    if target is not None:
        row["target_label"] = target.label
        row["box_iou"] = iou_box(target.box, box_of(gt)) if gt.any() else None
        row["target_iou"] = iou_mask(outcome.target_mask(ctx), gt)
    if outcome.edited:
        row["edit_region_iou"] = iou_mask(outcome.edited_region(), gt)
        row["output"] = ctx.save_output(case["id"], outcome.output)
    if outcome.result is not None:
        row.update(cost(outcome.result))
    overlay = outcome.overlay()
    row["gallery"] = ctx.save_gallery(case["id"], input=outcome.source,
                                      overlay=draw_mask_outline(overlay if overlay is not None else outcome.source, gt),
                                      output=outcome.output)
    return row


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    finite = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    return math.inf if len(finite) < len(values) else round(statistics.fmean(finite), 6)


def _block(rows: list[dict]) -> dict:
    keys = ("psnr", "ssim", "mse", "lpips", "clip_score", "target_iou", "box_iou", "edit_region_iou")
    return {"cases": len(rows), "edited": sum(r["edited"] for r in rows), **{k: _mean(rows, k) for k in keys}}


def summarize(rows: list[dict], ctx) -> dict:
    edited = [r for r in rows if r["edited"]]
    subsets = sorted({r["subset"] for r in rows})
    overall = _block(rows)
    return {
        "all_cases": overall,
        "edited_only": _block(edited),
        "per_subset": {s: _block([r for r in rows if r["subset"] == s]) for s in subsets},
        "not_edited": sorted({r["failure"].split(":", 1)[0] for r in rows if r.get("failure")}),
        "unavailable": {k: v for r in rows for k, v in r.get("unavailable", {}).items()},
        "headline": {"edited": overall["edited"], "psnr_edited": _block(edited)["psnr"],
                     "ssim_edited": _block(edited)["ssim"], "target_iou": overall["target_iou"]},
    }


def markdown(summary: dict) -> str:
    cols = ["cases", "edited", "PSNR", "SSIM", "MSE", "LPIPS", "CLIP", "target mask IoU", "target box IoU",
            "changed-pixels IoU"]

    def line(name: str, b: dict) -> list:
        return [name, b["cases"], b["edited"], b["psnr"], b["ssim"], b["mse"], b["lpips"], b["clip_score"],
                b["target_iou"], b["box_iou"], b["edit_region_iou"]]

    rows = [line("all (failures = unchanged source)", summary["all_cases"]), line("edited only", summary["edited_only"])]
    rows += [line(k, v) for k, v in summary["per_subset"].items()]
    unavailable = "".join(f"- {k}: unavailable ({v})\n" for k, v in summary["unavailable"].items())
    return "\n".join([
        "## Reason-Edit protocol\n",
        "Background preservation as SmartEdit computes it: input and output resized to 256×256 (bicubic; mask "
        "nearest), the ground-truth edit region zeroed in both, PSNR (data range 1) / SSIM / MSE / LPIPS-squeeze on "
        "the whole frame; CLIP score (ViT-L/14) of the output cropped to the mask's box against the `CLIP:` text. "
        "Grounding: IoU with the ground-truth mask of the planned target's segmentation, of its box (vs the mask's "
        "box) and of the pixels the edit changed. A PSNR mean is ∞ when a case is unchanged.\n",
        table(["", *cols], rows),
        f"Not edited because: {', '.join(summary['not_edited']) or 'none'}.\n",
        unavailable,
    ])
