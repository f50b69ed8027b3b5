"""Promptable segmentation: SAM through the `segment-anything` package, SAM and SAM 2 through transformers.

All three answer box prompts (`Segmenter`) and click prompts (`PointSegmenter`), encode each distinct image
once and reuse that embedding for every object segmented in it (the agent segments several objects of one
image), and keep the mask the model itself rates best. A box-prompted mask is limited to the box grown by
the `box_margin` option (a fraction of the box size, 0.05 by default) and never covers `exclude`.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cielr_agent.errors import MissingWeightsError

from ..backends import BackendContext
from ..protocols import Box
from .loading import checkpoint_path, device_and_dtype, image_key, load_pretrained, model_ref

SAM_ENCODERS = {
    "vit_h": dict(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                  encoder_global_attn_indexes=[7, 15, 23, 31]),
    "vit_l": dict(encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                  encoder_global_attn_indexes=[5, 11, 17, 23]),
    "vit_b": dict(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
                  encoder_global_attn_indexes=[2, 5, 8, 11]),
}
"""The image encoders of the released SAM checkpoints (the segment-anything package's builders)."""

SAM_COMMON = dict(image_size=1024, patch_size=16, window_size=14, prompt_embed_dim=256, mask_in_chans=16,
                  decoder_depth=2, decoder_num_heads=8, decoder_mlp_dim=2048, iou_head_hidden_dim=256)
"""The parts every released SAM shares; the `architecture` option may override any of these keys too."""

SAM_CHECKPOINTS = {"vit_h": "sam_vit_h_4b8939.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_b": "sam_vit_b_01ec64.pth"}
SAM_DOWNLOADS = "https://dl.fbaipublicfiles.com/segment_anything/"


def grown_box(box: Box, shape: tuple[int, ...], margin: float) -> tuple[int, int, int, int]:
    """Integer pixel bounds of `box` grown by `margin` × its width/height on each side, clipped to the image."""
    x0, y0, x1, y1 = box
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    height, width = shape[:2]
    return (max(0, math.floor(x0 - dx)), max(0, math.floor(y0 - dy)),
            min(width, math.ceil(x1 + dx)), min(height, math.ceil(y1 + dy)))


def limit_mask(mask: np.ndarray, box: Box, margin: float, exclude: np.ndarray | None = None) -> np.ndarray:
    """`mask` kept inside the grown box, with the `exclude` pixels removed."""
    x0, y0, x1, y1 = grown_box(box, mask.shape, margin)
    inside = np.zeros(mask.shape, dtype=bool)
    inside[y0:y1, x0:x1] = True
    kept = mask & inside
    return kept if exclude is None else kept & ~exclude


def _check_inputs(image: np.ndarray, box: Box | None, exclude: np.ndarray | None = None) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H×W×3 uint8 RGB image, got shape {image.shape} and dtype {image.dtype}")
    if box is not None and not (box[2] > box[0] and box[3] > box[1]):
        raise ValueError(f"the box {tuple(box)} is empty; boxes are (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
    if exclude is not None and exclude.shape != image.shape[:2]:
        raise ValueError(f"exclude has shape {exclude.shape}, the image {image.shape[:2]}")


def _check_points(points: list[tuple[float, float]], labels: list[int]) -> None:
    if not points or len(points) != len(labels):
        raise ValueError(f"give one label per point (got {len(points)} points and {len(labels)} labels)")
    if any(label not in (0, 1) for label in labels):
        raise ValueError(f"point labels must be 1 (on the object) or 0 (background), got {list(labels)}")


class _PromptSegmenter(ABC):
    """Box and point prompting over a cached image embedding; subclasses encode images and decode prompts."""

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx
        self.margin = float(ctx.option("box_margin", 0.05))
        self._encoded: tuple[str, Any] | None = None

    def segment_box(self, image: np.ndarray, box: Box, exclude: np.ndarray | None = None) -> np.ndarray:
        """The best-rated mask for a box prompt, limited to the grown box and without `exclude`."""
        _check_inputs(image, box, exclude)
        mask = self._best(image, None, None, box, multimask=True)
        return limit_mask(mask, box, self.margin, exclude)

    def segment_points(self, image: np.ndarray, points: list[tuple[float, float]], labels: list[int],
                       box: Box | None = None) -> np.ndarray:
        """The best-rated mask for clicks (1 = on the object, 0 = background), optionally with a box."""
        _check_inputs(image, box)
        _check_points(points, labels)
        # one click alone is ambiguous (part or whole?): let the model offer several masks and keep its best
        mask = self._best(image, points, labels, box, multimask=len(points) == 1 and box is None)
        return mask if box is None else limit_mask(mask, box, self.margin)

    def _best(self, image: np.ndarray, points, labels, box, multimask: bool) -> np.ndarray:
        key = image_key(image)
        if self._encoded is None or self._encoded[0] != key:
            self._encoded = (key, self._encode(image))
        masks, scores = self._decode(self._encoded[1], points, labels, box, multimask)
        return np.asarray(masks[int(np.argmax(scores))], dtype=bool)

    @abstractmethod
    def _encode(self, image: np.ndarray) -> Any:
        """The image embedding (and whatever the decoder needs with it)."""

    @abstractmethod
    def _decode(self, encoded: Any, points, labels, box, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        """C×H×W bool masks at the image size and their C predicted IoU scores."""


# --- segment-anything -------------------------------------------------------------------------------------


def sam_architecture(model_type: str = "vit_h", architecture: dict | None = None) -> dict:
    """The full SAM architecture: a released encoder (`model_type`) and shared parts, with `architecture`
    overriding any of their keys."""
    if model_type not in SAM_ENCODERS:
        raise ValueError(f"unknown SAM model_type {model_type!r}; use one of {', '.join(SAM_ENCODERS)}")
    arch = {**SAM_COMMON, **SAM_ENCODERS[model_type]}
    unknown = sorted(set(architecture or {}) - set(arch))
    if unknown:
        raise ValueError(f"unknown SAM architecture keys {unknown}; known: {', '.join(sorted(arch))}")
    return {**arch, **(architecture or {})}


def build_sam(architecture: dict | None = None, model_type: str = "vit_h"):
    """An untrained segment-anything `Sam` of `sam_architecture(model_type, architecture)`, in eval mode."""
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    a = sam_architecture(model_type, architecture)
    embed = a["prompt_embed_dim"]
    grid = a["image_size"] // a["patch_size"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=a["encoder_depth"], embed_dim=a["encoder_embed_dim"], img_size=a["image_size"], mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=a["encoder_num_heads"],
            patch_size=a["patch_size"], qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(a["encoder_global_attn_indexes"]), window_size=a["window_size"],
            out_chans=embed),
        prompt_encoder=PromptEncoder(embed_dim=embed, image_embedding_size=(grid, grid),
                                     input_image_size=(a["image_size"], a["image_size"]),
                                     mask_in_chans=a["mask_in_chans"]),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=a["decoder_depth"], embedding_dim=embed,
                                          mlp_dim=a["decoder_mlp_dim"], num_heads=a["decoder_num_heads"]),
            transformer_dim=embed, iou_head_depth=3, iou_head_hidden_dim=a["iou_head_hidden_dim"]),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


