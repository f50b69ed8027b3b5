"""Visual overlay of an SSR: boxes, labels and masks drawn over the image (targets highlighted)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .ssr import SceneGraph

_TARGET = (255, 40, 40)
_OTHER = (40, 160, 255)


def draw_overlay(image: np.ndarray, scene: SceneGraph, targets: list[int] = (),
                 edited: list[np.ndarray] = ()) -> np.ndarray:
    """The image with every object's box and id, masks tinted, edited regions in red; plan targets in red."""
    out = image.astype(np.float32).copy()
    tinted = [(o.mask.to_array(), _OTHER) for o in scene.objects if o.mask is not None]
    for m, colour in [*tinted, *((m, _TARGET) for m in edited)]:
        out[m] = 0.55 * out[m] + 0.45 * np.array(colour, np.float32)
    canvas = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    size = max(12, round(max(canvas.size) / 45))  # labels readable when the picture is shown scaled down
    font = ImageFont.load_default(size=size)
    for obj in scene.objects:
        colour = _TARGET if obj.id in targets else _OTHER
        draw.rectangle(obj.box, outline=colour, width=3 if obj.id in targets else 2)
        text = f"#{obj.id} {obj.label} {obj.score:.2f}"
        x, y = obj.box[0] + 3, max(0, obj.box[1] - size - 4)
        draw.rectangle(draw.textbbox((x, y), text, font=font), fill=(0, 0, 0))
        draw.text((x, y), text, fill=colour, font=font)
    return np.asarray(canvas)
