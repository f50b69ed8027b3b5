"""The embedded CPU backends: registry-shipped models behind the tool protocols."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..protocols import Box, Detection


class CocoDetector:
    """COCO-80 detection (CenterNet or NanoDet) with free-text → COCO label mapping."""

    def __init__(self, model: str = "centernet"):
        self.model = model
        self._detector = None
        self._mapper = None

    def _net(self):
        if self._detector is None:
            from .coco_detection import make_detector

            self._detector = make_detector(self.model)
        return self._detector

    def detect(self, image: np.ndarray, min_score: float = 0.3, labels: Iterable[str] | None = None) -> list[Detection]:
        found = self._net().detect(image, min_score=min_score, labels=labels)
        return [Detection(label=d.label, score=float(d.score), box=tuple(float(v) for v in d.box)) for d in found]

    @property
    def closed_vocabulary(self) -> tuple[str, ...]:
        """The only labels this detector can find (the 80 COCO classes)."""
        from .coco_detection import COCO_LABELS

        return COCO_LABELS

    def resolve_label(self, text: str) -> str | None:
        if self._mapper is None:
            from .label_mapping import CocoLabelMapper

            self._mapper = CocoLabelMapper()
        return self._mapper.resolve(text)


class AttributeDescriber:
    """Attribute extraction: colour names, size, position (the embedded stand-in for a captioner)."""

    def describe(self, image: np.ndarray, mask: np.ndarray, box: Box, detail: bool = False) -> dict[str, str | float]:
        from .attributes import describe_region

        return {k: v for k, v in describe_region(image, mask, box).items() if v is not None}


class ClassicRemover:
    """PatchMatch inpainting from a band around the hole, OpenCV Telea for thin masks."""

    takes_protect = True  # `protect` pixels are never used as PatchMatch sources

    def __init__(self, method: str = "auto"):
        self.method = method

    def remove(self, image: np.ndarray, mask: np.ndarray, protect: np.ndarray | None = None) -> np.ndarray:
        from .inpainting import remove_object

        return remove_object(image, mask, method=self.method, protect=protect)


class OklabRecolorer:
    """Hue/chroma shift in OKLab inside a soft mask, keeping lightness texture."""

    def recolor(self, image: np.ndarray, alpha: np.ndarray, color: str) -> np.ndarray:
        from .recolor import recolor

        return recolor(image, alpha, color)
