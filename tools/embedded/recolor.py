"""Recolouring in OKLab: colour-name parsing, sRGB <-> OKLab, and a shading-preserving recolour.

OKLab (Björn Ottosson, 2020) is perceptually uniform enough that replacing hue and chroma while
keeping each pixel's lightness offset keeps folds, shadows and texture of the recoloured object.
"""

from __future__ import annotations

import re

import numpy as np

from cielr_agent.masks import composite

Color = tuple[int, int, int]

# --- sRGB <-> OKLab ---------------------------------------------------------------------------

_M1 = np.array([  # linear sRGB -> LMS
    [0.4122214708, 0.5363325363, 0.0514459929],
    [0.2119034982, 0.6806995451, 0.1073969566],
    [0.0883024619, 0.2817188376, 0.6299787005],
])
_M2 = np.array([  # LMS^(1/3) -> Lab
    [0.2104542553, 0.7936177850, -0.0040720468],
    [1.9779984951, -2.4285922050, 0.4505937099],
    [0.0259040371, 0.7827717662, -0.8086757660],
])
_M1_INV = np.linalg.inv(_M1)
_M2_INV = np.linalg.inv(_M2)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB in 0..1 -> linear light."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB in 0..1 (no clipping)."""
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.abs(c) ** (1 / 2.4) * np.sign(c) - 0.055)


def rgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """uint8 (or 0..255 float) RGB, shape (..., 3) -> OKLab (..., 3) float64 (L in 0..1)."""
    lin = srgb_to_linear(np.asarray(rgb, dtype=np.float64) / 255.0)
    lms = lin @ _M1.T
    return np.cbrt(lms) @ _M2.T


def oklab_to_linear(lab: np.ndarray) -> np.ndarray:
    """OKLab (..., 3) -> linear sRGB (..., 3), unclipped (may lie outside 0..1 when out of gamut)."""
    lms_ = np.asarray(lab, dtype=np.float64) @ _M2_INV.T
    return (lms_ ** 3) @ _M1_INV.T


def oklab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """OKLab (..., 3) -> uint8 RGB, clipped to the sRGB cube."""
    srgb = linear_to_srgb(np.clip(oklab_to_linear(lab), 0.0, 1.0))
    return np.clip(np.rint(srgb * 255.0), 0, 255).astype(np.uint8)


def oklab_to_lch(lab: np.ndarray) -> np.ndarray:
    """OKLab -> (L, C, h) with h in degrees 0..360."""
    lab = np.asarray(lab, dtype=np.float64)
    c = np.hypot(lab[..., 1], lab[..., 2])
    h = np.degrees(np.arctan2(lab[..., 2], lab[..., 1])) % 360.0
    return np.stack([lab[..., 0], c, h], axis=-1)


def _max_chroma_in_gamut(L: np.ndarray, a_dir: float, b_dir: float, c_want: np.ndarray,
                         steps: int = 14) -> np.ndarray:
    """Per pixel, the largest chroma <= c_want along (a_dir, b_dir) that stays inside sRGB."""
    lo = np.zeros_like(c_want)
    hi = c_want.copy()
    ok = _in_gamut(L, a_dir * hi, b_dir * hi)
    res = np.where(ok, hi, 0.0)
    todo = ~ok
    if not todo.any():
        return res
    Lt, lo, hi = L[todo], lo[todo], hi[todo]
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        inside = _in_gamut(Lt, a_dir * mid, b_dir * mid)
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    res[todo] = lo
    return res


