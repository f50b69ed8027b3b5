"""The `embedded` detector's logic with stand-in parts: regions answer ImageNet labels, COCO labels go to the
COCO detector, scene hints skip what the scene or COCO already names; verify uses the classifier's presence."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from cielr_agent.graphs.nodes import _still_seen
from cielr_agent.ssr import SceneObject
from cielr_agent.tools.embedded.open_detection import OpenVocabularyDetector
from cielr_agent.tools.embedded.regions import Region
from cielr_agent.tools.protocols import Detection


def _region(box):
    m = np.zeros((100, 100), bool)
    m[box[1]:box[3], box[0]:box[2]] = True
    return Region(mask=m, box=tuple(float(v) for v in box), score=0.9, stability=0.95)


class FakeClassifier:
    def __init__(self, answers):
        self.answers = answers  # box -> top list
        self.calls = 0

    def classify(self, image, box=None, mask=None, top_k=3):
        self.calls += 1
        return self.answers.get(tuple(int(v) for v in box), [("wall", 0.9)])

    def classify_many(self, image, boxes, masks=None, top_k=3):
        return [self.classify(image, b, None, top_k) for b in boxes]


class FakeSegmenter:
    def __init__(self, regions):
        self._regions = regions
        self.calls = 0

    def regions(self, image):
        self.calls += 1
        return self._regions


class FakeCoco:
    def detect(self, image, min_score=0.3, labels=None):
        return [Detection("tv", 0.8, (10.0, 10.0, 50.0, 40.0))] if labels is None or "tv" in labels else []


def _detector(regions, answers):
    det = OpenVocabularyDetector()
    det.coco = FakeCoco()
    det._segmenter = FakeSegmenter(regions)
    det._classifier = FakeClassifier(answers)
    return det


def test_imagenet_labels_are_answered_from_regions_once_per_image():
    speaker, cone, other = (60, 10, 90, 60), (65, 20, 85, 40), (0, 60, 40, 100)
    det = _detector([_region(speaker), _region(cone), _region(other)],
                    {speaker: [("loudspeaker", 0.7)], cone: [("loudspeaker", 0.4)], other: [("table lamp", 0.05)]})
    image = np.zeros((100, 100, 3), np.uint8)
    found = det.detect(image, labels=["loudspeaker", "tv"])
    assert [d.label for d in found] == ["tv", "loudspeaker"]  # the cone inside the speaker is no second one
    assert found[1].box == tuple(float(v) for v in speaker)
    assert det.detect(image, labels=["table lamp"]) == []  # too unsure (0.05 < the 0.12 floor)
    assert det._segmenter.calls == 1  # regions and their labels are cached for the image
    assert det.detect(image) == FakeCoco().detect(image)  # the initial scene is the COCO detector's


def test_scene_hints_name_only_new_non_coco_things():
    det = _detector([], {})
    det._classifier = SimpleNamespace(classify_many=lambda image, boxes, top_k=3: [
        [("loudspeaker", 0.6), ("Alaskan malamute", 0.5)], [("entertainment center", 0.3), ("wall clock", 0.1)],
        [("loudspeaker", 0.4)], [("tv", 0.9)], [("desk", 0.26)]])
    hints = det.scene_hints(np.zeros((80, 120, 3), np.uint8), known=["desk"])
    # malamute falls under COCO "dog", tv is COCO, desk is in the scene, the wall clock is too unsure
    assert hints == ["loudspeaker", "entertainment center"]


def test_verify_asks_the_classifier_about_region_found_objects():
    det = _detector([], {(60, 10, 90, 60): [("loudspeaker", 0.5)]})
    ws = SimpleNamespace(backends=SimpleNamespace(detector=det), image=np.zeros((100, 100, 3), np.uint8),
                         config=SimpleNamespace(min_score=0.3))
    speaker = SceneObject(id=4, label="loudspeaker", score=0.7, box=(60.0, 10.0, 90.0, 60.0))
    (again,) = _still_seen(ws, speaker)  # still seen: a corrective removal follows
    assert again.label == "loudspeaker" and again.box == speaker.box
    det._classifier.answers = {}
    assert _still_seen(ws, speaker) == []
    tv = SceneObject(id=1, label="tv", score=0.8, box=(10.0, 10.0, 50.0, 40.0))
    assert _still_seen(ws, tv)  # COCO labels are re-detected by the detector
