"""Relative depth through transformers depth-estimation models (Depth Anything V1/V2 and relatives)."""

from __future__ import annotations

import numpy as np

from ..backends import BackendContext
from .loading import device_and_dtype, load_pretrained, model_ref
from .loading import image_key


def normalized(depth: np.ndarray) -> np.ndarray:
    """`depth` min-max scaled to float32 [0, 1]; a constant map becomes 0.5 everywhere."""
    depth = depth.astype(np.float32)
    low, high = float(depth.min()), float(depth.max())
    if not high - low > 1e-6 * max(1.0, abs(high)):
        return np.full(depth.shape, 0.5, dtype=np.float32)
    return ((depth - low) / (high - low)).astype(np.float32)


class DepthAnythingEstimator:
    """Nearness from `AutoModelForDepthEstimation` (option `model`; default Depth-Anything-V2-Small-hf).

    Depth Anything predicts relative inverse depth (larger = closer), which is nearness as it is; set the
    `invert` option for models whose output grows with distance. The last image's map is cached.
    """

    default_model = "depth-anything/Depth-Anything-V2-Small-hf"

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx
        self.invert = bool(ctx.option("invert", False))
        self._last: tuple[str, np.ndarray] | None = None

    def nearness(self, image: np.ndarray) -> np.ndarray:
        """H×W float32 nearness in [0, 1] (1 = closest) for an H×W×3 uint8 RGB image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB image, got shape {image.shape} and dtype {image.dtype}")
        key = image_key(image)
        if self._last is None or self._last[0] != key:
            self._last = (key, self._predict(image))
        return self._last[1].copy()

    def _predict(self, image: np.ndarray) -> np.ndarray:
        import torch
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        ref = model_ref(self.ctx, self.default_model)
        model = load_pretrained(self.ctx, ref, "model", AutoModelForDepthEstimation.from_pretrained)
        processor = load_pretrained(self.ctx, ref, "processor", AutoImageProcessor.from_pretrained, to_device=False)
        device, dtype = device_and_dtype(self.ctx)
        pixels = processor(images=image, return_tensors="pt")["pixel_values"].to(device, dtype)
        with torch.inference_mode():
            outputs = model(pixel_values=pixels)
        depth = processor.post_process_depth_estimation(outputs, target_sizes=[image.shape[:2]])[0]["predicted_depth"]
        near = normalized(depth.float().cpu().numpy())
        return 1.0 - near if self.invert else near
