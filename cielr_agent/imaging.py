"""Reading input images safely and writing outputs atomically."""

from __future__ import annotations

import hashlib

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageInputError(ValueError):
    """The input image cannot be used."""


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB (EXIF orientation applied); never writes to it."""
    p = Path(path)
    if not p.exists():
        raise ImageInputError(f"image not found: {p}")
    if p.is_dir():
        raise ImageInputError(f"expected an image file, got a directory: {p}")
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageInputError(f"cannot read {p} as an image ({exc}); use a PNG, JPEG or WebP file") from None
    arr = np.asarray(rgb, dtype=np.uint8).copy()
    if min(arr.shape[:2]) < 16:
        raise ImageInputError(f"image {p} is too small ({arr.shape[1]}x{arr.shape[0]}); need at least 16x16 px")
    return arr


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_image_atomic(image: np.ndarray, path: str | Path) -> Path:
    """Write an RGB image (format from the suffix; PNG if unknown) via a temp file and rename."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".png": "PNG"}.get(path.suffix.lower(), "PNG")
    kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    _atomic(path, lambda tmp: Image.fromarray(image).save(tmp, format=fmt, **kwargs))
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file via a temp file and rename."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write a binary file via a temp file and rename."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_bytes(data))
    return Path(path)


def image_key(image: np.ndarray) -> str:
    """A cheap identity of an image's pixels: shape, dtype and a hash of the bytes."""
    data = np.ascontiguousarray(image)
    return f"{data.shape}:{data.dtype}:{hashlib.blake2b(data.data, digest_size=16).hexdigest()}"
