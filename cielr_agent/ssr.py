"""The structured semantic representation (SSR) of an image and its version history (chain-of-SSR)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr

from .masks import rle_decode, rle_encode

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels
DEPTH_MARGIN = 0.05  # nearness difference that counts as "in front"


class RLEMask(BaseModel):
    """A binary mask as COCO-style uncompressed run-length encoding (column-major)."""

    size: tuple[int, int]  # height, width
    counts: list[int]
    _array: np.ndarray | None = PrivateAttr(None)

    @classmethod
    def from_array(cls, mask: np.ndarray) -> RLEMask:
        rle = cls(**rle_encode(mask))
        rle._array = np.asarray(mask, bool).copy()
        rle._array.setflags(write=False)
        return rle

    def to_array(self) -> np.ndarray:
        """The mask as a read-only bool array (decoded once)."""
        if self._array is None:
            self._array = rle_decode(self.model_dump())
            self._array.setflags(write=False)
        return self._array

    @property
    def area(self) -> int:
        return int(sum(self.counts[1::2]))

    def __eq__(self, other: object) -> bool:  # the decoded-array cache is no part of the value
        return isinstance(other, RLEMask) and self.size == other.size and self.counts == other.counts

    __hash__ = None


class SceneObject(BaseModel):
    """One object of the scene; `id` is stable across SSR versions."""

    id: int
    label: str
    score: float = Field(ge=0.0, le=1.0)
    box: Box
    mask: RLEMask | None = None
    attributes: dict[str, str | float] = Field(default_factory=dict)
    depth_rank: int | None = None  # 0 = nearest to the camera
    nearness: float | None = Field(None, ge=0.0, le=1.0, description="median relative nearness from a depth "
                                   "model over the object (1 = closest point of the image)")
    source: str = ""  # tool/backend that produced it

    @property
    def alternatives(self) -> list[str]:
        """Other labels the detector gave this object (its "could also be" attribute)."""
        text = str(self.attributes.get("could also be", ""))
        return text.split(" or ") if text else []

    @property
    def area(self) -> float:
        if self.mask is not None:
            return float(self.mask.area)
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


Predicate = Literal["left_of", "right_of", "above", "below", "on", "near", "larger_than", "in_front_of", "behind"]


class Relation(BaseModel):
    subject: int
    predicate: Predicate
    object: int


class SceneUpdate(BaseModel):
    """One link of the chain-of-SSR: what was asked, which tool answered, and what changed."""

    version: int
    request: str
    tool: str
    changes: list[str] = Field(default_factory=list)
    added: list[int] = Field(default_factory=list)
    modified: list[int] = Field(default_factory=list)
    removed: list[int] = Field(default_factory=list)


class SceneGraph(BaseModel):
    """The SSR: image size, objects, relations and the history of every update."""

    width: int
    height: int
    objects: list[SceneObject] = Field(default_factory=list)
    relations: list[Relation] = Field(default_factory=list)
    version: int = 0
    history: list[SceneUpdate] = Field(default_factory=list)
    hints: list[str] = Field(default_factory=list, description="kinds of thing a classifier sees in the image "
                             "that no listed object is (not located yet)")

    def get(self, object_id: int) -> SceneObject:
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        known = ", ".join(f"#{o.id} {o.label}" for o in self.objects) or "none"
        raise KeyError(f"no object #{object_id} in the scene (objects: {known})")

    def has(self, object_id: int) -> bool:
        return any(o.id == object_id for o in self.objects)

    def next_id(self) -> int:
        return max((o.id for o in self.objects), default=0) + 1

    def apply(
        self,
        request: str,
        tool: str,
        *,
        add: list[SceneObject] = (),
        modify: list[SceneObject] = (),
        remove: list[int] = (),
        changes: list[str] = (),
    ) -> SceneGraph:
        """Return the next SSR version with objects added/replaced/removed and relations recomputed."""
        by_id = {o.id: o for o in self.objects}
        for obj in modify:
            if obj.id not in by_id:
                raise KeyError(f"cannot modify unknown object #{obj.id}")
            by_id[obj.id] = obj
        for oid in remove:
            by_id.pop(oid, None)
        for obj in add:
            if obj.id in by_id:
                raise ValueError(f"object id #{obj.id} already exists")
            by_id[obj.id] = obj
        objects = [by_id[k] for k in sorted(by_id)]
        objects = assign_depth_ranks(objects)
        version = self.version + 1
        update = SceneUpdate(
            version=version,
            request=request,
            tool=tool,
            changes=list(changes),
            added=[o.id for o in add],
            modified=[o.id for o in modify],
            removed=list(remove),
        )
        return SceneGraph(
            width=self.width,
            height=self.height,
            hints=self.hints,
            objects=objects,
            relations=compute_relations(objects, self.width, self.height),
            version=version,
            history=[*self.history, update],
        )

    def render(self, knowledge: dict[str, str] | None = None) -> str:
        """A compact text view of the SSR for an LLM prompt: what a decision needs and few tokens besides.

        A label's knowledge card goes right under the first object that has it (once: twelve people get one
        person card), a "could also be" label's card too (a horse detected as a sheep keeps "ridden, pulls carts").
        `near` relations are left out, and in a crowded scene the pairwise `left of` (the boxes and position words
        say it; fifteen people on a beach made 1,600 prompt tokens of it) and `larger than` (one size ranking per
        label says it: 45 pairs of kites and people cost 400 tokens, their ranking 40)."""
        knowledge = knowledge or {}
        carded: set[str] = set()
        ranked = any(o.depth_rank is not None for o in self.objects)
        lines = [f"Image {self.width}x{self.height} px{'; depth 0 = nearest' if ranked else ''}. Objects:"]
        if not self.objects:
            lines.append("  (none detected)")
        for o in self.objects:
            x0, y0, x1, y1 = (round(v) for v in o.box)
            depth = f" depth {o.depth_rank}" if o.depth_rank is not None else ""
            if o.nearness is not None:
                depth += f", nearness {o.nearness:.2f} (1 = closest)"
            lines.append(f"  #{o.id} {o.label} box [{x0},{y0},{x1},{y1}]{depth}; {_attributes_text(o.attributes)}")
            for label in [o.label, *o.alternatives]:
                if label in knowledge and label not in carded:
                    carded.add(label)
                    lines.append(f"     {label}: {knowledge[label]}")
        crowded = len(self.objects) > CROWDED
        pairwise_only = ("left_of", "larger_than") if crowded else ()
        shown = [r for r in self.relations if r.predicate != "near" and r.predicate not in pairwise_only]
        if shown:
            names = {o.id: f"#{o.id} {o.label}" for o in self.objects}
            rel = [f"{names[r.subject]} {r.predicate.replace('_', ' ')} {names[r.object]}" for r in shown]
            lines.append("Relations: " + "; ".join(rel))
        if crowded:
            lines.extend(self._size_ranking())
        if self.hints:
            lines.append("The image may also show (not located yet; detect them first): " + ", ".join(self.hints))
        return "\n".join(lines)

    def _size_ranking(self) -> list[str]:
        """One line ranking the objects of each label that occurs more than once by area, largest first."""
        by_label: dict[str, list[SceneObject]] = {}
        for o in self.objects:
            by_label.setdefault(o.label, []).append(o)
        ranks = [f"{label} " + ", ".join(f"#{o.id}" for o in sorted(group, key=lambda o: -o.area))
                 for label, group in by_label.items() if len(group) > 1]
        return ["Sizes, largest first: " + "; ".join(ranks)] if ranks else []


CROWDED = 8  # objects above which pairwise "left of" relations stay out of the prompt
_PLAIN_ATTRIBUTES = ("color", "secondary_color", "position", "size")  # values that read well without their key


def _attributes_text(attributes: dict) -> str:
    """Attribute values for the prompt: colours, position and size as bare words, the rest as key: value."""
    plain = [str(attributes[k]) for k in _PLAIN_ATTRIBUTES if k in attributes]
    keyed = [f"{k}: {v}" for k, v in attributes.items() if k not in _PLAIN_ATTRIBUTES and k != "area_fraction"]
    return ", ".join(plain + keyed)


def _overlap(a: Box, b: Box) -> float:
    """Intersection area over the smaller box's area."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 0.0


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def in_front(a: SceneObject, b: SceneObject) -> bool:
    """True when `a` occludes `b`. Measured depth wins (clearly nearer). Without it: a box lying mostly (80 %)
    inside a box at least twice its size is seen over it (a cup held by a person, a zebra standing before a
    giraffe on the same ground line); otherwise the ground-plane cue (lower bottom edge = nearer)."""
    overlap = _overlap(a.box, b.box)
    if overlap <= 0.1:
        return False
    if a.nearness is not None and b.nearness is not None:
        return a.nearness > b.nearness + DEPTH_MARGIN
    by_masks = _front_by_masks(a, b)
    if by_masks is not None:
        return by_masks
    if overlap >= 0.8:
        if 2 * _area(a.box) <= _area(b.box):
            return True
        if 2 * _area(b.box) <= _area(a.box):
            return False
    return a.box[3] > b.box[3] + 0.02 * (b.box[3] - b.box[1])


