"""Evaluation metrics as plain functions.

Pixel metrics work on float images in [0, 1] (H×W or H×W×C) or uint8 images (divided by 255 first):

* `mse`, `psnr` (data range 1), `ssim` (Wang et al. 2004: Gaussian window 11, σ 1.5, K1 0.01, K2 0.03,
  population statistics, mean over the valid window positions and the channels - what skimage
  `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)` and
  torchmetrics `StructuralSimilarityIndexMeasure(data_range=1.0)` compute);
* `l1`, `l2`: MagicBrush's distances to the ground truth (its L2 is torch's `MSELoss`, the mean squared
  difference; the prediction is resized to the ground truth's size first);
* `reason_edit_background`: SmartEdit's Reason-Edit background-preservation protocol;
* `iou_mask`, `iou_box`: grounding;
* `align_steps`: plan accuracy against gold steps;
* `cost`: time per stage, LLM calls and tokens (new / reused / generated, per call), peak RSS of an
  `EditResult`.

Learned metrics (`lpips_squeeze`, `clip_score`, `clip_image_similarity`, `dino_similarity`) use pretrained
weights only when they are already on this machine (Hugging Face hub cache / torch hub cache, loaded with
`local_files_only`); they never download. Each returns `(value, None)` or `(None, reason)`: a missing model is
reported as unavailable, never replaced by another number under its name.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image

from cielr_agent.masks import box_iou, iou

Metric = tuple[float | None, str | None]

# --------------------------------------------------------------------------------------------------- pixels


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 → float64 in [0, 1]; float input is returned as float64 unchanged."""
    image = np.asarray(image)
    return image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_float(a), to_float(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}; resize first")
    return a, b


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared difference over every pixel and channel, on [0, 1] data."""
    a, b = _pair(a, b)
    return float(np.mean((a - b) ** 2))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, 10·log10(range² / MSE); `inf` for identical images."""
    err = mse(a, b)
    return math.inf if err == 0 else 10.0 * math.log10(data_range**2 / err)


SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Structural similarity (Wang et al.), averaged over the valid 11×11 window positions and the channels."""
    a, b = _pair(a, b)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} px, got {a.shape[:2]}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    g = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA, cv2.CV_64F)
    pad = SSIM_WINDOW // 2

    def blur(x: np.ndarray) -> np.ndarray:  # Gaussian-weighted local mean, valid positions only
        return cv2.sepFilter2D(x, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT_101)[pad:-pad, pad:-pad]

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    values = []
    for ch in range(a.shape[2]):
        x, y = np.ascontiguousarray(a[..., ch]), np.ascontiguousarray(b[..., ch])
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        values.append(s.mean())
    return float(np.mean(values))


def l1(pred: np.ndarray, target: np.ndarray) -> float:
    """MagicBrush L1: mean absolute difference on [0, 1] data; `pred` is resized (bicubic) to `target`'s size."""
    p, t = _pair(resize_to(pred, target.shape[1], target.shape[0]), target)
    return float(np.mean(np.abs(p - t)))


def l2(pred: np.ndarray, target: np.ndarray) -> float:
    """MagicBrush L2 (torch `MSELoss`): mean squared difference on [0, 1] data, after resizing like `l1`."""
    return mse(resize_to(pred, target.shape[1], target.shape[0]), target)


def resize_to(image: np.ndarray, width: int, height: int, resample: int = Image.Resampling.BICUBIC) -> np.ndarray:
    """A uint8 image (or L mask) resized with PIL; unchanged when it already has that size."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), resample=resample))


def changed_fraction(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """Fraction of pixels (of the whole image) whose value differs in any channel, optionally only in `region`."""
    changed = np.any(np.asarray(a) != np.asarray(b), axis=2) if np.asarray(a).ndim == 3 else a != b
    if region is not None:
        changed = changed & region
    return float(changed.mean())


def outside(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of two images with `region` (bool H×W) set to zero in both: how much changed elsewhere."""
    keep = (~np.asarray(region, bool)).astype(np.float64)[..., None]
    a, b = _pair(a, b)
    a, b = a * keep, b * keep
    return {"psnr": psnr(a, b), "ssim": ssim(a, b)}


# ------------------------------------------------------------------------------------- Reason-Edit protocol

REASON_EDIT_SIZE = 256


