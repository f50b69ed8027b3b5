"""Remover and generator backend over a diffusers inpainting pipeline (Stable Diffusion 1.5 inpainting by default).

One inpainting call, for an H×W×3 uint8 RGB image and an H×W bool mask:

1. crop: the mask's bounding box plus a `context` margin (at least half the working resolution when the image
   allows), so that a small object is regenerated at full model resolution with enough of its surroundings;
2. resize the crop to the working resolution (longest side = `resolution`, both sides multiples of 8) and run
   the pipeline with a seeded generator;
3. resize the result back, remove the colour shift of the VAE round trip (measured in a ring just outside the
   mask, where the generated pixels should equal the original ones), and
4. paste it into the mask with a soft edge that lies inside the mask: every pixel outside the mask stays
   bit-identical.

Options (``[backend_options.sd-inpaint]``): model, pipeline, steps, guidance_scale, strength, seed, resolution,
context, remove_prompt, remove_negative_prompt, negative_prompt, cpu_offload. The remover and the generator of
the same options share one loaded pipeline through the model manager.
"""

from __future__ import annotations

import inspect
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..backends import BackendContext
from .loading import device_and_dtype, load_pretrained, model_ref

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"
DEFAULT_PIPELINE = "AutoPipelineForInpainting"
REMOVE_PROMPT = "empty background, seamless continuation of the surrounding scene"
REMOVE_NEGATIVE_PROMPT = "object, person, animal, text, watermark, frame, blurry, artifacts"
NEGATIVE_PROMPT = "blurry, low quality, distorted, watermark"
RING_PX = 8
"""Width of the ring just outside the mask where the colour shift of the generated crop is measured."""
FEATHER_PX = 4
"""Width of the soft edge, inside the mask, over which generated pixels blend into the original ones."""


def pipeline_class(name: str) -> Any:
    """The diffusers class called `name`: AutoPipelineForInpainting or a pipeline class that takes a mask."""
    import diffusers

    cls = getattr(diffusers, name, None) if name.isidentifier() else None
    if cls is diffusers.AutoPipelineForInpainting:
        return cls
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise ValueError(
            f"unknown diffusers pipeline {name!r}: set the `pipeline` option to {DEFAULT_PIPELINE} (it picks the "
            "class from the model's model_index.json) or to the name of a diffusers inpainting pipeline class, "
            "e.g. StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline or FluxFillPipeline"
        )
    if "mask_image" not in inspect.signature(cls.__call__).parameters:
        raise ValueError(f"diffusers pipeline {name!r} is not an inpainting pipeline (it takes no mask_image); "
                         f"use {DEFAULT_PIPELINE} or an inpainting class such as StableDiffusionInpaintPipeline")
    return cls


def default_resolution(pipeline: Any) -> int:
    """The side the pipeline's model was trained at: its latent sample size × the VAE scale factor
    (512 for SD 1.5, 1024 for SDXL, SD 3 and Flux); 512 when the pipeline does not say."""
    size = getattr(pipeline, "default_sample_size", None)
    for name in ("unet", "transformer"):
        denoiser = getattr(pipeline, name, None)
        if size is None and denoiser is not None:
            size = getattr(denoiser.config, "sample_size", None)
    if isinstance(size, (list, tuple)):
        size = max(size)
    return int(size) * int(getattr(pipeline, "vae_scale_factor", 8)) if size else 512


def size_multiple(pipeline: Any) -> int:
    """What the working width and height must be multiples of: 8, or more when the pipeline's image
    processor asks for it (16 for Flux, which packs 2×2 latents)."""
    processor = getattr(pipeline, "image_processor", None)
    return max(8, int(getattr(getattr(processor, "config", None), "vae_scale_factor", 8)))


def crop_box(mask: np.ndarray, context: float = 0.5, min_side: int = 0) -> tuple[int, int, int, int]:
    """The region (x0, y0, x1, y1) to regenerate: the mask's bounding box grown by `context` × its size on each
    side, at least `min_side` px per side, moved (and, if larger than the image, clipped) into the image."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    x0, x1 = _span(int(xs.min()), int(xs.max()) + 1, width, context, min_side)
    y0, y1 = _span(int(ys.min()), int(ys.max()) + 1, height, context, min_side)
    return x0, y0, x1, y1


def _span(lo: int, hi: int, limit: int, context: float, min_side: int) -> tuple[int, int]:
    """One axis of `crop_box`: [lo, hi) grown and centred, then moved inside [0, limit)."""
    size = min(max(int(round((hi - lo) * (1 + 2 * context))), min_side, hi - lo), limit)
    start = int(np.floor((lo + hi - size) / 2))
    start = min(max(start, 0), limit - size)
    return start, start + size


def working_size(width: int, height: int, resolution: int, multiple: int = 8) -> tuple[int, int]:
    """(width, height) scaled so that the longest side is `resolution`, both rounded to multiples of `multiple`."""
    scale = resolution / max(width, height)
    return tuple(max(multiple, int(round(side * scale / multiple)) * multiple) for side in (width, height))


def color_correct(generated: np.ndarray, original: np.ndarray, mask: np.ndarray, ring: int = RING_PX) -> np.ndarray:
    """`generated` (float32) minus its mean per-channel difference from `original` in a `ring`-px band just
    outside `mask`, where both should agree; unchanged when the band is empty (the mask fills the crop)."""
    generated = generated.astype(np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring + 1, 2 * ring + 1))
    band = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
    if not band.any():
        return generated
    shift = (generated[band] - original[band].astype(np.float32)).mean(axis=0)
    return generated - shift


def paste_back(image: np.ndarray, generated: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int],
               feather: int = FEATHER_PX) -> np.ndarray:
    """A copy of `image` with the pixels of `mask` taken from `generated` (the crop `box`), blended into the
    original over a `feather`-px edge inside the mask; pixels outside `mask` are bit-identical to `image`."""
    x0, y0, x1, y1 = box
    alpha = _inner_alpha(mask, box, feather)[..., None]
    original = image[y0:y1, x0:x1].astype(np.float32)
    blended = alpha * generated + (1 - alpha) * original
    region = mask[y0:y1, x0:x1]
    out = image.copy()
    out[y0:y1, x0:x1][region] = np.clip(np.rint(blended[region]), 0, 255).astype(np.uint8)
    return out


def _inner_alpha(mask: np.ndarray, box: tuple[int, int, int, int], feather: int) -> np.ndarray:
    """Weight of the generated pixels in `box`: 0 outside the mask, rising from 1/feather at the mask's edge to 1
    at `feather` px inside. The distance is measured on a window around the box, so that an edge at the box's
    border is still seen, while the image border does not count as an edge."""
    x0, y0, x1, y1 = box
    if feather <= 0:
        return mask[y0:y1, x0:x1].astype(np.float32)
    height, width = mask.shape
    wx0, wy0 = max(x0 - feather, 0), max(y0 - feather, 0)
    window = mask[wy0:min(y1 + feather, height), wx0:min(x1 + feather, width)].astype(np.uint8)
    distance = cv2.distanceTransform(window, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.clip(distance / feather, 0, 1)[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`array` resized to (width, height): area averaging when shrinking, bicubic when enlarging."""
    shrink = size[0] * size[1] < array.shape[1] * array.shape[0]
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