def _front_by_masks(a: SceneObject, b: SceneObject) -> bool | None:
    """Occlusion from masks where they decide it: inside the two boxes' intersection, the object in front owns
    the pixels (the one behind is cut there). None when either mask is missing or the evidence is weak."""
    if a.mask is None or b.mask is None:
        return None
    x0, y0 = int(max(a.box[0], b.box[0])), int(max(a.box[1], b.box[1]))
    x1, y1 = int(np.ceil(min(a.box[2], b.box[2]))), int(np.ceil(min(a.box[3], b.box[3])))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    pa = int(a.mask.to_array()[y0:y1, x0:x1].sum())
    pb = int(b.mask.to_array()[y0:y1, x0:x1].sum())
    area = (x1 - x0) * (y1 - y0)
    if max(pa, pb) < 0.15 * area:  # mostly background where they overlap: no evidence
        return None
    if pa >= 2 * pb and pb >= 0.03 * area:  # both are there, and `a` owns most of the shared place
        return True
    if pb >= 2 * pa and pa >= 0.03 * area:
        return False
    return None


def assign_depth_ranks(objects: list[SceneObject]) -> list[SceneObject]:
    """Order objects nearest-first: by measured nearness when every object has one, else by the ground-plane
    cue (lower bottom edge = nearer)."""
    if objects and all(o.nearness is not None for o in objects):
        order = sorted(objects, key=lambda o: -o.nearness)
    else:
        order = sorted(objects, key=lambda o: -o.box[3])
    rank = {o.id: i for i, o in enumerate(order)}
    return [o.model_copy(update={"depth_rank": rank[o.id]}) for o in objects]