def reason_edit_background(original: np.ndarray, edited: np.ndarray, mask: np.ndarray, *,
                           text: str | None = None, learned: bool = True) -> dict[str, Any]:
    """SmartEdit's Reason-Edit metrics of one edit, as its `metrics_evaluation.py` computes them.

    `original`, `edited`: uint8 RGB; `mask`: the ground-truth edit mask as stored (uint8 grey, white = edited
    region; bool is taken as 0/255). All three are resized to 256×256 (images bicubic, mask nearest); both
    images are multiplied by 1 - mask/255 (the edited region becomes zero; soft JPEG values weigh in as in the
    original script) and compared on the whole frame: PSNR (data range 1), SSIM, MSE, LPIPS (SqueezeNet).
    The CLIP score (ViT-L/14, 100·cos clipped at 0) is of the edited image cropped to the mask's box against
    `text`; the box is found as upstream does (any non-zero mask pixel; right/bottom edges exclusive).
    LPIPS and CLIP come with a reason instead of a value when their weights are not on this machine.
    """
    size = REASON_EDIT_SIZE
    mask = np.asarray(mask)
    mask = np.where(mask, 255, 0).astype(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    orig = resize_to(original, size, size)
    edit = resize_to(edited, size, size)
    m = resize_to(mask, size, size, Image.Resampling.NEAREST)
    keep = (1.0 - m.astype(np.float64) / 255.0)[..., None]
    a, b = to_float(orig) * keep, to_float(edit) * keep
    out: dict[str, Any] = {"psnr": psnr(a, b), "ssim": ssim(a, b), "mse": mse(a, b), "unavailable": {}}
    ys, xs = np.nonzero(m)
    crop = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if xs.size else None
    out["clip_crop_box"] = crop
    metrics: dict[str, Metric] = {}
    if learned:
        metrics["lpips"] = lpips_squeeze(a, b)
        if text is not None and crop is not None:
            metrics["clip_score"] = clip_score(edit[crop[1]:crop[3], crop[0]:crop[2]], text)
    for name, (value, reason) in metrics.items():
        out[name] = value
        if reason:
            out["unavailable"][name] = reason
    return out


# ------------------------------------------------------------------------------------------------ grounding


def iou_mask(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two bool masks of the same size (0.0 when both are empty)."""
    return iou(pred, gt)


def iou_box(pred: Sequence[float], gt: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes, x1/y1 exclusive (0.0 for empty boxes)."""
    return box_iou(tuple(pred), tuple(gt))


# ------------------------------------------------------------------------------------------- plan accuracy


def align_steps(gold: list[dict], predicted: list[dict]) -> list[dict]:
    """Pair each gold step with at most one predicted step: first by object, then by order.

    A step is a dict with `type` and `object` (for a gold step the object the action applies to - for `add`
    the object to add; for a predicted step the target object id, or for `add` its prompt). A gold step may
    give `match(predicted_step) -> bool` under key `matches` to decide "same object"; otherwise objects are
    compared for equality. Returns one dict per gold step: `predicted` (index or None), `type_ok`,
    `object_ok`, `correct`.
    """
    used: set[int] = set()
    pairs: dict[int, int] = {}

    def same_object(g: dict, p: dict) -> bool:
        test = g.get("matches")
        return bool(test(p)) if test is not None else g.get("object") == p.get("object")

    for gi, g in enumerate(gold):
        hit = next((pi for pi, p in enumerate(predicted) if pi not in used and same_object(g, p)), None)
        if hit is not None:
            pairs[gi] = hit
            used.add(hit)
    free = [pi for pi in range(len(predicted)) if pi not in used]
    for gi in range(len(gold)):
        if gi not in pairs and free:
            pairs[gi] = free.pop(0)
    out = []
    for gi, g in enumerate(gold):
        pi = pairs.get(gi)
        p = predicted[pi] if pi is not None else None
        type_ok = p is not None and p.get("type") == g.get("type")
        object_ok = p is not None and same_object(g, p)
        out.append({"predicted": pi, "type_ok": type_ok, "object_ok": object_ok, "correct": type_ok and object_ok})
    return out


# ---------------------------------------------------------------------------------------------------- cost

STAGES = ("load_image", "perceive", "llm", "perception_tools", "execute", "verify")


def cost(result) -> dict[str, Any]:
    """Time per stage (s), LLM calls and tokens, peak RSS (MB) of an `EditResult`.

    Prompt tokens split into new (evaluated) and reused (KV state kept from an earlier call); `calls` lists
    each LLM call as {node, new_tokens, reused_tokens, generated_tokens, seconds}."""
    timings = {k: round(float(result.timings.get(k, 0.0)), 3) for k in (*STAGES, "total")}
    calls = [{"node": c.node, "new_tokens": c.input_tokens - c.cached_tokens, "reused_tokens": c.cached_tokens,
              "generated_tokens": c.output_tokens, "seconds": round(c.seconds, 3)} for c in result.llm_calls]
    return {
        "timings": timings,
        "llm_calls": len(calls),
        "input_tokens": sum(c.input_tokens for c in result.llm_calls),
        "new_tokens": sum(c["new_tokens"] for c in calls),
        "reused_tokens": sum(c["reused_tokens"] for c in calls),
        "output_tokens": sum(c.output_tokens for c in result.llm_calls),
        "calls": calls,
        "peak_rss_mb": round(result.peak_rss_mb, 1) if result.peak_rss_mb is not None else None,
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    return float(np.percentile(list(values), q)) if len(values) else None


# ---------------------------------------------------------------------------------------- learned metrics

CLIP_SCORE_MODEL = "openai/clip-vit-large-patch14"  # Reason-Edit's CLIPScore (torchmetrics) model
CLIP_I_MODEL = "openai/clip-vit-base-patch32"  # MagicBrush CLIP-I (ViT-B/32)
DINO_MODEL = "facebook/dino-vits16"  # MagicBrush DINO
SQUEEZENET_FILE = "squeezenet1_1-b8a52dc0.pth"  # torchvision's ImageNet SqueezeNet 1.1, the LPIPS backbone


def _hf_local(repo_or_dir: str) -> str | None:
    """Why `repo_or_dir` cannot be loaded offline, or None when its config and weights are on this machine."""
    if Path(repo_or_dir).is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_or_dir, name), str)

    if cached("config.json") and (cached("model.safetensors") or cached("pytorch_model.bin")):
        return None
    return (f"weights of {repo_or_dir} are not in the local Hugging Face cache "
            f"({os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}); "
            "not downloaded")


_LOADED: dict[str, Any] = {}


def _load(kind: str, name: str):
    """A model, image processor or tokenizer, loaded once per process, offline only."""
    key = f"{kind}:{name}"
    if key not in _LOADED:
        import transformers

        load = {"clip": lambda: transformers.CLIPModel.from_pretrained(name, local_files_only=True).eval(),
                "vit": lambda: transformers.AutoModel.from_pretrained(name, local_files_only=True).eval(),
                "images": lambda: transformers.AutoImageProcessor.from_pretrained(name, local_files_only=True),
                "text": lambda: transformers.AutoTokenizer.from_pretrained(name, local_files_only=True)}[kind]
        _LOADED[key] = load()
    return _LOADED[key]


def _cosine(u, v) -> float:
    u, v = np.asarray(u, np.float64).ravel(), np.asarray(v, np.float64).ravel()
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def _embedding(output):
    """The embedding tensor of a `get_*_features` call (a tensor, or an output object holding it)."""
    return output if not hasattr(output, "pooler_output") else output.pooler_output


def _clip_image(name: str, image: np.ndarray):
    import torch

    pixels = _load("images", name)(images=Image.fromarray(image), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return _embedding(_load("clip", name).get_image_features(pixel_values=pixels))


def clip_score(image: np.ndarray, text: str, model: str = CLIP_SCORE_MODEL) -> Metric:
    """CLIPScore as torchmetrics computes it: 100 · max(cos(image, text), 0) with CLIP ViT-L/14."""
    reason = _hf_local(model)
    if reason:
        return None, reason
    import torch

    tokens = _load("text", model)([text], return_tensors="pt", padding=True, truncation=True)
    with torch.no_grad():
        t = _embedding(_load("clip", model).get_text_features(**tokens))
    return max(100.0 * _cosine(_clip_image(model, image), t), 0.0), None


def clip_image_similarity(a: np.ndarray, b: np.ndarray, model: str = CLIP_I_MODEL) -> Metric:
    """MagicBrush CLIP-I: cosine similarity of the CLIP (ViT-B/32) image embeddings of two images."""
    reason = _hf_local(model)
    if reason:
        return None, reason
    return _cosine(_clip_image(model, a), _clip_image(model, b)), None


def dino_similarity(a: np.ndarray, b: np.ndarray, model: str = DINO_MODEL) -> Metric:
    """MagicBrush DINO: cosine similarity of the DINO ViT-S/16 [CLS] embeddings of two images."""
    reason = _hf_local(model)
    if reason:
        return None, reason
    import torch

    def embed(image: np.ndarray):
        pixels = _load("images", model)(images=Image.fromarray(image), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return _load("vit", model)(pixel_values=pixels).last_hidden_state[:, 0]

    return _cosine(embed(a), embed(b)), None


def lpips_squeeze(a: np.ndarray, b: np.ndarray) -> Metric:
    """LPIPS with the SqueezeNet backbone (the `lpips` package) on [0, 1] images; needs the package and
    torchvision's SqueezeNet 1.1 ImageNet weights already in the torch hub cache."""
    import importlib.util

    if importlib.util.find_spec("lpips") is None:
        return None, "the `lpips` package is not installed (pip install lpips; it ships the linear-layer weights)"
    torch_home = Path(os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch")
    if not (torch_home.expanduser() / "hub" / "checkpoints" / SQUEEZENET_FILE).exists():
        return None, f"SqueezeNet weights {SQUEEZENET_FILE} are not in the torch hub cache ({torch_home}); not downloaded"
    import torch

    if "lpips" not in _LOADED:
        import lpips

        _LOADED["lpips"] = lpips.LPIPS(net="squeeze", verbose=False).eval()

    def tensor(x: np.ndarray):
        return torch.from_numpy(to_float(x)).permute(2, 0, 1)[None].float() * 2 - 1

    with torch.no_grad():
        return float(_LOADED["lpips"](tensor(a), tensor(b)).item()), None
