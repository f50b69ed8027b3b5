"""Object descriptions with a caption: the embedded colour/size/position attributes, plus (when the agent asks
for detail) a caption of the object's crop by BLIP or Florence-2 through transformers."""

from __future__ import annotations

import math

import numpy as np

from ..backends import BackendContext
from ..embedded.backends import AttributeDescriber
from ..protocols import Box
from .loading import device_and_dtype, load_pretrained, model_ref

FLORENCE_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")
BACKGROUND_KEPT = 0.3
"""How much of the original pixel stays outside the mask when the background is greyed out."""


def object_crop(image: np.ndarray, mask: np.ndarray, box: Box, context: float = 0.1,
                mask_background: bool = True) -> np.ndarray:
    """The box grown by `context` × its size, with pixels outside `mask` faded to grey when `mask_background`."""
    x0, y0, x1, y1 = box
    dx, dy = context * (x1 - x0), context * (y1 - y0)
    height, width = image.shape[:2]
    left, top = max(0, math.floor(x0 - dx)), max(0, math.floor(y0 - dy))
    right, bottom = min(width, math.ceil(x1 + dx)), min(height, math.ceil(y1 + dy))
    if right <= left or bottom <= top:
        raise ValueError(f"the box {tuple(box)} lies outside the {width}×{height} image")
    crop = image[top:bottom, left:right]
    inside = mask[top:bottom, left:right]
    if not mask_background or not inside.any():
        return crop.copy()
    faded = (BACKGROUND_KEPT * crop + (1 - BACKGROUND_KEPT) * 128.0).round().astype(np.uint8)
    return np.where(inside[..., None], crop, faded)


class CaptionDescriber:
    """The embedded attributes, and with `detail` a `caption` of the object crop.

    Options: `model` (BLIP or Florence-2; default Salesforce/blip-image-captioning-base), `context` (0.1: how
    far the crop extends beyond the box), `mask_background` (true: grey out pixels outside the mask so the
    caption is about the object), `max_new_tokens` (30), `prompt` (BLIP conditional prefix such as
    "a photo of", not repeated in the caption) and `task` (Florence-2: <CAPTION>, <DETAILED_CAPTION> or
    <MORE_DETAILED_CAPTION>). Decoding is greedy, so captions are deterministic.
    """

    default_model = "Salesforce/blip-image-captioning-base"
    families = {"blip": ("BlipForConditionalGeneration", "BlipProcessor"),
                "florence2": ("Florence2ForConditionalGeneration", "Florence2Processor")}

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx
        self.attributes = AttributeDescriber()
        self.context = float(ctx.option("context", 0.1))
        self.mask_background = bool(ctx.option("mask_background", True))
        self.max_new_tokens = int(ctx.option("max_new_tokens", 30))
        self.prompt = ctx.option("prompt")
        self.task = str(ctx.option("task", "<DETAILED_CAPTION>"))
        if self.task not in FLORENCE_TASKS:
            raise ValueError(f"{ctx.name}: unknown task {self.task!r}; use one of {', '.join(FLORENCE_TASKS)}")

    def describe(self, image: np.ndarray, mask: np.ndarray, box: Box, detail: bool = False) -> dict[str, str | float]:
        """Colour, size and position of the masked object; with `detail` also its `caption`."""
        description = self.attributes.describe(image, mask, box)
        if detail:
            description["caption"] = self.caption(object_crop(image, mask, box, self.context, self.mask_background))
        return description

    def caption(self, image: np.ndarray) -> str:
        """A greedy-decoded caption of an H×W×3 uint8 RGB image."""
        import torch
        from PIL import Image

        family, model, processor = self._components()
        device, dtype = device_and_dtype(self.ctx)
        picture = Image.fromarray(image)
        if family == "florence2":
            inputs = processor(images=picture, text=self.task, return_tensors="pt")
        else:
            inputs = processor(images=picture, text=self.prompt, return_tensors="pt")
        inputs = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
        with torch.inference_mode():
            tokens = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        if family == "florence2":
            text = processor.batch_decode(tokens, skip_special_tokens=False)[0]
            size = (image.shape[1], image.shape[0])
            return str(processor.post_process_generation(text, task=self.task, image_size=size)[self.task]).strip()
        text = processor.decode(tokens[0], skip_special_tokens=True).strip()
        return _without_prefix(text, self.prompt)

    def _components(self):
        import transformers

        ref = model_ref(self.ctx, self.default_model)
        config = load_pretrained(self.ctx, ref, "config", transformers.AutoConfig.from_pretrained, to_device=False)
        if config.model_type not in self.families:
            raise ValueError(f"{self.ctx.name}: {ref} is a {config.model_type!r} model; the captioner supports "
                             f"{', '.join(self.families)} (e.g. Salesforce/blip-image-captioning-base, "
                             "microsoft/Florence-2-base)")
        model_class, processor_class = self.families[config.model_type]
        model = load_pretrained(self.ctx, ref, "model", getattr(transformers, model_class).from_pretrained)
        processor = load_pretrained(self.ctx, ref, "processor", getattr(transformers, processor_class).from_pretrained,
                                    to_device=False)
        return config.model_type, model, processor


def _without_prefix(text: str, prompt: str | None) -> str:
    """`text` without a leading echo of `prompt` (compared case- and whitespace-insensitively)."""
    if not prompt:
        return text
    words, prefix = text.split(), prompt.split()
    if [w.lower() for w in words[:len(prefix)]] == [w.lower() for w in prefix]:
        return " ".join(words[len(prefix):])
    return text
