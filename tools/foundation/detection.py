"""Open-vocabulary detection through transformers: GroundingDINO and OWLv2.

Both detectors look for the labels they are given, or for the `vocabulary` option (COCO-80 by default) when
given none, and return `Detection`s in the original image's pixels: boxes clipped to the image (empty ones
dropped), per-label non-maximum suppression (IoU 0.5), sorted by score. Free-text names resolve to themselves,
normalised (lowercase, single spaces, no leading article): an open-vocabulary detector can look for anything.

Options (`[backend_options.NAME]`): `model` (hub id or local folder), `vocabulary` (labels for `detect()`
without labels), `labels_per_prompt` (most labels in one forward pass; GroundingDINO also packs labels so each
prompt fits its text encoder's token limit) and, for GroundingDINO, `text_threshold` (token score a phrase
needs to name a box).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from functools import cached_property
from typing import Any, Callable, Iterable

import numpy as np

from ..backends import BackendContext
from ..protocols import Detection
from .loading import device_and_dtype, load_pretrained, model_ref

NMS_IOU = 0.5
_ARTICLE = re.compile(r"^(?:a|an|the)\s+")


def normalize_label(text: str) -> str:
    """`text` lowercased, with single spaces, no surrounding punctuation and no leading article."""
    text = " ".join(str(text).lower().split()).strip(" .,;:!?\"'")
    return _ARTICLE.sub("", text)


def prompt_chunks(labels: list[str], max_labels: int | None = None, tokens: Callable[[str], int] | None = None,
                  budget: int = 0) -> list[list[str]]:
    """`labels` in order, split into chunks of at most `max_labels`; with `tokens`, also so that each chunk's
    summed `tokens(label)` stays within `budget` (a label over the budget on its own gets a chunk alone)."""
    chunks: list[list[str]] = []
    used = 0
    for label in labels:
        cost = tokens(label) if tokens is not None else 0
        fits = chunks and (max_labels is None or len(chunks[-1]) < max_labels) and (
            tokens is None or used + cost <= budget)
        if fits:
            chunks[-1].append(label)
            used += cost
        else:
            chunks.append([label])
            used = cost
    return chunks


def phrase_label(phrase: str, labels: list[str], tokenize: Callable[[str], list[str]]) -> str | None:
    """The one label of `labels` a predicted phrase names: an exact match, else the label sharing the most
    tokens with it (ties: the larger share of the label's tokens, then the earlier label); None if none shares
    any. Bracketed special tokens ("[SEP]") and punctuation in the phrase are ignored."""
    text = normalize_label(re.sub(r"\[[A-Za-z]+\]", " ", phrase))
    if text in labels:
        return text
    words = {t for t in tokenize(text) if any(c.isalnum() for c in t)}
    best, best_key = None, (0, 0.0)
    for label in labels:
        own = set(tokenize(label))
        shared = len(words & own)
        key = (shared, shared / len(own)) if own else (0, 0.0)
        if key > best_key:
            best, best_key = label, key
    return best


def finish(found: list[tuple[str, float, list[float]]], height: int, width: int) -> list[Detection]:
    """(label, score, box) triples → `Detection`s: boxes clipped to the image, empty ones dropped, per-label
    non-maximum suppression, highest score first."""
    import torch
    from torchvision.ops import batched_nms

    if not found:
        return []
    boxes = np.array([box for _, _, box in found], dtype=np.float32).reshape(-1, 4)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    names = sorted({label for label, _, _ in found})
    classes = np.array([names.index(label) for label, _, _ in found])
    scores = np.array([score for _, score, _ in found], dtype=np.float32)
    keep = np.flatnonzero((boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1))
    kept = batched_nms(torch.from_numpy(boxes[keep]), torch.from_numpy(scores[keep]),
                       torch.from_numpy(classes[keep]), NMS_IOU).numpy()
    return [Detection(label=names[classes[i]], score=float(scores[i]), box=tuple(float(v) for v in boxes[i]))
            for i in keep[kept]]


def model_inputs(ctx: BackendContext, inputs: Any) -> dict[str, Any]:
    """A processor's tensors on the backend's device, pixel values in its dtype."""
    device, dtype = device_and_dtype(ctx)
    moved = {key: value.to(device) for key, value in inputs.items()}
    moved["pixel_values"] = moved["pixel_values"].to(dtype)
    return moved


class OpenVocabularyDetector(ABC):
    """A `Detector` for any labels: options (`vocabulary`, `labels_per_prompt`), label normalisation, inference
    over groups of labels and the final clean-up; subclasses load a model and detect one group of labels."""

    default_model: str

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx
        per_prompt = ctx.option("labels_per_prompt")
        if per_prompt is not None and int(per_prompt) < 1:
            raise ValueError(f"{ctx.name}: labels_per_prompt must be at least 1, got {per_prompt!r}")
        self.labels_per_prompt = None if per_prompt is None else int(per_prompt)

    @cached_property
    def vocabulary(self) -> list[str]:
        """The labels `detect()` looks for when given none: the `vocabulary` option, else the 80 COCO names."""
        from cielr_agent.tools.embedded.coco_detection import COCO_LABELS  # imports torch: not at construction

        vocabulary = self.ctx.option("vocabulary", COCO_LABELS)
        return [str(v) for v in (vocabulary.split(",") if isinstance(vocabulary, str) else vocabulary)]

    def detect(self, image: np.ndarray, min_score: float = 0.3, labels: Iterable[str] | None = None) -> list[Detection]:
        """Objects of the given labels (else of the vocabulary) scoring above `min_score` in an H×W×3 uint8 RGB
        image; each detection carries the label as it was asked for."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB image, got shape {image.shape} and dtype {image.dtype}")
        asked: dict[str, str] = {}
        for label in self.vocabulary if labels is None else labels:
            if normalize_label(label):
                asked.setdefault(normalize_label(label), str(label))
        if not asked:
            return []
        model, processor = self._load()
        found = []
        for chunk in self._chunks(list(asked), model, processor):
            found += [(asked[label], score, box)
                      for label, score, box in self._detect_chunk(model, processor, image, chunk, min_score)]
        return finish(found, *image.shape[:2])

    def resolve_label(self, text: str) -> str | None:
        """The normalised name (an open-vocabulary detector can look for anything), None for empty text."""
        return normalize_label(text) or None

    @abstractmethod
    def _load(self) -> tuple[Any, Any]:
        """The (model, processor), loaded once through the model manager."""

    @abstractmethod
    def _chunks(self, labels: list[str], model: Any, processor: Any) -> list[list[str]]:
        """The normalised labels split into the groups that share one forward pass."""

    @abstractmethod
    def _detect_chunk(self, model: Any, processor: Any, image: np.ndarray, labels: list[str],
                      min_score: float) -> list[tuple[str, float, list[float]]]:
        """(label, score, box in image pixels) for one group of labels."""