def _in_gamut(L: np.ndarray, a: np.ndarray, b: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    lin = oklab_to_linear(np.stack([L, a, b], axis=-1))
    return ((lin >= -eps) & (lin <= 1 + eps)).all(axis=-1)


def _fit_offsets(offsets: np.ndarray, mean: float) -> np.ndarray:
    """Scale negative and positive lightness offsets separately so that 95% of them fit between
    0 and 1 around `mean`, then roll off the rest smoothly instead of hard clipping."""
    out = offsets.copy()
    for sign, room in ((-1.0, mean), (1.0, 1.0 - mean)):
        part = out * sign > 0
        if not part.any() or room <= 0:
            out[part] = 0.0
            continue
        mag = out[part] * sign
        p95 = float(np.percentile(mag, 95))
        if p95 > 0.9 * room:
            mag = mag * (0.9 * room / p95)
        # soft knee: magnitudes past 0.8 * room approach room asymptotically
        knee = 0.8 * room
        over = mag > knee
        mag[over] = knee + (room - knee) * np.tanh((mag[over] - knee) / (room - knee))
        out[part] = sign * mag
    return out


# --- colour names ---------------------------------------------------------------------------------

_EXAMPLES = '"blue", "navy", "gold", "crimson", "dark green", "#1e90ff", "#f0a"'


def parse_color(spec: str | tuple | list) -> Color:
    """CSS/X11 colour name ("navy", "light blue", "grey"), "#rgb", "#rrggbb" or an (r, g, b) tuple."""
    if isinstance(spec, (tuple, list, np.ndarray)):
        vals = [int(v) for v in spec]
        if len(vals) != 3 or any(v < 0 or v > 255 for v in vals):
            raise ValueError(f"an RGB colour needs three values 0..255, got {spec!r}")
        return vals[0], vals[1], vals[2]
    if not isinstance(spec, str):
        raise ValueError(f"unknown colour {spec!r}; try e.g. {_EXAMPLES}")
    from PIL import ImageColor

    text = spec.strip().lower()
    m = re.fullmatch(r"#?([0-9a-f]{3}|[0-9a-f]{6})", text)
    if m:
        hexs = m.group(1)
        if len(hexs) == 3:
            hexs = "".join(ch * 2 for ch in hexs)
        return int(hexs[0:2], 16), int(hexs[2:4], 16), int(hexs[4:6], 16)
    name = re.sub(r"[\s_\-]+", "", text)
    if name in ImageColor.colormap:
        rgb = ImageColor.getrgb(name)
        return int(rgb[0]), int(rgb[1]), int(rgb[2])
    raise ValueError(f"unknown colour {spec!r}; use a CSS colour name or a hex code, e.g. {_EXAMPLES}")


# --- recolour -----------------------------------------------------------------------------------

ACHROMATIC_C = 0.03  # OKLab chroma below which a colour counts as white/grey/black


def recolor(image: np.ndarray, alpha: np.ndarray, color: str | tuple, lightness_shift: float = 0.6,
            chroma_texture: float = 0.3) -> np.ndarray:
    """Recolour the soft-masked region of an RGB uint8 image to `color`.

    Per pixel in OKLab: hue becomes the target's; chroma becomes the target's, modulated by
    `chroma_texture` of the pixel's relative chroma and reduced where needed to stay in sRGB;
    lightness keeps its offset from the region's mean while the mean moves `lightness_shift` of
    the way to the target's L (so shading and texture survive). Achromatic targets (white, grey,
    black) drop the chroma. The result is blended with `alpha`; alpha == 0 pixels are unchanged.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
    alpha = np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0)
    if alpha.shape != image.shape[:2]:
        raise ValueError(f"alpha must be {image.shape[:2]}, got {alpha.shape}")
    sel = alpha > 0
    if not sel.any():
        return image.copy()
    target = rgb_to_oklab(np.array(parse_color(color), dtype=np.float64))
    Lt, ct = float(target[0]), float(np.hypot(target[1], target[2]))

    lab = rgb_to_oklab(image[sel])
    w = alpha[sel].astype(np.float64)
    L = lab[:, 0]
    c = np.hypot(lab[:, 1], lab[:, 2])
    mean_L = float(np.average(L, weights=w))
    mean_c = float(np.average(c, weights=w))

    # lightness: move the mean part of the way, keep the per-pixel offsets (shading, texture)
    shift = lightness_shift
    if ct >= ACHROMATIC_C and mean_c < ACHROMATIC_C:
        shift = max(shift, 0.8)  # white/grey/black source to a colour: needs the colour's L
    offsets = L - mean_L
    new_mean = mean_L + shift * (Lt - mean_L)
    L_new = new_mean + _fit_offsets(offsets, new_mean)

    # chroma and hue
    if ct < ACHROMATIC_C:
        a_new = np.full_like(L_new, target[1])
        b_new = np.full_like(L_new, target[2])
    else:
        a_dir, b_dir = target[1] / ct, target[2] / ct
        if mean_c >= ACHROMATIC_C:
            rel = np.clip(c / mean_c, 0.0, 2.0)
            c_want = ct * ((1.0 - chroma_texture) + chroma_texture * rel)
        else:
            c_want = np.full_like(L_new, ct)
        # near-black, colourless pixels far below the region's mean (tyres, window shadows of a
        # white car) stay dark-neutral instead of turning into a dark version of the colour
        dark = np.clip((mean_L - L - 0.25) / 0.2, 0.0, 1.0) * (c < ACHROMATIC_C)
        c_want = c_want * (1.0 - dark)
        # dark and very light pixels cannot hold much chroma: clip into the sRGB gamut
        c_new = _max_chroma_in_gamut(L_new, a_dir, b_dir, c_want)
        a_new, b_new = a_dir * c_new, b_dir * c_new

    edited = image.copy()
    edited[sel] = oklab_to_rgb(np.stack([L_new, a_new, b_new], axis=-1))
    return composite(image, edited, alpha)
