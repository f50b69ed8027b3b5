"""Geometry of move / resize / flip / duplicate: where an object goes (an affine map) and how it is pasted.

Pure functions over arrays; `editing.py` combines them with the workspace (masks, hole filling, SSR update).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

Box = tuple[float, float, float, float]
Side = Literal["left", "right", "above", "below"]
Position = Literal["left", "right", "top", "bottom", "center", "top-left", "top-right", "bottom-left", "bottom-right"]
MARGIN = 0.02  # of the image size, kept free between a moved object and the image border
GAP = 0.05  # of the object's width/height, kept free between an object and the anchor it is placed beside


def position_offset(box: Box, width: int, height: int, position: Position) -> tuple[float, float]:
    """Shift that puts `box` at a named place of the image.

    Horizontal words (left/right/center) move it horizontally only, vertical words (top/bottom) vertically
    only, corners both; the object keeps a small margin to the border.
    """
    x0, y0, x1, y1 = box
    mx, my = MARGIN * width, MARGIN * height
    dx = dy = 0.0
    if "left" in position:
        dx = mx - x0
    elif "right" in position:
        dx = (width - mx) - x1
    elif position == "center":
        dx = width / 2 - (x0 + x1) / 2
    if "top" in position:
        dy = my - y0
    elif "bottom" in position:
        dy = (height - my) - y1
    return dx, dy


def beside_offset(box: Box, anchor: Box, side: Side) -> tuple[float, float]:
    """Shift that puts `box` next to `anchor`. Left/right keep the object's own height in the picture when it
    already overlaps the anchor vertically (it may stand nearer or farther), else put it on the anchor's ground
    line (bottoms aligned); above/below centre it on the anchor."""
    x0, y0, x1, y1 = box
    a0, b0, a1, b1 = anchor
    w, h = x1 - x0, y1 - y0
    dy = 0.0 if min(y1, b1) > max(y0, b0) else b1 - y1
    if side == "left":
        return (a0 - GAP * w) - x1, dy
    if side == "right":
        return (a1 + GAP * w) - x0, dy
    cx = (a0 + a1) / 2 - (x0 + x1) / 2
    if side == "above":
        return cx, b0 - y1
    return cx, (b1 + GAP * h) - y0


def translation(dx: float, dy: float) -> np.ndarray:
    """2×3 affine matrix of a shift."""
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def scaling_about_base(box: Box, scale: float) -> np.ndarray:
    """2×3 affine matrix scaling about the bottom-centre of `box` (the object stays on its ground)."""
    cx, base = (box[0] + box[2]) / 2, box[3]
    return np.array([[scale, 0.0, cx * (1 - scale)], [0.0, scale, base * (1 - scale)]])


def mirror(box: Box, axis: Literal["horizontal", "vertical"]) -> np.ndarray:
    """2×3 affine matrix mirroring the object in place: horizontal = left↔right, vertical = upside down."""
    if axis == "horizontal":
        c = box[0] + box[2]
        return np.array([[-1.0, 0.0, c], [0.0, 1.0, 0.0]])
    c = box[1] + box[3]
    return np.array([[1.0, 0.0, 0.0], [0.0, -1.0, c]])


def map_box(box: Box, matrix: np.ndarray) -> Box:
    """The axis-aligned box of `box` after the affine map."""
    corners = np.array([[box[0], box[1], 1], [box[2], box[1], 1], [box[0], box[3], 1], [box[2], box[3], 1]])
    pts = corners @ matrix.T
    return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))


def warp(image: np.ndarray, alpha: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object's pixels and its float alpha carried by the affine map into the same image frame.

    The alpha is resampled bilinearly (soft, anti-aliased edges); parts mapped outside the frame are cut off.
    """
    h, w = alpha.shape
    # the matrices work on continuous coordinates (pixel i spans [i, i+1)); OpenCV's on pixel centres
    matrix = matrix.copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([0.5, 0.5]) - 0.5
    pixels = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    moved = cv2.warpAffine(alpha.astype(np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return pixels, np.clip(moved, 0.0, 1.0)
