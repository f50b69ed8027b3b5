"""The `embedded` detector: COCO-80 detection plus regions labelled with the 1,000 ImageNet classes.

The initial scene comes from the COCO detector (fast, well calibrated boxes). Things no detector names
(a loudspeaker, a wall clock, a trash can) are found on demand: `detect(labels=[...])` with an ImageNet label
builds MobileSAM's class-agnostic regions of the image once (cached per image), classifies each region's crop
with EfficientNet-Lite3 and answers with the regions whose top classes hold the label. Measured on 2 cores:
regions cost ≈ 8–15 s per image (12×12 point prompts, then up to 48 crops classified), so they are not part of every perception;
`scene_hints` gives the planner a cheap preview instead (ImageNet labels of a few whole-image crops).
"""

from __future__ import annotations

import threading
from typing import Iterable

import numpy as np

from cielr_agent.imaging import image_key

from ..protocols import Box, Detection
from .backends import CocoDetector

REGION_TOP_K = 5
REGION_MIN_PROB = 0.12  # a region "is" a class when it is among its top 5 with at least this probability
HINT_MIN_PROB = 0.25
MAX_REGIONS = 48  # classified per image (≈ 20–50 ms each)


class OpenVocabularyDetector:
    """CenterNet (or NanoDet) for COCO labels; MobileSAM regions + EfficientNet-Lite3 for ImageNet labels."""

    vocabulary_hint = ("The detector finds the 80 COCO kinds and about 1,000 everyday ImageNet kinds of thing "
                       "(loudspeaker, table lamp, wall clock, trash can, tripod, ...): give plain, common names.")

    def __init__(self, coco_model: str = "centernet", points_per_side: int = 12):
        self.coco = CocoDetector(coco_model)
        self.points_per_side = points_per_side
        self._mapper = None
        self._classifier = None
        self._segmenter = None
        self._labelled: tuple[str, list[tuple[object, list[tuple[str, float]]]]] | None = None
        self._lock = threading.Lock()

    # --- parts ------------------------------------------------------------------------------------------

    @property
    def classifier(self):
        if self._classifier is None:
            from .classifier import ImageNetClassifier

            self._classifier = ImageNetClassifier()
        return self._classifier

    @property
    def segmenter(self):
        if self._segmenter is None:
            from .sam_segmenter import MobileSamSegmenter

            self._segmenter = MobileSamSegmenter(points_per_side=self.points_per_side)
        return self._segmenter

    def resolve_label(self, text: str) -> str | None:
        """A COCO label or an ImageNet display label for free text, or None."""
        if self._mapper is None:
            from .vocabulary_mapping import VocabularyMapper

            self._mapper = VocabularyMapper()
        return self._mapper.resolve(text)

    # --- detection --------------------------------------------------------------------------------------

    def detect(self, image: np.ndarray, min_score: float = 0.3, labels: Iterable[str] | None = None
               ) -> list[Detection]:
        if labels is None:
            return self.coco.detect(image, min_score=min_score)
        from .coco_detection import COCO_LABELS

        labels = list(labels)
        coco = [lab for lab in labels if lab in COCO_LABELS]
        other = [lab for lab in labels if lab not in COCO_LABELS]
        found = self.coco.detect(image, min_score=min_score, labels=coco) if coco else []
        if other:
            found += self.detect_in_regions(image, other)
        return found

    def detect_in_regions(self, image: np.ndarray, labels: list[str]) -> list[Detection]:
        """Regions whose top ImageNet classes include one of `labels` (best region first, no nested repeats)."""
        wanted = {lab.lower() for lab in labels}
        hits = []
        for region, top in self.labelled_regions(image):
            for label, prob in top:
                if label.lower() in wanted and prob >= REGION_MIN_PROB:
                    hits.append(Detection(label=label, score=round(float(prob), 3), box=region.box))
                    break
        hits.sort(key=lambda d: -d.score)
        kept: list[Detection] = []
        for det in hits:  # a part of a found object (a speaker's cone) is not another one
            if not any(d.label == det.label and _inside(det.box, d.box) for d in kept):
                kept.append(det)
        return kept

    def labelled_regions(self, image: np.ndarray) -> list:
        """(region, top ImageNet classes) for every class-agnostic region of the image, cached per image."""
        key = image_key(image)
        with self._lock:
            if self._labelled is None or self._labelled[0] != key:
                regions = self.segmenter.regions(image)[:MAX_REGIONS]  # largest first
                tops = self.classifier.classify_many(image, [r.box for r in regions], [r.mask for r in regions],
                                                     top_k=REGION_TOP_K)
                self._labelled = (key, list(zip(regions, tops)))
            return self._labelled[1]

    def presence(self, image: np.ndarray, label: str, box: Box) -> float:
        """How strongly the classifier still sees `label` in `box` (for verifying a removal)."""
        top = self.classifier.classify(image, box, top_k=REGION_TOP_K)
        return max((p for lab, p in top if lab.lower() == label.lower()), default=0.0)

    def scene_hints(self, image: np.ndarray, known: Iterable[str] = ()) -> list[str]:
        """ImageNet labels that a few whole-image crops (the image and its 2×2 quarters) show clearly and that
        are no COCO label nor already in the scene: candidates worth a `detect_objects` call."""
        from .imagenet_vocabulary import coco_label

        h, w = image.shape[:2]
        crops: list[Box] = [(0, 0, w, h)] + [(x * w / 2, y * h / 2, (x + 1) * w / 2, (y + 1) * h / 2)
                                             for y in (0, 1) for x in (0, 1)]
        known = {k.lower() for k in known}
        best: dict[str, float] = {}
        for top in self.classifier.classify_many(image, crops, top_k=3):
            for label, prob in top:
                if prob >= HINT_MIN_PROB and coco_label(label) is None and label.lower() not in known:
                    best[label] = max(best.get(label, 0.0), prob)
        return [lab for lab, _ in sorted(best.items(), key=lambda kv: -kv[1])][:5]


def _inside(a: Box, b: Box, frac: float = 0.8) -> bool:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return area > 0 and ix * iy >= frac * area
