"""Map free text onto the embedded vocabulary: a COCO-80 label (detectors) or an ImageNet-1k display label
(classifier). "trash bin" -> "trash can", "speaker" -> "loudspeaker", "clock on the wall" -> "wall clock",
"puppies" -> "dog", "a unicorn" -> None.

`VocabularyMapper.resolve()` reuses `label_mapping`'s normalisation, subject phrases and MiniLM embedder:
1. exact (normalised, plural-tolerant) names: a COCO label as such, else an ImageNet display label or
   synonym (`imagenet_vocabulary`: "monitor" -> "computer monitor", "pickup truck" stays itself), else a
   COCO synonym ("puppy" -> dog), which also wins over an ImageNet name that is no kind of it ("plane" ->
   airplane, not the woodworking plane);
2. the same for the subject's trailing phrases, longest first ("the big speaker" -> loudspeaker); a COCO
   answer then gives way to an ImageNet class under that COCO class whose name is more similar to the whole
   text by at least `REFINE_MARGIN` ("clock on the wall": clock -> wall clock; "red car" stays car);
3. otherwise MiniLM cosine similarity to the 80 COCO and 1000 ImageNet names, accepted at >= `threshold`
   unless the name is only a piece of the text or the reverse (`_names_something_else`: "hair" is no
   "hair drier", "printer paper" no "printer"; but "guitar" may be an "acoustic guitar").
`imagenet_vocabulary.coco_label()` gives the COCO class of an ImageNet answer.

Threshold 0.65, calibrated on texts that no name table covers (part of the lists is in
tests/test_vocabulary.py): 75% of 51 paraphrases of vocabulary items pass (road sign -> street sign 0.89,
laundry machine -> washing machine 0.87, shark -> tiger shark 0.87, hoodie -> sweatshirt 0.71, camera ->
SLR camera 0.73; sneakers -> running shoe 0.649 does not) and 83% of 71 things outside the vocabulary are
rejected (unicorn 0.54, sky 0.55, road 0.61, sword 0.64, kettle 0.63, printer paper by the rule). 0.6
passes 78% / rejects 76%, 0.68 passes 69% / rejects 87%. The known misses: names sharing a word or a
use (lemonade -> lemon 0.79, bath mat -> bath towel 0.74, jacket -> sweatshirt 0.68) and room / material
words that name a kind of a class (wall -> stone wall 0.75, ceiling -> vaulted ceiling 0.79).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .coco_detection import COCO_LABELS
from .imagenet_vocabulary import coco_label, imagenet_classes
from .label_mapping import (
    LabelEmbeddings,
    coco_alias_table,
    is_fragment,
    lookup_alias,
    normalise,
    subject_phrases,
)

DEFAULT_THRESHOLD = 0.65  # 13x more names than COCO alone, so a little stricter than its 0.6
REFINE_MARGIN = 0.05


@lru_cache(maxsize=1)
def imagenet_alias_table() -> dict[str, str]:
    """ImageNet display label or synonym (normalised, numbers kept: "four poster") -> display label."""
    table: dict[str, str] = {}
    for cls in imagenet_classes():
        for name in cls.synonyms:
            table.setdefault(normalise(name, keep_determiners=True), cls.label)
    for cls in imagenet_classes():  # display labels win over synonyms
        table[normalise(cls.label, keep_determiners=True)] = cls.label
    return table


@lru_cache(maxsize=1)
def vocabulary_names() -> tuple[str, ...]:
    """The 80 COCO labels, then the ImageNet display labels that are not COCO labels."""
    coco = set(COCO_LABELS)
    return COCO_LABELS + tuple(c.label for c in imagenet_classes() if c.label not in coco)


def _exact(phrase: str) -> str | None:
    """A COCO label as such; else an ImageNet name, unless it is also a COCO synonym for something else
    ("plane" is an airplane, not the woodworking plane; "monitor" may stay a computer monitor, a kind of tv)."""
    if phrase in COCO_LABELS:
        return phrase
    imagenet = lookup_alias(phrase, imagenet_alias_table())
    coco = lookup_alias(phrase, coco_alias_table())
    if imagenet and coco and coco_label(imagenet) != coco:
        return coco
    return imagenet or coco


class VocabularyMapper:
    """Free text -> COCO label or ImageNet display label, by name tables then MiniLM similarity."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, refine_margin: float = REFINE_MARGIN):
        self.threshold = threshold
        self.refine_margin = refine_margin
        self._names = LabelEmbeddings(vocabulary_names())

    def similarities(self, text: str) -> np.ndarray:
        """Cosine similarity of (normalised) `text` to each name of `vocabulary_names()`."""
        return self._names.similarities(normalise(text) or text.strip() or text)

    def map(self, text: str, top_k: int = 3) -> list[tuple[str, float]]:
        """The `top_k` names most similar to `text` by embedding, with cosine similarities, best first."""
        sims = self.similarities(text)
        order = np.argsort(-sims, kind="stable")[: max(0, top_k)]
        return [(self._names.names[i], float(sims[i])) for i in order]

    def resolve(self, text: str) -> str | None:
        """The COCO or ImageNet label `text` names, or None when the vocabulary has nothing for it."""
        norm = normalise(text)
        if not norm:
            return None
        label = _exact(normalise(text, keep_determiners=True)) or _exact(norm)
        if label:
            return label
        for phrase in subject_phrases(norm):
            label = _exact(phrase)
            if label:
                return self._refine(norm, label)
        sims = self.similarities(norm)
        best = int(np.argmax(sims))
        name = self._names.names[best]
        if sims[best] < self.threshold or _names_something_else(norm, name):
            return None
        return name

    def _refine(self, norm: str, label: str) -> str:
        """A COCO label found in a longer text, or an ImageNet class under it that the whole text names better."""
        if label not in COCO_LABELS:
            return label
        sims = self.similarities(norm)
        names = self._names.names
        own = sims[names.index(label)]
        under = [i for i, name in enumerate(names) if name != label and coco_label(name) == label]
        if under:
            best = max(under, key=lambda i: sims[i])
            if sims[best] >= max(self.threshold, own + self.refine_margin):
                return names[best]
        return label


def _names_something_else(query: str, name: str) -> bool:
    """True when the best name is only a piece of the text or the text only a piece of the name: "hair" is no
    "hair drier" (`is_fragment`; but a head noun may stand for its name: "guitar" for "acoustic guitar"), and
    "printer paper" no "printer" (the name's head is a mere modifier in the text)."""
    words, query_words = normalise(name).split(), query.split()
    head_stands_for_name = len(words) > 1 and query_words[-1] in (words[-1], words[-1] + "s")
    if is_fragment(query, " ".join(words)) and not head_stands_for_name:
        return True
    return words[-1] in query_words[:-1]