class DiffusersInpainter:
    """`Remover` and `Generator` over a diffusers inpainting pipeline; the pipeline loads on first use."""

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx
        self.model = model_ref(ctx, DEFAULT_MODEL)
        self.pipeline_name = str(ctx.option("pipeline", DEFAULT_PIPELINE))
        self.steps = int(ctx.option("steps", 30))
        self.guidance_scale = float(ctx.option("guidance_scale", 7.5))
        self.strength = float(ctx.option("strength", 1.0))
        self.seed = int(ctx.option("seed", 0))
        resolution = ctx.option("resolution")
        self.resolution = None if resolution is None else int(resolution)
        self.context = float(ctx.option("context", 0.5))
        self.remove_prompt = str(ctx.option("remove_prompt", REMOVE_PROMPT))
        self.remove_negative_prompt = str(ctx.option("remove_negative_prompt", REMOVE_NEGATIVE_PROMPT))
        self.negative_prompt = str(ctx.option("negative_prompt", NEGATIVE_PROMPT))
        self.cpu_offload = bool(ctx.option("cpu_offload", False))

    def pipeline(self) -> Any:
        """The loaded pipeline, shared by every instance with the same backend name, model, class, device and
        dtype; with `cpu_offload` on CUDA its models move to the GPU one at a time while they run."""
        cls = pipeline_class(self.pipeline_name)
        device, dtype = device_and_dtype(self.ctx)
        offload = self.cpu_offload and device.startswith("cuda")

        def load(ref: str, **kwargs: Any) -> Any:
            pipe = cls.from_pretrained(ref, **kwargs)
            pipe.set_progress_bar_config(disable=True)
            if offload:
                pipe.enable_model_cpu_offload(device=device)
            return pipe

        what = f"pipeline:{self.pipeline_name}" + (":cpu-offload" if offload else "")
        return load_pretrained(self.ctx, self.model, what, load, to_device=not offload, dtype=dtype)

    def remove(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The image with the masked region regenerated as background (the remove prompts)."""
        return self.inpaint(image, mask, self.remove_prompt, self.remove_negative_prompt)

    def inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str | None = None
                ) -> np.ndarray:
        """The image with the masked region regenerated to show `prompt`; pixels outside `mask` are unchanged."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
        if not mask.any():
            return image.copy()
        pipe = self.pipeline()
        resolution = self.resolution or default_resolution(pipe)
        box = x0, y0, x1, y1 = crop_box(mask, self.context, resolution // 2)
        crop, crop_mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
        size = working_size(x1 - x0, y1 - y0, resolution, size_multiple(pipe))
        generated = self._generate(pipe, _resize(crop, size), _resize(crop_mask.astype(np.uint8) * 255, size) > 0,
                                   prompt, self.negative_prompt if negative_prompt is None else negative_prompt)
        generated = color_correct(_resize(generated, (x1 - x0, y1 - y0)), crop, crop_mask)
        return paste_back(image, generated, mask, box)

    def _generate(self, pipe: Any, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str
                  ) -> np.ndarray:
        """One seeded pipeline run at the size of `image`: float32 RGB in [0, 255]. Arguments the pipeline's
        `__call__` does not take (Flux Fill has no negative prompt) are left out."""
        import torch

        device, _ = device_and_dtype(self.ctx)
        height, width = mask.shape
        kwargs = dict(
            prompt=prompt, negative_prompt=negative_prompt, image=Image.fromarray(image),
            mask_image=Image.fromarray(mask.astype(np.uint8) * 255), height=height, width=width,
            num_inference_steps=self.steps, guidance_scale=self.guidance_scale, strength=self.strength,
            generator=torch.Generator(device).manual_seed(self.seed), output_type="np",
        )
        accepted = inspect.signature(pipe.__call__).parameters
        with torch.inference_mode():
            result = pipe(**{key: value for key, value in kwargs.items() if key in accepted})
        return np.asarray(result.images[0], dtype=np.float32) * 255
