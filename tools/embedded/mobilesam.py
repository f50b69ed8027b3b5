"""MobileSAM on onnxruntime: embed an image once, then answer many box / point / mask prompts.

`MobileSamPredictor` follows segment-anything's split: `set_image` runs the TinyViT encoder (≈2 s on 2 cores)
and keeps the embedding until the image changes; `predict` and `predict_batch` run the light prompt decoder
(a few tens of ms per prompt). Prompts are in image pixels; masks come back at the image's size.
Runtime needs onnxruntime, numpy and OpenCV only; the ONNX files are exported once by `cielr setup`
(asset `mobilesam`, built by `mobilesam_onnx.py`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cielr_agent.imaging import image_key

IMAGE_SIZE = 1024
LOW_RES = 256
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], np.float32)
BOX_LABELS = (2.0, 3.0)


@dataclass
class Prediction:
    """Masks for one prompt: bool k×H×W, predicted IoU per mask, and the low-res logits (k×256×256) that can be
    fed back as a mask prompt."""

    masks: np.ndarray
    scores: np.ndarray
    low_res: np.ndarray


class MobileSamPredictor:
    """Embedding cache + prompt decoder. Thread-safe; one instance is shared per process."""

    def __init__(self, encoder: Path | None = None, decoder: Path | None = None, threads: int = 2):
        self._paths = (encoder, decoder)
        self._threads = threads
        self._sessions = None
        self._lock = threading.RLock()
        self._key: str | None = None
        self._embedding: np.ndarray | None = None
        self._shape = (0, 0)
        self._scale = 1.0

    # --- model ------------------------------------------------------------------------------------------

    def _load(self):
        if self._sessions is None:
            import onnxruntime as ort

            encoder, decoder = self._paths
            if encoder is None or decoder is None:
                from cielr_agent.assets import asset_dir, ensure_asset

                ensure_asset("mobilesam")
                folder = asset_dir("mobilesam")
                encoder, decoder = folder / "mobilesam_encoder.onnx", folder / "mobilesam_decoder.onnx"
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, self._threads)
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            opts.enable_cpu_mem_arena = False
            opts.enable_mem_pattern = False  # the decoder sees many prompt-batch shapes; a plan per shape grew
            providers = ["CPUExecutionProvider"]  # the process by gigabytes over an evaluation run
            self._sessions = (ort.InferenceSession(str(encoder), opts, providers=providers),
                              ort.InferenceSession(str(decoder), opts, providers=providers))
        return self._sessions

    # --- image ------------------------------------------------------------------------------------------

    def set_image(self, image: np.ndarray) -> None:
        """Embed an H×W×3 uint8 RGB image; a no-op when it is the image embedded last."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8 RGB, got {image.shape} {image.dtype}")
        key = image_key(image)
        with self._lock:
            if key == self._key:
                return
            encoder, _ = self._load()
            h, w = image.shape[:2]
            scale = IMAGE_SIZE / max(h, w)
            nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
            resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            x = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
            x[:nh, :nw] = (resized.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
            self._embedding = encoder.run(None, {"image": x.transpose(2, 0, 1)[None]})[0]
            self._key, self._shape, self._scale = key, (h, w), scale

    @property
    def image_shape(self) -> tuple[int, int]:
        return self._shape

    # --- prompts ----------------------------------------------------------------------------------------

    def predict_batch(self, coords: np.ndarray, labels: np.ndarray, mask_input: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Decode B prompts of N points each (B×N×2 image px, B×N labels: 1 on, 0 off, 2/3 box corners, -1 pad).

        Returns low-res logits B×4×256×256 and predicted IoU B×4 (0: single-mask output, 1–3: multimask)."""
        if self._embedding is None:
            raise RuntimeError("call set_image first")
        _, decoder = self._load()
        coords = np.asarray(coords, np.float32) * self._scale
        labels = np.asarray(labels, np.float32)
        b = coords.shape[0]
        if mask_input is None:
            mask, has = np.zeros((b, 1, LOW_RES, LOW_RES), np.float32), np.zeros(1, np.float32)
        else:
            mask = np.asarray(mask_input, np.float32).reshape(b, 1, LOW_RES, LOW_RES)
            has = np.ones(1, np.float32)
        with self._lock:
            low, iou = decoder.run(None, {"image_embeddings": self._embedding, "point_coords": coords,
                                          "point_labels": labels, "mask_input": mask, "has_mask_input": has})
        return low, iou

    def upscale(self, low_res: np.ndarray) -> np.ndarray:
        """Low-res logits (…×256×256) → logits at the image size (…×H×W)."""
        h, w = self._shape
        valid = (int(h * self._scale + 0.5), int(w * self._scale + 0.5))
        flat = low_res.reshape(-1, LOW_RES, LOW_RES)
        out = np.empty((flat.shape[0], h, w), np.float32)
        for i, m in enumerate(flat):
            big = cv2.resize(m, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_LINEAR)[:valid[0], :valid[1]]
            out[i] = cv2.resize(big, (w, h), interpolation=cv2.INTER_LINEAR)
        return out.reshape(*low_res.shape[:-2], h, w)

    def predict(self, points: list[tuple[float, float]] | None = None, point_labels: list[int] | None = None,
                box: tuple[float, float, float, float] | None = None, mask_input: np.ndarray | None = None,
                multimask: bool = True) -> Prediction:
        """Masks for one prompt (points and/or a box, optionally the previous low-res logits).

        With `multimask` the three multimask outputs come back (best for one ambiguous click), else the single
        mask (best for several points or a box with points)."""
        coords: list = [list(p) for p in (points or [])]
        labels: list = [float(v) for v in (point_labels or [1] * len(coords))]
        if box is not None:
            coords += [[box[0], box[1]], [box[2], box[3]]]
            labels += list(BOX_LABELS)
        else:
            coords.append([0.0, 0.0])
            labels.append(-1.0)
        if len(coords) == 1:
            raise ValueError("a prompt needs at least one point or a box")
        low, iou = self.predict_batch(np.array([coords]), np.array([labels]),
                                      None if mask_input is None else mask_input[None])
        pick = slice(1, 4) if multimask else slice(0, 1)
        low, iou = low[0, pick], iou[0, pick]
        return Prediction(masks=self.upscale(low) > 0.0, scores=iou, low_res=low)


_SHARED: MobileSamPredictor | None = None
_SHARED_LOCK = threading.Lock()


def shared_predictor() -> MobileSamPredictor:
    """The process-wide predictor on the cached `mobilesam` asset (its embedding cache is shared by every tool)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = MobileSamPredictor()
        return _SHARED
