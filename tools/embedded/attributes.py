"""Colour and layout attributes of a masked region: basic colour names, position, size."""

from __future__ import annotations

import numpy as np

from cielr_agent.masks import box_of

from .recolor import oklab_to_lch, rgb_to_oklab

COLOR_NAMES = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown",
               "black", "white", "gray", "beige")

MAX_PIXELS = 20000  # pixels sampled from large masks (a fixed stride, so results are deterministic)
SECONDARY_MIN_SHARE = 0.15  # share of the pixels the second colour needs to be reported
ACHROMATIC = ("black", "white", "gray")


def classify_lch(lch: np.ndarray) -> np.ndarray:
    """Basic colour name index (into COLOR_NAMES) per OKLab LCh row (L 0..1, C, h in degrees)."""
    L, C, h = lch[..., 0], lch[..., 1], lch[..., 2]
    out = np.full(L.shape, COLOR_NAMES.index("gray"), dtype=np.int64)
    idx = COLOR_NAMES.index

    # hue families (OKLab hue angles: red ~29, orange ~60, yellow ~110, green ~142, cyan ~195,
    # blue ~264, magenta ~328)
    red_h = (h >= 345) | (h < 40)
    orange_h = (h >= 40) & (h < 80)
    yellow_h = (h >= 80) & (h < 122)
    green_h = (h >= 122) & (h < 180)
    blue_h = (h >= 180) & (h < 290)
    purple_h = (h >= 290) & (h < 345)
    warm = (h >= 20) & (h < 122)

    chroma_floor = np.where(warm, 0.025, 0.04)  # warm tints read as beige/brown earlier
    chromatic = C >= chroma_floor

    # chromatic families
    out = np.where(chromatic & red_h, idx("red"), out)
    out = np.where(chromatic & orange_h, idx("orange"), out)
    out = np.where(chromatic & yellow_h, idx("yellow"), out)
    out = np.where(chromatic & green_h, idx("green"), out)
    out = np.where(chromatic & blue_h, idx("blue"), out)
    out = np.where(chromatic & purple_h, idx("purple"), out)
    # light reds and magentas are pink
    pink = chromatic & ((red_h & (L > 0.72)) | (purple_h & (h >= 335) & (L > 0.72)))
    out = np.where(pink, idx("pink"), out)
    # dark oranges/yellows and dull dark reds are brown; dark yellow-greens (olive) are green
    brown = chromatic & (((h >= 40) & (h < 100) & (L < 0.62))
                         | ((h >= 30) & (h < 40) & (L < 0.6) & (C < 0.13)))
    out = np.where(brown, idx("brown"), out)
    out = np.where(chromatic & (h >= 100) & (h < 122) & (L < 0.6), idx("green"), out)
    # pale warm tints are beige
    beige = warm & (C >= 0.025) & (C < 0.085) & (L >= 0.75)
    out = np.where(beige, idx("beige"), out)

    # achromatic
    achrom = ~chromatic
    out = np.where(achrom & (L >= 0.86), idx("white"), out)
    out = np.where(achrom & (L < 0.86) & (L >= 0.36), idx("gray"), out)
    out = np.where(achrom & (L < 0.36), idx("black"), out)
    # very dark pixels look black unless strongly coloured (navy, maroon stay coloured)
    out = np.where((L < 0.3) & (C < 0.08), idx("black"), out)
    return out


def _mask_pixels(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    mask = np.asarray(mask, bool)
    if image.ndim != 3 or image.shape[2] != 3 or mask.shape != image.shape[:2]:
        raise ValueError("image must be HxWx3 and mask HxW of the same size")
    px = image[mask]
    if len(px) > MAX_PIXELS:
        px = px[:: int(np.ceil(len(px) / MAX_PIXELS))]
    return px


def color_histogram(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Share of the mask's pixels per basic colour name, largest first (empty for empty masks)."""
    px = _mask_pixels(image, mask)
    if len(px) == 0:
        return {}
    labels = classify_lch(oklab_to_lch(rgb_to_oklab(px)))
    counts = np.bincount(labels, minlength=len(COLOR_NAMES)) / len(labels)
    order = np.argsort(-counts, kind="stable")
    return {COLOR_NAMES[i]: float(counts[i]) for i in order if counts[i] > 0}


def _ranked(hist: dict[str, float]) -> list[str]:
    """Colour names by share, except that a chromatic colour with at least 20% of the pixels and
    half the share of the leading achromatic one goes first: a red bicycle has black tyres and
    grey spokes, but people call it red."""
    names = list(hist)
    if names and names[0] in ACHROMATIC:
        for n in names[1:]:
            if n not in ACHROMATIC:
                if hist[n] >= max(0.2, 0.5 * hist[names[0]]):
                    names.remove(n)
                    names.insert(0, n)
                break
    return names


def dominant_color_name(image: np.ndarray, mask: np.ndarray) -> str:
    """The basic colour name (COLOR_NAMES) of the mask's pixels ("" if empty): the most frequent,
    or a chromatic one with >= 20% of the pixels and half the share of a leading black/white/gray."""
    return next(iter(_ranked(color_histogram(image, mask))), "")


def _position(cx: float, cy: float, w: int, h: int) -> str:
    horiz = "left" if cx < w / 3 else ("right" if cx >= 2 * w / 3 else "center")
    vert = "top" if cy < h / 3 else ("bottom" if cy >= 2 * h / 3 else "middle")
    if horiz == "center" and vert == "middle":
        return "center"
    return f"{vert}-{horiz}"


def describe_region(image: np.ndarray, mask: np.ndarray,
                    box: tuple[float, float, float, float] | None = None) -> dict:
    """Colour and layout of a region.

    Returns {"color", "secondary_color" (None unless >= 15% of the pixels), "area_fraction" (mask
    pixels / image pixels), "position" ("top-left" ... "bottom-right", "center" for the middle
    cell of a 3x3 grid, from the mask's centroid, else the box centre), "size" ("small" < 4% of
    the image, "medium" < 20%, else "large", measured on the box; the mask's box if none given)}.
    """
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    hist = color_histogram(image, mask)
    names = _ranked(hist)
    secondary = names[1] if len(names) > 1 and hist[names[1]] >= SECONDARY_MIN_SHARE else None
    if box is None:
        box = box_of(mask)
    ys, xs = np.nonzero(mask)
    if xs.size:
        cx, cy = float(xs.mean()) + 0.5, float(ys.mean()) + 0.5
    elif box is not None:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    else:
        cx, cy = w / 2, h / 2
    box_frac = 0.0
    if box is not None:
        box_frac = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]) / float(w * h)
    size = "small" if box_frac < 0.04 else ("medium" if box_frac < 0.20 else "large")
    return {
        "color": names[0] if names else "",
        "secondary_color": secondary,
        "area_fraction": float(mask.sum()) / float(w * h),
        "position": _position(cx, cy, w, h),
        "size": size,
    }
