"""ImageNet-1k classification of image regions on CPU: EfficientNet-Lite3 (int8 TFLite) through LiteRT.

`ImageNetClassifier.classify(image, box, mask)` names what a region shows with the 1000 ImageNet classes,
as readable display labels (`imagenet_vocabulary`) with probabilities: finer than the detectors' COCO-80
("Alaskan malamute" for a "dog", "pickup truck" for a "truck", and things COCO lacks: "loudspeaker").

Pre-processing, checked against the model: the input is 1x280x280x3 uint8 RGB and the model file's
metadata says its elements run 0..255, so pixels go in as they are (the tensor's quantisation,
scale 0.0127 / zero point 130, is the model's own affair). A region is the box enlarged by a 10 %
context margin on every side, scaled (aspect kept, area-averaged when shrinking) into 280x280 and
square-padded with grey 130 (the zero point: "no signal" to the first layer) rather than stretched. The
softmax output is uint8 in steps of 1/256; it is dequantised and renormalised to sum to 1 (the quantised
scores sum to 0.7-0.95).

With a mask, pixels outside it are greyed out (PAD_VALUE) when `mask_background` is set. That is off by
default: on the 7 sample-photo regions whose object ImageNet covers (dog.jpg's dog and pickup truck,
person.jpg's dog, horses.jpg's three horses, the eagle; ISNet masks of CenterNet boxes) the mean probability
of the right COCO group fell from 0.52 to 0.47 and the right top-1 group from 4 to 3 of 7: the dog gained
(0.978 -> 0.996), but greyed horses turned into oxen and ibexes (0.486 -> 0.140) and the bald eagle into a
kite bird. The margin around the box keeps context the model was trained with.

Speed on 2 CPU threads (XNNPACK): 30-35 ms per region (1 thread: 52 ms; about 120 ms for the first call,
which loads the model). The model takes one region at a time (its XNNPACK graph cannot be resized to a
batch), so `classify_many` runs them in turn.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .imagenet_vocabulary import imagenet_classes

Box = tuple[float, float, float, float]

ASSET = "efficientnet-lite3"
CONTEXT_MARGIN = 0.1  # of the box's width / height, on every side
PAD_VALUE = 130  # the input zero point


class ImageNetClassifier:
    """EfficientNet-Lite3 over image regions; the interpreter loads on first use (thread-safe)."""

    def __init__(self, model_path: Path | None = None, threads: int = 2, margin: float = CONTEXT_MARGIN,
                 mask_background: bool = False):  # fmt: skip
        self._path = Path(model_path) if model_path is not None else None
        self._threads = max(1, int(threads))
        self.margin = float(margin)
        self.mask_background = bool(mask_background)
        self._interpreter = None
        self._lock = threading.Lock()  # loading, and every set_tensor/invoke/get_tensor sequence

    # -- model -------------------------------------------------------------------------------

    def _load(self) -> None:
        """Open the model (caller holds the lock) and check it is the one the vocabulary describes."""
        from ai_edge_litert.interpreter import Interpreter

        path = self._path
        if path is None:
            from cielr_agent.assets import ensure_asset

            path = ensure_asset(ASSET)
        interpreter = Interpreter(model_path=str(path), num_threads=self._threads)
        interpreter.allocate_tensors()
        (inp,) = interpreter.get_input_details()
        (out,) = interpreter.get_output_details()
        if inp["dtype"] != np.uint8 or len(inp["shape"]) != 4 or inp["shape"][3] != 3:
            raise ValueError(f"{path}: expected a 1xHxWx3 uint8 input, got {inp['shape']} {inp['dtype']}")
        if out["dtype"] != np.uint8 or list(out["shape"]) != [1, len(imagenet_classes())]:
            raise ValueError(f"{path}: expected 1x{len(imagenet_classes())} uint8 scores, got {out['shape']}")
        labels = path.with_name("efficientnet_labels.txt")
        if labels.exists():
            names = [", ".join(c.names) for c in imagenet_classes()]
            if labels.read_text(encoding="utf-8").splitlines() != names:
                raise ValueError(f"{labels} does not list the classes of imagenet_vocabulary.json")
        self._size = (int(inp["shape"][2]), int(inp["shape"][1]))  # (width, height)
        self._input, self._output = inp["index"], out["index"]
        self._out_scale, self._out_zero = out["quantization"]
        self._interpreter = interpreter

    def _scores(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._interpreter is None:
                self._load()
            self._interpreter.set_tensor(self._input, x[None])
            self._interpreter.invoke()
            q = self._interpreter.get_tensor(self._output)[0]
        p = (q.astype(np.float32) - self._out_zero) * self._out_scale
        p = np.clip(p, 0.0, None)
        return p / p.sum() if p.sum() > 0 else np.full_like(p, 1.0 / p.size)

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input (loads the model)."""
        with self._lock:
            if self._interpreter is None:
                self._load()
        return self._size

    # -- regions -----------------------------------------------------------------------------

    def region(self, image: np.ndarray, box: Box | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        """The model input for a box (None: the whole image): its crop with context, masked, square-padded."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
        H, W = image.shape[:2]
        x0, y0, x1, y1 = (0.0, 0.0, float(W), float(H)) if box is None else (float(v) for v in box)
        mx, my = self.margin * max(x1 - x0, 1.0), self.margin * max(y1 - y0, 1.0)
        cx0, cy0 = int(max(0.0, np.floor(x0 - mx))), int(max(0.0, np.floor(y0 - my)))
        cx1, cy1 = int(min(float(W), np.ceil(x1 + mx))), int(min(float(H), np.ceil(y1 + my)))
        if cx1 - cx0 < 1 or cy1 - cy0 < 1:
            raise ValueError(f"box {box} lies outside the {W}x{H} image")
        crop = image[cy0:cy1, cx0:cx1]
        if mask is not None and self.mask_background:
            keep = np.asarray(mask, bool)[cy0:cy1, cx0:cx1]
            if keep.any():
                crop = np.where(keep[:, :, None], crop, np.uint8(PAD_VALUE))
        width, height = self.input_size
        scale = min(width / crop.shape[1], height / crop.shape[0])
        w, h = max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=interpolation)
        out = np.full((height, width, 3), PAD_VALUE, np.uint8)
        top, left = (height - h) // 2, (width - w) // 2
        out[top : top + h, left : left + w] = resized
        return out

    def probabilities(self, image: np.ndarray, box: Box | None = None, mask: np.ndarray | None = None) -> np.ndarray:
        """Probability of each of the 1000 classes (model order, sums to 1) for the region."""
        return self._scores(self.region(image, box, mask))

    def classify(self, image: np.ndarray, box: Box | None = None, mask: np.ndarray | None = None,
                 top_k: int = 3) -> list[tuple[str, float]]:  # fmt: skip
        """The `top_k` classes of the region as (display label, probability), most probable first."""
        return _top(self.probabilities(image, box, mask), top_k)

    def classify_many(self, image: np.ndarray, boxes: Sequence[Box], masks: Sequence[np.ndarray | None] | None = None,
                      top_k: int = 3) -> list[list[tuple[str, float]]]:  # fmt: skip
        """`classify` for each box (with the mask at the same position, if given)."""
        if masks is not None and len(masks) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(masks)} masks")
        return [self.classify(image, box, None if masks is None else masks[i], top_k) for i, box in enumerate(boxes)]


def _top(p: np.ndarray, k: int) -> list[tuple[str, float]]:
    classes = imagenet_classes()
    order = np.argsort(-p, kind="stable")[: max(0, k)]
    return [(classes[i].label, float(p[i])) for i in order]
