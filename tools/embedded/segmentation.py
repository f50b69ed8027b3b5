"""Box-prompted segmentation on CPU with salient-object ONNX models (ISNet, U2-Net-p).

The model runs on the box crop (enlarged by a margin), its saliency map is thresholded, cut to
the box, reduced to the component(s) that belong to the box's object and small holes are filled.
When the mask does not reach all edges of the (tight, detector-made) box, the model looks again
in 2x2 overlapping tiles of the box and their masks are added: this recovers thin parts that a
bigger salient object in the same crop outshone (4 more model runs).
A saliency model segments what stands out in the crop: when two objects overlap (a dog in front
of a bicycle) the mask of one box can include the overlapping part of the other; subtract the
other object's mask where that matters.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

Box = tuple[float, float, float, float]

THRESHOLD = 0.5  # on the model's 0..1 map (ISNet is sigmoid output, U2-Net-p is min-max normalised)


class _SaliencySegmenter:
    asset = ""
    size = 0

    def __init__(self, onnx_path: Path | None = None, threads: int = 2, tile_refine: bool = True):
        self.tile_refine = bool(tile_refine)
        self._path = Path(onnx_path) if onnx_path is not None else None
        self._threads = int(threads)
        self._session = None
        self._lock = threading.Lock()

    # -- model -------------------------------------------------------------------------------

    def _get_session(self):
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                path = self._path
                if path is None:
                    from cielr_agent.assets import ensure_asset

                    path = ensure_asset(self.asset)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = max(1, self._threads)
                opts.inter_op_num_threads = 1
                opts.log_severity_level = 3
                opts.enable_cpu_mem_arena = False  # the arena keeps ~2 GB of 1024² activations alive
                self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                self._input = self._session.get_inputs()[0].name
                self._output = self._session.get_outputs()[0].name
            return self._session

    def _preprocess(self, rgb: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _postprocess(self, out: np.ndarray) -> np.ndarray:
        return out

    def predict(self, crop: np.ndarray) -> np.ndarray:
        """Saliency map (float32 0..1) of an RGB uint8 crop, at the crop's size."""
        session = self._get_session()
        h, w = crop.shape[:2]
        x = cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        x = self._preprocess(x).transpose(2, 0, 1)[None].astype(np.float32)
        out = session.run([self._output], {self._input: x})[0][0, 0]
        out = self._postprocess(out.astype(np.float32))
        return cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)

    # -- box prompt ------------------------------------------------------------------------------

    def segment_box(self, image: np.ndarray, box: Box, margin: float = 0.1) -> np.ndarray:
        """Bool HxW mask of the object in `box` (x0, y0, x1, y1) of an RGB uint8 image."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
        H, W = image.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in box)
        x0, x1 = sorted((min(max(x0, 0.0), W), min(max(x1, 0.0), W)))
        y0, y1 = sorted((min(max(y0, 0.0), H), min(max(y1, 0.0), H)))
        bw, bh = x1 - x0, y1 - y0
        mask = np.zeros((H, W), bool)
        if bw < 2 or bh < 2:
            return mask
        # model input: the box grown by `margin` on every side
        cx0 = int(np.floor(max(0.0, x0 - margin * bw)))
        cy0 = int(np.floor(max(0.0, y0 - margin * bh)))
        cx1 = int(np.ceil(min(float(W), x1 + margin * bw)))
        cy1 = int(np.ceil(min(float(H), y1 + margin * bh)))
        crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
        fg = self.predict(crop) >= THRESHOLD
        # keep: the box plus a little slack (detector boxes are often a few pixels tight)
        sx, sy = max(2.0, 0.02 * bw), max(2.0, 0.02 * bh)
        kx0 = int(np.floor(max(cx0, x0 - sx))) - cx0
        ky0 = int(np.floor(max(cy0, y0 - sy))) - cy0
        kx1 = int(np.ceil(min(cx1, x1 + sx))) - cx0
        ky1 = int(np.ceil(min(cy1, y1 + sy))) - cy0
        keep = np.zeros_like(fg)
        keep[ky0:ky1, kx0:kx1] = True
        fg &= keep
        centre = (
            int(x0 + 0.25 * bw) - cx0, int(y0 + 0.25 * bh) - cy0,
            int(np.ceil(x1 - 0.25 * bw)) - cx0, int(np.ceil(y1 - 0.25 * bh)) - cy0,
        )
        inner = (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)
        main = _select_components(fg, centre, inner, edge_pieces=False)
        if self.tile_refine and _unreached_edges(main[ky0:ky1, kx0:kx1]):
            # the mask does not span the box: look again in smaller tiles
            fg |= self._tile_foreground(crop, inner) & keep
        sel = _select_components(fg, centre, inner)
        fg = _fill_small_holes(sel, max_area=0.005 * bw * bh)
        mask[cy0:cy1, cx0:cx1] = fg
        return mask

    def _tile_foreground(self, crop: np.ndarray, box: Box) -> np.ndarray:
        """Union of the thresholded maps of 2x2 overlapping tiles (60% of the box each).

        A salient object that dominates the box crop (a dog in front of a bicycle) hides the
        thinner parts of the box's own object; in smaller tiles those parts stand out again.
        """
        h, w = crop.shape[:2]
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        out = np.zeros((h, w), bool)
        for fy in (0.0, 0.4):
            for fx in (0.0, 0.4):
                tx0, ty0 = x0 + fx * bw, y0 + fy * bh
                tx1, ty1 = tx0 + 0.6 * bw, ty0 + 0.6 * bh
                mx, my = 0.1 * (tx1 - tx0), 0.1 * (ty1 - ty0)
                a0, b0 = int(max(0, tx0 - mx)), int(max(0, ty0 - my))
                a1, b1 = int(min(w, np.ceil(tx1 + mx))), int(min(h, np.ceil(ty1 + my)))
                if a1 - a0 < 8 or b1 - b0 < 8:
                    continue
                fg = self.predict(np.ascontiguousarray(crop[b0:b1, a0:a1])) >= THRESHOLD
                i0, j0 = int(tx0) - a0, int(ty0) - b0
                i1, j1 = int(np.ceil(tx1)) - a0, int(np.ceil(ty1)) - b0
                out[b0 + j0:b0 + j1, a0 + i0:a0 + i1] |= fg[j0:j1, i0:i1]
        return out


def _unreached_edges(fg: np.ndarray, gap: float = 0.1) -> set[str]:
    """Edges of the (cut-out) box that the mask's extent stays more than `gap` of the size from
    (all four for an empty mask)."""
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    if rows.size == 0:
        return {"left", "top", "right", "bottom"}
    h, w = fg.shape
    edges = set()
    if cols[0] > gap * w:
        edges.add("left")
    if rows[0] > gap * h:
        edges.add("top")
    if cols[-1] + 1 < (1 - gap) * w:
        edges.add("right")
    if rows[-1] + 1 < (1 - gap) * h:
        edges.add("bottom")
    return edges


def _select_components(
    fg: np.ndarray, centre: tuple[int, int, int, int], box: Box, edge_pieces: bool = True
) -> np.ndarray:
    """Pick the components of the box's object.

    Kept: components of at least 25% of the largest; those of at least 2% that reach the centre
    half of the box; then, largest first, components of at least 0.1% of the box that push the
    kept extent at least 5% closer to a box edge (a detector box is tight around its object, so
    a separate piece near an edge nothing else reaches, like handlebars, belongs to it).
    Specks and stray bits of the background are dropped.
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    if n <= 2:
        return fg
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    areas[0] = 0
    largest = areas.max()
    cx0, cy0, cx1, cy1 = centre
    in_centre = np.zeros(n, bool)
    in_centre[np.unique(labels[cy0:cy1, cx0:cx1])] = True
    keep = (areas >= 0.25 * largest) | (in_centre & (areas >= 0.02 * largest))
    keep[0] = False
    if not edge_pieces:
        return keep[labels]
    bx0, by0, bx1, by1 = box
    bw, bh = bx1 - bx0, by1 - by0
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[:, cv2.CC_STAT_WIDTH], top + stats[:, cv2.CC_STAT_HEIGHT]
    ex = [left[keep].min(), top[keep].min(), right[keep].max(), bottom[keep].max()]
    for i in np.argsort(-areas):
        if keep[i] or i == 0 or areas[i] < 0.001 * bw * bh:
            continue
        gain = max((ex[0] - left[i]) / bw, (ex[1] - top[i]) / bh,
                   (right[i] - ex[2]) / bw, (bottom[i] - ex[3]) / bh)
        if gain >= 0.05:
            keep[i] = True
            ex = [min(ex[0], left[i]), min(ex[1], top[i]), max(ex[2], right[i]), max(ex[3], bottom[i])]
    return keep[labels]


