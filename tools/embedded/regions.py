"""Class-agnostic regions: SAM automatic mask generation over a point grid, with MobileSAM.

Every grid point is a one-click prompt; its three multimask outputs are filtered by predicted IoU and by
stability (the mask barely changes when the logit threshold moves by ±1), near-duplicates are removed by
non-maximum suppression on boxes, small islands and holes are cleaned. Filtering happens on the 256×256
low-res logits, so only the kept masks are upscaled. This is segment-anything's recipe
(`SamAutomaticMaskGenerator`) reduced to one crop layer, written for numpy because the library's version
needs torch and torchvision at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cielr_agent.masks import iou as mask_iou

from .mobilesam import LOW_RES, MobileSamPredictor


@dataclass
class Region:
    """One region: full-size bool mask, box (x0, y0, x1, y1), predicted IoU and stability score."""

    mask: np.ndarray
    box: tuple[float, float, float, float]
    score: float
    stability: float

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def stability_score(logits: np.ndarray, offset: float = 1.0) -> np.ndarray:
    """IoU between the masks thresholded at +offset and -offset (…×h×w logits → …)."""
    high = (logits > offset).sum(axis=(-1, -2))
    low = (logits > -offset).sum(axis=(-1, -2))
    return np.where(low > 0, high / np.maximum(low, 1), 0.0)


def _boxes_of(masks: np.ndarray) -> np.ndarray:
    """Boxes (x0, y0, x1, y1, exclusive ends) of k×h×w bool masks; zeros for empty ones."""
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    out = np.zeros((len(masks), 4), np.float32)
    for i in range(len(masks)):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if ys.size:
            out[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression on boxes, best score first."""
    order = np.argsort(-scores)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ix = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = ix * iy
        union = area[i] + area[rest] - inter
        order = rest[inter / np.maximum(union, 1e-6) <= iou]
    return keep


def clean_mask(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop islands and fill holes smaller than `min_area` pixels."""
    for fill_holes in (True, False):
        work = (~mask if fill_holes else mask).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
        small = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] < min_area]
        if fill_holes:
            # a hole is a background component not touching the border
            h, w = mask.shape
            small = [i for i in small if stats[i, cv2.CC_STAT_LEFT] > 0 and stats[i, cv2.CC_STAT_TOP] > 0
                     and stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_WIDTH] < w
                     and stats[i, cv2.CC_STAT_TOP] + stats[i, cv2.CC_STAT_HEIGHT] < h]
        if small:
            hit = np.isin(labels, small)
            mask = mask | hit if fill_holes else mask & ~hit
    return mask


def generate_regions(predictor: MobileSamPredictor, image: np.ndarray, points_per_side: int = 12,
                     pred_iou_thresh: float = 0.85, stability_thresh: float = 0.9, nms_iou: float = 0.7,
                     min_area_fraction: float = 0.002, max_area_fraction: float = 0.9, batch: int = 16
                     ) -> list[Region]:
    """Regions of an RGB image, largest first. Reuses the predictor's embedding when the image is the same."""
    predictor.set_image(image)
    h, w = image.shape[:2]
    step = 1.0 / points_per_side
    grid = (np.arange(points_per_side) + 0.5) * step
    points = np.stack(np.meshgrid(grid * w, grid * h), axis=-1).reshape(-1, 2).astype(np.float32)
    scale = LOW_RES / max(h, w)
    vh, vw = max(1, round(h * scale)), max(1, round(w * scale))
    logits, scores = [], []
    for start in range(0, len(points), batch):
        pts = points[start:start + batch]
        coords = np.stack([pts, np.zeros_like(pts)], axis=1)
        labels = np.tile(np.array([[1.0, -1.0]], np.float32), (len(pts), 1))
        low, iou = predictor.predict_batch(coords, labels)
        low, iou = low[:, 1:, :vh, :vw].reshape(-1, vh, vw), iou[:, 1:].reshape(-1)
        ok = iou >= pred_iou_thresh
        if ok.any():
            stable = stability_score(low[ok]) >= stability_thresh
            logits.append(low[ok][stable])
            scores.append(iou[ok][stable])
    if not logits:
        return []
    low, score = np.concatenate(logits), np.concatenate(scores)
    small = low > 0
    area = small.sum(axis=(1, 2)) / float(vh * vw)
    ok = (area >= min_area_fraction) & (area <= max_area_fraction)
    low, score, small = low[ok], score[ok], small[ok]
    if not len(low):
        return []
    keep = nms(_boxes_of(small), score, nms_iou)
    min_area = int(min_area_fraction * h * w)
    regions = []
    for i in keep:
        full = cv2.resize(low[i], (w, h), interpolation=cv2.INTER_LINEAR) > 0.0
        full = clean_mask(full, max(16, min_area // 4))
        if full.sum() < min_area or any(mask_iou(full, r.mask) > 0.85 for r in regions):
            continue
        ys, xs = np.nonzero(full)
        regions.append(Region(mask=full, box=(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)),
                              score=float(score[i]), stability=float(stability_score(low[i][None])[0])))
    regions.sort(key=lambda r: -r.area)
    return regions
