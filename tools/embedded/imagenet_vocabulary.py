"""The 1000 ImageNet-1k classes in readable form, and the COCO-80 class each falls under.

ImageNet names classes by WordNet lemma lists ("ashcan, trash can, garbage can, ..."), several terse or odd
("maillot", "tub", "crane" twice). `imagenet_vocabulary.json`, next to this module, gives each class (in the
classifier's output order) one display label ("trash can", "one-piece swimsuit", "crane bird"; unique),
synonyms for looking free text up (WordNet's other lemmas without Latin names, plus common words such as
"speaker"), and the COCO label it falls under (dog breeds -> "dog", grouse -> "bird", "sports car" -> "car";
None for the two thirds COCO has no class for). A class that is the same thing as a COCO class is named by
the COCO label ("cell phone", "remote", "tv"). The file is generated from WordNet 3.0 by
`scripts/build_imagenet_vocabulary.py`, which also writes the classes' knowledge cards
(prompts/v1/imagenet_cards.json); edit the script's tables and rerun it rather than the JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .coco_detection import COCO_LABELS

VOCABULARY_FILE = Path(__file__).with_name("imagenet_vocabulary.json")


@dataclass(frozen=True)
class ImageNetClass:
    """One ImageNet-1k class: `label` is its display label, `names` its WordNet lemmas as the model lists them."""

    index: int
    wnid: str
    names: tuple[str, ...]
    label: str
    synonyms: tuple[str, ...]
    coco: str | None


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1000 classes in model output order."""
    entries = json.loads(VOCABULARY_FILE.read_text(encoding="utf-8"))
    return tuple(
        ImageNetClass(e["index"], e["wnid"], tuple(e["names"]), e["label"], tuple(e["synonyms"]), e["coco"])
        for e in entries
    )


def display_labels() -> tuple[str, ...]:
    """The display label of every class, in model output order."""
    return tuple(c.label for c in imagenet_classes())


@lru_cache(maxsize=1)
def _by_label() -> dict[str, ImageNetClass]:
    return {c.label.lower(): c for c in imagenet_classes()}


def find_class(label: str) -> ImageNetClass | None:
    """The class with this display label (any letter case), or None."""
    return _by_label().get(label.lower())


def coco_label(name: str | int) -> str | None:
    """The COCO label an ImageNet class (display label or index) falls under, or None; a COCO label is its own."""
    if isinstance(name, int):
        return imagenet_classes()[name].coco
    if name in COCO_LABELS:
        return name
    cls = find_class(name)
    return cls.coco if cls is not None else None