class GroundingDinoDetector(OpenVocabularyDetector):
    """GroundingDINO (`GroundingDinoForObjectDetection`; option `model`, default grounding-dino-tiny): the
    labels become one prompt "cat. dog.", each predicted phrase is mapped back to one of them."""

    default_model = "IDEA-Research/grounding-dino-tiny"

    def __init__(self, ctx: BackendContext):
        super().__init__(ctx)
        self.text_threshold = float(ctx.option("text_threshold", 0.25))

    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        ref = model_ref(self.ctx, self.default_model)
        model = load_pretrained(self.ctx, ref, "model", GroundingDinoForObjectDetection.from_pretrained)
        processor = load_pretrained(self.ctx, ref, "processor", AutoProcessor.from_pretrained, to_device=False)
        return model, processor

    def _chunks(self, labels: list[str], model: Any, processor: Any) -> list[list[str]]:
        tokenizer = processor.tokenizer
        return prompt_chunks(labels, self.labels_per_prompt, budget=model.config.max_text_len - 2,  # [CLS] … [SEP]
                             tokens=lambda label: len(tokenizer.tokenize(f"{label}.")))

    def _detect_chunk(self, model: Any, processor: Any, image: np.ndarray, labels: list[str],
                      min_score: float) -> list[tuple[str, float, list[float]]]:
        import torch

        prompt = " ".join(f"{label}." for label in labels)
        inputs = model_inputs(self.ctx, processor(images=image, text=prompt, return_tensors="pt"))
        with torch.inference_mode():
            outputs = model(**inputs)
        result = processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=min_score, text_threshold=self.text_threshold,
            target_sizes=[image.shape[:2]])[0]
        found = []
        for phrase, score, box in zip(result["text_labels"], result["scores"].tolist(), result["boxes"].tolist()):
            label = phrase_label(phrase, labels, processor.tokenizer.tokenize)
            if label is not None:
                found.append((label, score, box))
        return found


class Owlv2Detector(OpenVocabularyDetector):
    """OWLv2 (`Owlv2ForObjectDetection`; option `model`, default owlv2-base-patch16-ensemble): one query
    "a photo of a {label}" per label, each box taking its best-scoring query."""

    default_model = "google/owlv2-base-patch16-ensemble"

    def _load(self) -> tuple[Any, Any]:
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        ref = model_ref(self.ctx, self.default_model)
        model = load_pretrained(self.ctx, ref, "model", Owlv2ForObjectDetection.from_pretrained)
        processor = load_pretrained(self.ctx, ref, "processor", Owlv2Processor.from_pretrained, to_device=False)
        return model, processor

    def _chunks(self, labels: list[str], model: Any, processor: Any) -> list[list[str]]:
        return prompt_chunks(labels, self.labels_per_prompt)

    def _detect_chunk(self, model: Any, processor: Any, image: np.ndarray, labels: list[str],
                      min_score: float) -> list[tuple[str, float, list[float]]]:
        import torch

        queries = [f"a photo of a {label}" for label in labels]
        inputs = model_inputs(self.ctx, processor(images=image, text=[queries], truncation=True, return_tensors="pt"))
        with torch.inference_mode():
            outputs = model(**inputs)
        # OWLv2 pads the image to a square at the bottom/right: the post-processing scales the normalised boxes
        # by the longer side of the target size, which puts them back in the original image's pixels
        result = processor.post_process_grounded_object_detection(
            outputs, threshold=min_score, target_sizes=[image.shape[:2]])[0]
        return [(labels[i], score, box) for i, score, box in
                zip(result["labels"].tolist(), result["scores"].tolist(), result["boxes"].tolist())]