def _fill_small_holes(fg: np.ndarray, max_area: float) -> np.ndarray:
    """Fill background components that do not touch the crop border and are at most `max_area`."""
    if not fg.any():
        return fg
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~fg).astype(np.uint8), connectivity=4)
    if n <= 1:
        return fg
    h, w = fg.shape
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    ww, hh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    inner = (x > 0) & (y > 0) & (x + ww < w) & (y + hh < h)
    fill = inner & (stats[:, cv2.CC_STAT_AREA] <= max_area)
    fill[0] = False  # label 0 is the foreground here
    return fg | fill[labels]


class IsnetSegmenter(_SaliencySegmenter):
    """ISNet general-use (DIS), 1024x1024 input, (px - 128) / 256, sigmoid output."""

    asset = "isnet"
    size = 1024

    def _preprocess(self, rgb: np.ndarray) -> np.ndarray:
        return (rgb.astype(np.float32) - 128.0) / 256.0

    def _postprocess(self, out: np.ndarray) -> np.ndarray:
        return np.clip(out, 0.0, 1.0)


class U2netpSegmenter(_SaliencySegmenter):
    """U2-Net-p, 320x320 input, ImageNet mean/std on 0..1 (rembg), min-max normalised output."""

    asset = "u2netp"
    size = 320
    _mean = np.array([0.485, 0.456, 0.406], np.float32)
    _std = np.array([0.229, 0.224, 0.225], np.float32)

    def _preprocess(self, rgb: np.ndarray) -> np.ndarray:
        x = rgb.astype(np.float32)
        x /= max(float(x.max()), 1.0)  # rembg divides by the crop's maximum
        return (x - self._mean) / self._std

    def _postprocess(self, out: np.ndarray) -> np.ndarray:
        lo, hi = float(out.min()), float(out.max())
        return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)


