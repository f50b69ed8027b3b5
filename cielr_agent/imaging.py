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
    if not p.is_file():  # a FIFO or device would block the read or never end
        raise ImageInputError(f"{p} is not a regular file; give the path of an image file")
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            rgb = im.convert("RGB")
    except Image.DecompressionBombError:
        raise ImageInputError(f"{p} declares more than {2 * Image.MAX_IMAGE_PIXELS // 1_000_000} million pixels "
                              "(a decompression bomb, or a huge image): downscale it first") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageInputError(f"cannot read {p} as an image ({exc}); use a PNG, JPEG or WebP file") from None
    arr = np.asarray(rgb, dtype=np.uint8).copy()
    if min(arr.shape[:2]) < 16:
        raise ImageInputError(f"image {p} is too small ({arr.shape[1]}x{arr.shape[0]}); need at least 16x16 px")
    return arr


OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def check_output_path(output: str | Path, image: str | Path | None = None) -> Path:
    """The output path, checked before any work is done: a supported suffix, not the input (nor a link to it),
    not a folder, and a parent folder that exists or can be made. Raises EditError saying what to change."""
    from .errors import EditError

    p = Path(output)
    if not str(output).strip():
        raise EditError("the output path is empty; give a file name such as out.png")
    if p.suffix.lower() not in OUTPUT_SUFFIXES:
        raise EditError(f"cannot write {p.name}: use one of {', '.join(OUTPUT_SUFFIXES)} for the output")
    if image is not None and p.resolve() == Path(image).resolve():
        raise EditError(f"output {p} is the input image; the input is never overwritten, choose another path")
    if p.is_dir():
        raise EditError(f"output {p} is a folder; give a file path inside it, e.g. {p / 'out.png'}")
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise EditError(f"cannot write {p}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise EditError(f"cannot write {p}: no permission to write in {ancestor}")
    return p


def _atomic(path: Path, write) -> None:
    """Write through a temp file beside `path`, renamed into place: `path` is whole or untouched, no temp file stays.
    An OSError (a full disk, a file-size limit, a read-only folder) becomes an EditError that says so."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            from .errors import EditError

            raise EditError(f"cannot write {path} ({exc.strerror or exc}); nothing was written: free some space "
                            "or choose another folder") from exc
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
