"""Deterministic stand-in backends for graph unit tests (the real ones are tested on real photos)."""

from __future__ import annotations

import numpy as np

from cielr_agent.tools import Backends
from cielr_agent.tools.embedded.backends import AttributeDescriber, OklabRecolorer
from cielr_agent.tools.protocols import Detection


class FakeDetector:
    """Returns fixed detections; `hidden` ones are found only when asked for by label at a low threshold.

    A detection disappears once most pixels of its box differ from the first image seen (it was edited away),
    unless `sticky` is set (an object that "survives" removal, to exercise verification).
    """

    def __init__(self, detections: list[Detection], hidden: list[Detection] = (), sticky: bool = False):
        self.detections = list(detections)
        self.hidden = list(hidden)
        self.sticky = sticky
        self.first_image = None
        self.calls: list[tuple] = []

    def _visible(self, image, det) -> bool:
        if self.sticky or self.first_image is None:
            return True
        x0, y0, x1, y1 = (int(v) for v in det.box)
        diff = np.any(image[y0:y1, x0:x1] != self.first_image[y0:y1, x0:x1], axis=2)
        return diff.mean() < 0.3

    def detect(self, image, min_score=0.3, labels=None):
        if self.first_image is None:
            self.first_image = image.copy()
        self.calls.append((min_score, tuple(labels) if labels else None))
        pool = self.detections + (self.hidden if labels else [])
        out = [d for d in pool if d.score >= min_score and self._visible(image, d)]
        return [d for d in out if labels is None or d.label in set(labels)]

    def resolve_label(self, text):
        text = text.lower().strip().rstrip("s")
        return {"bike": "bicycle", "bicycle": "bicycle", "dog": "dog", "truck": "truck", "cup": "cup",
                "knife": "knife"}.get(text)


class BoxSegmenter:
    """The box interior (inset by 10 %) as the mask."""

    def segment_box(self, image, box, exclude=None):
        h, w = image.shape[:2]
        x0, y0, x1, y1 = box
        dx, dy = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
        m = np.zeros((h, w), bool)
        m[int(y0 + dy):int(y1 - dy), int(x0 + dx):int(x1 - dx)] = True
        return m if exclude is None else m & ~exclude


class ExactBoxSegmenter:
    """The full box as the mask (exact, so expected pixels can be computed)."""

    def segment_box(self, image, box, exclude=None):
        m = np.zeros(image.shape[:2], bool)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        m[y0:y1, x0:x1] = True
        return m if exclude is None else m & ~exclude


class MeanFillRemover:
    """Fills the hole with the mean colour of the image outside it."""

    def __init__(self, detector: FakeDetector | None = None, label: str | None = None):
        self.detector, self.label = detector, label

    def remove(self, image, mask):
        out = image.copy()
        out[mask] = image[~mask].mean(axis=0).astype(np.uint8)
        return out


def fake_backends(detector: FakeDetector) -> Backends:
    return Backends(detector=detector, segmenter=BoxSegmenter(), describer=AttributeDescriber(),
                    remover=MeanFillRemover(), recolorer=OklabRecolorer())


def dog_scene_detections() -> list[Detection]:
    """Roughly the objects of examples/dog.jpg (768×576)."""
    return [
        Detection("bicycle", 0.85, (120.0, 125.0, 575.0, 425.0)),
        Detection("dog", 0.9, (130.0, 220.0, 315.0, 545.0)),
        Detection("truck", 0.7, (465.0, 75.0, 690.0, 170.0)),
    ]
