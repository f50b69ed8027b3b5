"""COCO-80 object detection with the embedded TFJS detectors (MobileNetV3-CenterNet, NanoDet-m 416).

Both models run through `TfjsGraph` (numpy only, no TensorFlow or torch). `detect()` takes an H×W×3 uint8 RGB
image of any size and returns `Detection`s in the original image's pixel coordinates, sorted by score,
after class-wise non-maximum suppression, with boxes clipped to the image.

Pre-processing follows the models' training set-ups, checked on the sample photos:
- CenterNet: RGB 0-255, letterboxed (aspect kept, centred, zero padding) into 512×512, as the
  original mobilenetv3_centernet predictor does. Its graph already decodes boxes (heat-map peaks,
  top-100) into `tower_0/detections`.
- NanoDet-m: BGR, (x - mean) / std with the NanoDet means/stds, plain resize to 416×416 (gave better
  boxes and scores than letterboxing on the sample photos). GFL decode per stride 8/16/32: softmax
  over 11 bins per side, expectation × stride, distances from cell centres ((col + 0.5) × stride).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from ..protocols import Detection
from .tfjs_graph import TfjsGraph

COCO_LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
_LABEL_INDEX = {name: i for i, name in enumerate(COCO_LABELS)}

NMS_IOU = 0.5



def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width < image.shape[1] or height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU, contained: float = 0.9) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    A box is also suppressed when at least `contained` of it lies inside a better box (a part of the same object).
    """
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        inside = inter / np.maximum(areas[rest], 1e-9)
        order = rest[(overlap <= iou) & (inside < contained)]
    return np.asarray(keep, dtype=np.int64)


def _label_filter(labels: Iterable[str] | None) -> set[int] | None:
    if labels is None:
        return None
    wanted = [labels] if isinstance(labels, str) else list(labels)
    unknown = [name for name in wanted if name not in _LABEL_INDEX]
    if unknown:
        raise ValueError(f"not COCO labels: {unknown} (map free text with CocoLabelMapper.resolve first)")
    return {_LABEL_INDEX[name] for name in wanted}


def _finish(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    width: int,
    height: int,
    min_score: float,
    labels: Iterable[str] | None,
) -> list[Detection]:
    """Score/label filter, clip to the image, class-wise NMS, sort by score."""
    keep = scores >= min_score
    wanted = _label_filter(labels)
    if wanted is not None:
        keep &= np.isin(classes, list(wanted))
    boxes, scores, classes = boxes[keep].astype(np.float64), scores[keep], classes[keep]
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, classes = boxes[valid], scores[valid], classes[valid]
    result: list[Detection] = []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        for k in nms(boxes[idx], scores[idx]):
            b = boxes[idx[k]]
            box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
            result.append(Detection(COCO_LABELS[int(c)], float(scores[idx[k]]), box))
    result.sort(key=lambda d: -d.score)
    return result


class CenterNetDetector:
    """MobileNetV3-CenterNet (512×512, COCO-80), ~4 MB."""

    name = "centernet"
    input_size = 512
    _input, _output = "tower_0/images", "tower_0/detections"

    def __init__(self, model_json: Path | None = None):
        if model_json is None:
            from cielr_agent.assets import ensure_asset

            model_json = ensure_asset("centernet")
        self.graph = TfjsGraph(Path(model_json))

    def detect(self, image: np.ndarray, min_score: float = 0.3, labels: Iterable[str] | None = None) -> list[Detection]:
        image = _as_rgb(image)
        height, width = image.shape[:2]
        size = self.input_size
        scale = size / max(width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        dx, dy = (size - w) // 2, (size - h) // 2
        canvas = np.zeros((size, size, 3), np.float32)
        canvas[dy : dy + h, dx : dx + w] = _resize(image, w, h)
        det = self.graph.run({self._input: canvas[None]}, [self._output])[self._output][0]
        sx, sy = w / width, h / height  # exact per-axis scales of the resize
        boxes = (det[:, :4] - [dx, dy, dx, dy]) / [sx, sy, sx, sy]
        classes = det[:, 5].astype(np.int64)
        ok = np.isfinite(det[:, 4]) & (classes >= 0) & (classes < len(COCO_LABELS))
        return _finish(boxes[ok], det[ok, 4], classes[ok], width, height, min_score, labels)


class NanoDetDetector:
    """NanoDet-m (416×416, COCO-80, GFL head with 11 distance bins), ~7 MB."""

    name = "nanodet"
    input_size = 416
    strides = (8, 16, 32)
    bins = 11
    mean_bgr = np.array([103.53, 116.28, 123.675], np.float32)
    std_bgr = np.array([57.375, 57.12, 58.395], np.float32)
    _input = "input_1"

    def __init__(self, model_json: Path | None = None):
        if model_json is None:
            from cielr_agent.assets import ensure_asset

            model_json = ensure_asset("nanodet")
        self.graph = TfjsGraph(Path(model_json))
        # outputs per stride, told apart by shape: scores [1, N, 80], box distributions [1, N, 4*bins]
        self._outputs: dict[int, tuple[str, str]] = {}
        shapes = {
            name: [int(d["size"]) for d in spec["tensorShape"]["dim"]]
            for name, spec in self.graph.signature["outputs"].items()
        }
        for stride in self.strides:
            cells = (self.input_size // stride) ** 2
            cls = next(n for n, s in shapes.items() if s[1:] == [cells, len(COCO_LABELS)])
            reg = next(n for n, s in shapes.items() if s[1:] == [cells, 4 * self.bins])
            self._outputs[stride] = (cls, reg)

    def detect(self, image: np.ndarray, min_score: float = 0.3, labels: Iterable[str] | None = None) -> list[Detection]:
        image = _as_rgb(image)
        height, width = image.shape[:2]
        size = self.input_size
        x = (_resize(image, size, size)[:, :, ::-1].astype(np.float32) - self.mean_bgr) / self.std_bgr
        names = [n for pair in self._outputs.values() for n in pair]
        out = self.graph.run({self._input: np.ascontiguousarray(x.transpose(2, 0, 1)[None])}, names)
        all_boxes, all_scores, all_classes = [], [], []
        for stride, (cls_name, reg_name) in self._outputs.items():
            scores = out[cls_name][0]
            cell, cls = np.nonzero(scores >= min_score)  # every (cell, class) pair over the threshold
            if cell.size == 0:
                continue
            logits = out[reg_name][0][cell].reshape(-1, 4, self.bins)
            prob = np.exp(logits - logits.max(axis=-1, keepdims=True))
            prob /= prob.sum(axis=-1, keepdims=True)
            dist = (prob @ np.arange(self.bins, dtype=np.float32)) * stride  # left, top, right, bottom
            cols = size // stride
            cx, cy = (cell % cols + 0.5) * stride, (cell // cols + 0.5) * stride
            boxes = np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1)
            all_boxes.append(boxes * [width / size, height / size, width / size, height / size])
            all_scores.append(scores[cell, cls])
            all_classes.append(cls)
        if not all_boxes:
            return []
        boxes, scores, classes = (np.concatenate(a) for a in (all_boxes, all_scores, all_classes))
        return _finish(boxes, scores, classes, width, height, min_score, labels)


Detector = CenterNetDetector | NanoDetDetector


def make_detector(name: str) -> Detector:
    """A detector by name: "centernet" (default choice) or "nanodet"."""
    key = name.strip().lower()
    if key == "centernet":
        return CenterNetDetector()
    if key == "nanodet":
        return NanoDetDetector()
    raise ValueError(f"unknown detector {name!r}; choose 'centernet' or 'nanodet'")