_SEGMENTERS = {"isnet": IsnetSegmenter, "u2netp": U2netpSegmenter}
_CACHE: dict[str, _SaliencySegmenter] = {}
_CACHE_LOCK = threading.Lock()


def make_segmenter(name: str) -> _SaliencySegmenter:
    """Shared segmenter for "isnet" or "u2netp" (one lazily loaded session per name)."""
    key = name.strip().lower()
    if key not in _SEGMENTERS:
        raise ValueError(f"unknown segmenter {name!r}; choose one of {sorted(_SEGMENTERS)}")
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _SEGMENTERS[key]()
        return _CACHE[key]


def refine_mask(image: np.ndarray, seed: np.ndarray, box: Box, exclude: np.ndarray | None = None,
                iterations: int = 5, background_tolerance: float = 12.0) -> np.ndarray:
    """Colour-model refinement of a saliency mask inside its box.

    Saliency networks miss thin parts (frames, handlebars) and fill see-through parts (the wall between a
    wheel's spokes). The box's own background colours are learned (k-means in Lab of the pixels around the
    seed); GrabCut then grows the object from the seed pixels that do not look like that background, with
    everything outside the box and `exclude` as sure background. Finally pixels that look like the
    background are dropped, unless that would remove most of the object (an object coloured like its
    surroundings).
    """
    h, w = image.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if not seed.any() or x1 - x0 < 4 or y1 - y0 < 4:
        return seed.copy()
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32).reshape(-1, 3)
    inside = np.zeros((h, w), bool)
    inside[y0:y1, x0:x1] = True
    background = inside & ~cv2.dilate(seed.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    if exclude is not None:
        background &= ~exclude
    samples = lab[background.ravel()]
    if len(samples) < 16:
        return seed.copy()
    if len(samples) > 20000:
        samples = samples[np.random.default_rng(0).choice(len(samples), 20000, replace=False)]
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, _, centers = cv2.kmeans(samples, 8, None, criteria, 2, cv2.KMEANS_PP_CENTERS)

    def looks_like_background(idx: np.ndarray) -> np.ndarray:
        return np.min(np.linalg.norm(lab[idx][:, None, :] - centers[None], axis=2), axis=1) <= background_tolerance

    seed_idx = np.flatnonzero(seed)
    labels = np.full((h, w), cv2.GC_BGD, np.uint8)
    labels[y0:y1, x0:x1] = cv2.GC_PR_BGD
    labels.flat[seed_idx[~looks_like_background(seed_idx)]] = cv2.GC_PR_FGD
    if exclude is not None:
        labels[exclude] = cv2.GC_BGD
    if not (labels == cv2.GC_PR_FGD).any():
        return seed.copy()
    bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), labels, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    grown = seed | (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if exclude is not None:
        grown &= ~exclude
    idx = np.flatnonzero(grown)
    drop = looks_like_background(idx)
    if drop.mean() < 0.6:
        grown.flat[idx[drop]] = False
    return _drop_stray_specks(grown)


def _drop_stray_specks(mask: np.ndarray, max_fraction: float = 0.03, reach: int = 15) -> np.ndarray:
    """Remove small components lying away from the main body (e.g. a wheel of a car behind the object)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    main = labels == 1 + int(np.argmax(areas))
    near_main = cv2.dilate(main.astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)).astype(bool)
    keep = mask.copy()
    for k in range(1, count):
        component = labels == k
        if areas[k - 1] < max_fraction * mask.sum() and not (component & near_main).any():
            keep &= ~component
    return keep