class SamSegmenter(_PromptSegmenter):
    """SAM from a segment-anything `.pth` checkpoint (option `checkpoint`), run through `SamPredictor`.

    `model_type` (vit_h, vit_l, vit_b) defaults to the one named in the checkpoint file name, else vit_h;
    `architecture` (a dict of `sam_architecture` keys) describes smaller or fine-tuned variants. The package's
    modules are not dtype-aware, so this backend always runs in float32 on the configured device.
    """

    def _checkpoint(self) -> Path:
        return checkpoint_path(self.ctx, "SAM", " or ".join(SAM_DOWNLOADS + f for f in SAM_CHECKPOINTS.values()),
                               SAM_CHECKPOINTS["vit_h"])

    def _model_type(self, checkpoint: Path) -> str:
        named = re.search(r"vit_[hlb]", checkpoint.name)
        return str(self.ctx.option("model_type", named.group(0) if named else "vit_h"))

    def _model(self):
        import json

        import torch

        checkpoint = self._checkpoint()
        model_type = self._model_type(checkpoint)
        architecture = self.ctx.option("architecture")
        device, _ = device_and_dtype(self.ctx)
        key = f"{self.ctx.name}:sam:{checkpoint}:{model_type}:{json.dumps(architecture, sort_keys=True)}:{device}"

        def load():
            sam = build_sam(architecture, model_type)
            try:
                sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
            except (OSError, RuntimeError, ValueError) as exc:
                raise MissingWeightsError(
                    f"{self.ctx.name}: {checkpoint} is not a SAM {model_type} state dict "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). To fix: set "
                    f"[backend_options.{self.ctx.name}] model_type (vit_h, vit_l, vit_b) or architecture to match "
                    "the checkpoint, or use an original sam_vit_*.pth file") from exc
            return sam.to(device).eval()

        return self.ctx.models.get(key, load)

    def _encode(self, image: np.ndarray):
        from segment_anything import SamPredictor

        predictor = SamPredictor(self._model())
        predictor.set_image(image)
        return predictor

    def _decode(self, predictor, points, labels, box, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        masks, scores, _ = predictor.predict(
            point_coords=None if points is None else np.asarray(points, dtype=np.float32),
            point_labels=None if labels is None else np.asarray(labels, dtype=np.int64),
            box=None if box is None else np.asarray(box, dtype=np.float32),
            multimask_output=multimask)
        return masks, scores


# --- transformers SAM / SAM 2 -----------------------------------------------------------------------------


@dataclass
class _Embedded:
    """An image encoded by a transformers SAM: embeddings plus the sizes needed to place prompts and masks."""

    embeddings: Any
    sizes: dict  # the processor's size entries for the image (original_sizes, ...)
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class _HfSamSegmenter(_PromptSegmenter):
    """A transformers SAM-family model + processor (option `model`: hub id or local folder)."""

    default_model: str
    model_class: str
    processor_class: str

    def _components(self):
        import transformers

        ref = model_ref(self.ctx, self.default_model)
        model = load_pretrained(self.ctx, ref, "model", getattr(transformers, self.model_class).from_pretrained)
        processor = load_pretrained(self.ctx, ref, "processor",
                                    getattr(transformers, self.processor_class).from_pretrained, to_device=False)
        return model, processor

    def _encode(self, image: np.ndarray) -> _Embedded:
        model, processor = self._components()
        inputs = processor(images=image, return_tensors="pt")
        pixels = inputs.pop("pixel_values").to(model.device, model.dtype)
        return _Embedded(model.get_image_embeddings(pixels), dict(inputs), image.shape[:2],
                         self._input_size(inputs, processor))

    def _decode(self, encoded: _Embedded, points, labels, box, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        import torch

        model, processor = self._components()
        scale = np.array([encoded.input_size[1] / encoded.original_size[1],
                          encoded.input_size[0] / encoded.original_size[0]], dtype=np.float32)
        prompts = {}
        if points is not None:
            prompts["input_points"] = torch.tensor(np.asarray(points, dtype=np.float32) * scale)[None, None]
            prompts["input_labels"] = torch.tensor(labels, dtype=torch.int64)[None, None]
        if box is not None:
            prompts["input_boxes"] = torch.tensor(np.asarray(box, dtype=np.float32).reshape(2, 2) * scale
                                                  ).reshape(1, 1, 4)
        prompts = {k: v.to(model.device, model.dtype if v.is_floating_point() else v.dtype)
                   for k, v in prompts.items()}
        with torch.inference_mode():
            out = model(image_embeddings=encoded.embeddings, multimask_output=multimask, **prompts)
        masks = self._post_process(processor, out.pred_masks.float().cpu(), encoded.sizes)[0][0]
        return masks.numpy().astype(bool), out.iou_scores[0, 0].float().cpu().numpy()

    @abstractmethod
    def _input_size(self, sizes, processor) -> tuple[int, int]:
        """(height, width) of the image as the model sees it, before any padding."""

    @abstractmethod
    def _post_process(self, processor, masks, sizes):
        """Masks upscaled to the original image size and binarised."""


class SamHfSegmenter(_HfSamSegmenter):
    """SAM through transformers (`SamModel` + `SamProcessor`; default facebook/sam-vit-base)."""

    default_model = "facebook/sam-vit-base"
    model_class = "SamModel"
    processor_class = "SamProcessor"

    def _input_size(self, sizes, processor) -> tuple[int, int]:
        height, width = (int(v) for v in sizes["reshaped_input_sizes"][0])
        return height, width

    def _post_process(self, processor, masks, sizes):
        return processor.post_process_masks(masks, sizes["original_sizes"], sizes["reshaped_input_sizes"])


class Sam2Segmenter(_HfSamSegmenter):
    """SAM 2 through transformers (`Sam2Model` + `Sam2Processor`; default facebook/sam2.1-hiera-tiny)."""

    default_model = "facebook/sam2.1-hiera-tiny"
    model_class = "Sam2Model"
    processor_class = "Sam2Processor"

    def _input_size(self, sizes, processor) -> tuple[int, int]:
        return processor.target_size, processor.target_size  # SAM 2 resizes to a square, no padding

    def _post_process(self, processor, masks, sizes):
        return processor.post_process_masks(masks, sizes["original_sizes"])
