"""Object removal on CPU: PatchMatch (pypatchmatch) for regions, OpenCV Telea for thin masks.

Only pixels inside the given mask ever change; everything else is bit-identical to the input
(`cielr_agent.masks.composite` with the hard mask). Segmentation masks often miss the object's
anti-aliased rim: grow the mask a few pixels first (`remove_object(..., grow=3)`).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from cielr_agent.masks import box_of, composite, dilate

SEED = 0  # fixed PatchMatch seed: equal inputs give equal outputs
MIN_BAND = 48  # px of sources around a hole
MAX_BAND = 96  # px: wider bands cost time (PatchMatch works on the hole's box grown by the band) for no better fill
BAND_PER_SIZE = 0.5  # band width per px of the hole's smaller side (a dog-sized hole on dog.jpg: ~90 px)
_PM_LOCK = threading.Lock()  # the seed and the verbosity are global in the native library


def _check(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    mask = np.asarray(mask).astype(bool)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask must be {image.shape[:2]}, got {mask.shape}")
    return image, mask


class PatchMatchRemover:
    """PatchMatch inpainting whose sources are a band of `band` px around the hole.

    Restricting the sources keeps distant content (faces, other objects) out of the hole and
    makes the fill local; the work is done on the hole's box grown by the band.
    `protect` pixels (e.g. a foreground object next to the hole) are never used as a source.
    """

    def __init__(self, patch_size: int = 5, seed: int = SEED):
        self.patch_size = int(patch_size)
        self.seed = int(seed)

    def remove(self, image: np.ndarray, mask: np.ndarray, band: int | None = None,
               protect: np.ndarray | None = None) -> np.ndarray:
        import patchmatch

        image, mask = _check(image, mask)
        box = box_of(mask)
        if box is None:
            return image.copy()
        H, W = mask.shape
        if band is None:  # a wide hole needs a wide band: PatchMatch's coarse levels otherwise see no source at all
            band = min(MAX_BAND, max(MIN_BAND, round(BAND_PER_SIZE * min(box[2] - box[0], box[3] - box[1]))))
        band = max(int(band), 2 * self.patch_size + 2)
        x0, y0 = max(0, box[0] - band), max(0, box[1] - band)
        x1, y1 = min(W, box[2] + band), min(H, box[3] + band)
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        hole = mask[y0:y1, x0:x1]
        source = dilate(hole, band) & ~hole
        if protect is not None:
            source &= ~np.asarray(protect, bool)[y0:y1, x0:x1]
        if source.sum() < 4 * (2 * self.patch_size + 1) ** 2:
            # too little context around the hole for patches: widen to the whole crop
            source = ~hole
        excluded = ~(source | hole)  # neither filled nor used as a source
        with _PM_LOCK:
            if not patchmatch.patchmatch_available:
                raise RuntimeError("the patchmatch native library could not be loaded")
            patchmatch.set_random_seed(self.seed)
            filled = patchmatch.inpaint(
                crop, hole.astype(np.uint8), global_mask=excluded.astype(np.uint8),
                patch_size=self.patch_size,
            )
        edited = image.copy()
        edited[y0:y1, x0:x1] = filled
        return composite(image, edited, mask.astype(np.float32))


class TeleaRemover:
    """OpenCV's fast-marching (Telea) inpainting: good for thin masks (wires, scratches, text)."""

    def __init__(self, radius: int = 5):
        self.radius = int(radius)

    def remove(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        image, mask = _check(image, mask)
        if not mask.any():
            return image.copy()
        filled = cv2.inpaint(image, mask.astype(np.uint8), self.radius, cv2.INPAINT_TELEA)
        return composite(image, filled, mask.astype(np.float32))


def mask_thickness(mask: np.ndarray) -> float:
    """Largest distance (px) from a mask pixel to the nearest non-mask pixel (half the width)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return 0.0
    padded = np.pad(mask, 1).astype(np.uint8)  # the image border counts as outside
    return float(cv2.distanceTransform(padded, cv2.DIST_L2, 5).max())


def remove_object(image: np.ndarray, mask: np.ndarray, method: str = "auto", grow: int = 0,
                  protect: np.ndarray | None = None) -> np.ndarray:
    """Remove the masked object: "telea", "patchmatch", or "auto" (Telea when the mask is thin,
    i.e. at most 3 px from its edge everywhere, else PatchMatch). `grow` dilates the mask first;
    `protect` pixels are never changed nor used as PatchMatch sources."""
    image, mask = _check(image, mask)
    mask = dilate(mask, grow)
    if protect is not None:
        mask &= ~np.asarray(protect, bool)
    if method == "auto":
        method = "telea" if mask_thickness(mask) <= 3.0 else "patchmatch"
    if method == "telea":
        return TeleaRemover().remove(image, mask)
    if method == "patchmatch":
        return PatchMatchRemover().remove(image, mask, protect=protect)
    raise ValueError(f"unknown method {method!r}; use 'auto', 'telea' or 'patchmatch'")
