"""Mask helpers (numpy/OpenCV only): grow, feather, exact compositing, boxes, IoU and COCO RLE.

Conventions: a mask is a bool HxW array; an image is uint8 HxWx3; a box is (x0, y0, x1, y1) in
pixel coordinates with x1, y1 exclusive (a one-pixel mask at (x, y) has box (x, y, x + 1, y + 1)).
"""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[float, float, float, float]


def _as_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _disk(px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow the mask by `px` pixels (round structuring element); px <= 0 returns a copy."""
    mask = _as_bool(mask)
    if px <= 0 or not mask.any():
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8), _disk(int(px))).astype(bool)


def erode(mask: np.ndarray, px: int) -> np.ndarray:
    """Shrink the mask by `px` pixels (round structuring element); px <= 0 returns a copy."""
    mask = _as_bool(mask)
    if px <= 0 or not mask.any():
        return mask.copy()
    # border value 1 so that masks touching the image edge do not shrink from it
    return cv2.erode(mask.astype(np.uint8), _disk(int(px)), borderType=cv2.BORDER_CONSTANT,
                     borderValue=1).astype(bool)


def feather(mask: np.ndarray, px: int) -> np.ndarray:
    """Soft float32 alpha: 0 outside `dilate(mask, px)`, ~0.5 on the mask edge, 1 from `px` inside.

    The ramp is a smoothstep of the distance to the edge of the dilated mask over 2*px pixels.
    px <= 0 gives the hard mask as 0/1.
    """
    mask = _as_bool(mask)
    if px <= 0:
        return mask.astype(np.float32)
    grown = dilate(mask, px)
    # distance of every grown pixel to the nearest pixel outside the grown mask (0 outside);
    # pad so that the image border does not count as "outside"
    pad = 2 * px + 1
    padded = cv2.copyMakeBorder(grown.astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[pad:-pad, pad:-pad]
    t = np.clip(dist / (2.0 * px), 0.0, 1.0)
    alpha = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    alpha[~grown] = 0.0
    return alpha


def composite(original: np.ndarray, edited: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend `edited` over `original` with `alpha` (HxW, 0..1).

    Pixels with alpha == 0 are bit-identical to `original`, pixels with alpha == 1 to `edited`.
    """
    original = np.asarray(original)
    edited = np.asarray(edited)
    if original.shape != edited.shape or original.dtype != np.uint8 or edited.dtype != np.uint8:
        raise ValueError("original and edited must be uint8 arrays of the same shape")
    a = np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0)
    if a.shape != original.shape[:2]:
        raise ValueError(f"alpha must be {original.shape[:2]}, got {a.shape}")
    out = original.copy()
    sel = a > 0
    if not sel.any():
        return out
    w = a[sel][:, None]
    blended = original[sel].astype(np.float32) * (1.0 - w) + edited[sel].astype(np.float32) * w
    out[sel] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    full = a >= 1.0
    out[full] = edited[full]
    return out


def box_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box (x0, y0, x1, y1), x1/y1 exclusive, of the mask's pixels; None when empty."""
    mask = _as_bool(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def iou(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Intersection over union of two masks; 0.0 when both are empty."""
    a, b = _as_bool(mask_a), _as_bool(mask_b)
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0.0 for empty boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


def rle_encode(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: {"size": [h, w], "counts": [...]}, column-major, starting with 0s."""
    mask = _as_bool(mask)
    h, w = mask.shape
    flat = mask.ravel(order="F")
    if flat.size == 0:
        return {"size": [h, w], "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict) -> np.ndarray:
    """Inverse of `rle_encode`: a bool HxW mask."""
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w or (counts < 0).any():
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h * w}")
    values = (np.arange(counts.size) % 2).astype(bool)
    flat = np.repeat(values, counts)
    return flat.reshape((w, h)).T.copy()


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every region it encloses filled (background reachable from the border stays empty)."""
    m = mask.astype(np.uint8)
    padded = np.pad(1 - m, 1, constant_values=1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 2)
    return mask | (flood[1:-1, 1:-1] == 1)


def solid(mask: np.ndarray, px: int = 10) -> np.ndarray:
    """The mask closed over gaps up to ~2*px wide and hole-filled: the full extent of an occluding object."""
    return fill_holes(erode(dilate(mask, px), px))


def see_through(image: np.ndarray, mask: np.ndarray, context: np.ndarray | None = None,
                tolerance: float = 12.0, min_area: int = 30) -> np.ndarray:
    """Pixels inside `mask` where the background shows through the object (the wall between a wheel's spokes,
    the street through a fence): they look like the background right around the object (Lab distance to one of
    its main k-means colours, each ≥ 8 % of the ring, ≤ `tolerance`) and form pockets of at least `min_area` px inside the mask, away from its
    outline. A removal keeps them and fills only the object itself. `context` marks pixels that may serve as
    background samples (not other objects). Empty when the pockets would be most of the object: then the
    object is simply coloured like its surroundings."""
    import cv2

    mask = _as_bool(mask)
    keep = np.zeros_like(mask)
    ring = dilate(mask, 12) & ~mask
    if context is not None:
        ring &= _as_bool(context)
    if ring.sum() < 50 or mask.sum() < 4 * min_area:
        return keep
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB).astype(np.float32)
    samples = lab[ring]
    if len(samples) > 20000:
        samples = samples[np.random.default_rng(0).choice(len(samples), 20000, replace=False)]
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, assigned, centers = cv2.kmeans(samples, 6, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    share = np.bincount(assigned.ravel(), minlength=len(centers)) / len(samples)
    centers = centers[share >= 0.08]  # the background's main colours, not a stray shadow or a neighbour's edge
    inner = erode(mask, 3)
    idx = np.flatnonzero(inner)
    if idx.size == 0:
        return keep
    dist = np.min(np.linalg.norm(lab.reshape(-1, 3)[idx][:, None, :] - centers[None], axis=2), axis=1)
    like = np.zeros_like(mask)
    like.flat[idx[dist <= tolerance]] = True
    like = erode(like, 2)  # the anti-aliased rims (and shadows) of thin parts go with the object
    n, labels, stats, _ = cv2.connectedComponentsWithStats(like.astype(np.uint8), connectivity=4)
    big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    if big:
        keep = np.isin(labels, big)
    if keep.sum() > 0.6 * inner.sum():
        return np.zeros_like(mask)
    return keep