def compute_relations(objects: list[SceneObject], width: int, height: int) -> list[Relation]:
    """Pairwise spatial relations from boxes (and depth ranks when known).

    `larger_than` is kept for objects of the same label ("the bigger horse"), `near` for different labels.
    """
    rels: list[Relation] = []
    near_gap = 0.05 * (width**2 + height**2) ** 0.5
    for a in objects:
        for b in objects:
            if a.id == b.id:
                continue
            ax, bx = (a.box[0] + a.box[2]) / 2, (b.box[0] + b.box[2]) / 2
            if a.box[2] <= b.box[0] + 0.1 * (a.box[2] - a.box[0]) and ax < bx:
                rels.append(Relation(subject=a.id, predicate="left_of", object=b.id))
            gap_x = max(0.0, max(a.box[0], b.box[0]) - min(a.box[2], b.box[2]))
            gap_y = max(0.0, max(a.box[1], b.box[1]) - min(a.box[3], b.box[3]))
            if a.id < b.id and a.label != b.label and max(gap_x, gap_y) < near_gap:
                rels.append(Relation(subject=a.id, predicate="near", object=b.id))
            centre_inside = b.box[0] <= ax <= b.box[2]
            bottom_on_top = b.box[1] <= a.box[3] <= b.box[1] + 0.6 * (b.box[3] - b.box[1])
            if centre_inside and bottom_on_top and a.box[1] < b.box[1] and a.area < b.area:
                rels.append(Relation(subject=a.id, predicate="on", object=b.id))
            if a.label == b.label and a.area > 1.5 * b.area:
                rels.append(Relation(subject=a.id, predicate="larger_than", object=b.id))
            if in_front(a, b):
                rels.append(Relation(subject=a.id, predicate="in_front_of", object=b.id))
    return rels
