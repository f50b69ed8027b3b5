"""The image and scene that tools act on: current pixels, the untouched original, the SSR, object masks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cielr_agent.config import AgentConfig
from cielr_agent.imaging import load_image, save_image_atomic
from cielr_agent.masks import box_iou, dilate, solid
from cielr_agent.ssr import RLEMask, SceneGraph, SceneObject, in_front

from .backends import Backends

OCCLUDER_MARGIN = 3  # px around an occluder's mask that stay untouched (soft edges such as fur)


class Workspace:
    """Holds one image being edited. Tools built with `make_tools(workspace)` read and update it."""

    def __init__(self, image: np.ndarray, config: AgentConfig | None = None, backends: Backends | None = None,
                 source: str = "<array>"):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("workspace image must be an H×W×3 uint8 RGB array")
        self.config = config or AgentConfig()
        self.backends = backends or Backends.from_config(self.config)
        self.source = source
        self.original = image.copy()
        self.original.setflags(write=False)
        self.image = image.copy()
        self.scene = SceneGraph(width=image.shape[1], height=image.shape[0])
        self._masks: dict[int, np.ndarray] = {}
        self._nearness: tuple[bytes, np.ndarray] | None = None

    @classmethod
    def open(cls, path: str | Path, config: AgentConfig | None = None, backends: Backends | None = None) -> Workspace:
        """Load an image file (never written to) into a new workspace."""
        return cls(load_image(path), config, backends, source=str(path))

    # --- perception -------------------------------------------------------------------------------------------

    def perceive(self) -> SceneGraph:
        """Build the initial SSR: detect every known object, add box-level attributes and relations.

        Detections of other labels on (nearly) the same box are not separate objects: they are recorded as
        the object's "could also be" attribute so the LLM sees the ambiguity.
        """
        floor = min(self.config.min_score, self.config.refine_min_score)
        kept: list[tuple] = []  # (detection, alternative labels)
        for det in self.backends.detector.detect(self.image, min_score=floor):
            same_place = next((k for k in kept if box_iou(k[0].box, det.box) > 0.7), None)
            if same_place is not None:
                if det.label != same_place[0].label and det.label not in same_place[1]:
                    same_place[1].append(det.label)
            elif det.score >= self.config.min_score:
                kept.append((det, []))
        objects = []
        for i, (det, alternatives) in enumerate(kept, start=1):
            obj = self._new_object(i, det, source=f"detector:{self.config.detector}")
            if alternatives:
                obj.attributes["could also be"] = " or ".join(alternatives)
            objects.append(obj)
        self.scene = SceneGraph(width=self.scene.width, height=self.scene.height).apply(
            "build the initial scene", "detect_objects", add=objects,
            changes=[f"detected {len(objects)} object(s)"],
        )
        self._segment_all([o.id for o in objects], "segment every detected object")
        hints = getattr(self.backends.detector, "scene_hints", None)
        if hints is not None:
            present = {label for o in self.scene.objects for label in (o.label, *o.alternatives)}
            self.scene = self.scene.model_copy(update={"hints": hints(self.image, present)})
        return self.scene

    def _segment_all(self, ids: list[int], request: str) -> None:
        """Masks for several objects at once when the segmenter batches box prompts on one image embedding
        (MobileSAM): recorded in the SSR, so occlusion is judged from masks, not from boxes alone. Each visible
        mask is the object's own mask minus the solid masks of the objects found in front of it."""
        segment_boxes = getattr(self.backends.segmenter, "segment_boxes", None)
        ids = [i for i in ids if i not in self._masks and self.scene.get(i).mask is None]
        if segment_boxes is None or not ids:
            return
        others = [(o.box, self._masks[o.id]) for o in self.scene.objects if o.id not in ids and o.id in self._masks]
        raw = dict(zip(ids, segment_boxes(self.image, [self.scene.get(i).box for i in ids], others=others)))
        updated = []
        for oid, m in raw.items():
            obj = self.scene.get(oid)
            if m.any():
                updated.append(obj.model_copy(update={
                    "mask": RLEMask.from_array(m), "nearness": self.nearness_of(m) if obj.nearness is None
                    else obj.nearness, "attributes": {**obj.attributes, "area_fraction": round(float(m.mean()), 4)}}))
        if not updated:
            return
        self.scene = self.scene.apply(request, "segment_object", modify=updated,
                                      changes=[f"mask of #{o.id} {o.label}: {o.mask.area} px" for o in updated])
        for obj in updated:
            occluders = [raw.get(o.id, None) for o in self.occluders(obj.id)]
            occluders = [m for m in occluders if m is not None and m.any()]
            visible = raw[obj.id]
            if occluders:
                visible = visible & ~dilate(solid(np.logical_or.reduce(occluders)), OCCLUDER_MARGIN)
            self._masks[obj.id] = visible if visible.any() else raw[obj.id]

    def _new_object(self, oid: int, det, source: str) -> SceneObject:
        box_mask = self._box_mask(det.box)
        attrs = self.backends.describer.describe(self.image, box_mask, det.box)
        return SceneObject(id=oid, label=det.label, score=round(det.score, 3), box=det.box, attributes=attrs,
                           nearness=self.nearness_of(box_mask), source=source)

    def nearness_of(self, mask: np.ndarray) -> float | None:
        """Median depth-model nearness over `mask` (1 = closest), or None without a depth backend."""
        if self.backends.depth is None or not mask.any():
            return None
        key = hashlib.blake2b(self.image.tobytes(), digest_size=16).digest()
        if self._nearness is None or self._nearness[0] != key:
            self._nearness = (key, self.backends.depth.nearness(self.image))
        return round(float(np.median(self._nearness[1][mask])), 3)

    def _box_mask(self, box) -> np.ndarray:
        """The central part of a box, a cheap stand-in mask for attributes before segmentation."""
        h, w = self.image.shape[:2]
        x0, y0, x1, y1 = box
        dx, dy = 0.2 * (x1 - x0), 0.2 * (y1 - y0)
        m = np.zeros((h, w), bool)
        m[int(max(0, y0 + dy)):int(min(h, y1 - dy)) + 1, int(max(0, x0 + dx)):int(min(w, x1 - dx)) + 1] = True
        return m

    def add_detections(self, detections, request: str) -> list[SceneObject]:
        """Merge detections into the SSR, skipping ones that duplicate an existing object; returns the new ones."""
        added: list[SceneObject] = []
        next_id = self.scene.next_id()
        for det in detections:
            dup = any(o.label == det.label and box_iou(o.box, det.box) > 0.5 for o in [*self.scene.objects, *added])
            if not dup:
                added.append(self._new_object(next_id, det, source=f"detector:{self.config.detector}"))
                next_id += 1
        if added:
            self.scene = self.scene.apply(request, "detect_objects", add=added,
                                          changes=[f"added #{o.id} {o.label}" for o in added])
            self._segment_all([o.id for o in added], f"segment {', '.join(f'#{o.id}' for o in added)}")
            added = [self.scene.get(o.id) for o in added]
        return added

    def add_segmented(self, label: str, mask: np.ndarray, request: str) -> SceneObject:
        """Add an object known by its mask (e.g. from a click) to the SSR."""
        if not mask.any():
            raise ValueError(f"the segmenter found no {label} there")
        ys, xs = np.nonzero(mask)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        attrs = {**self.backends.describer.describe(self.image, mask, box),
                 "area_fraction": round(float(mask.mean()), 4)}
        obj = SceneObject(id=self.scene.next_id(), label=label, score=1.0, box=box, mask=RLEMask.from_array(mask),
                          attributes=attrs, nearness=self.nearness_of(mask),
                          source=f"segmenter:{self.config.segmenter}")
        self.scene = self.scene.apply(request, "segment_at_point", add=[obj], changes=[f"added #{obj.id} {label}"])
        self._masks[obj.id] = mask
        return obj

    def mask(self, object_id: int) -> np.ndarray:
        """The object's visible full-image bool mask (occluders' pixels excluded), segmented on first use and
        recorded in the SSR."""
        if object_id in self._masks:
            return self._masks[object_id]
        obj = self.scene.get(object_id)
        if obj.mask is not None:
            m = obj.mask.to_array().copy()
        else:
            occluders = [self.mask(o.id) for o in self.occluders(object_id)]
            exclude = dilate(solid(np.logical_or.reduce(occluders)), OCCLUDER_MARGIN) if occluders else None
            m = self.backends.segmenter.segment_box(self.image, obj.box, exclude)
            if not m.any():
                raise ValueError(f"segmentation of #{obj.id} {obj.label} found no pixels inside its box")
            updated = obj.model_copy(update={"mask": RLEMask.from_array(m), "nearness": self.nearness_of(m),
                                             "attributes": {**obj.attributes,
                                                            "area_fraction": round(float(m.mean()), 4)}})
            self.scene = self.scene.apply(f"segment #{obj.id}", "segment_object", modify=[updated],
                                          changes=[f"mask of #{obj.id} {obj.label}: {int(m.sum())} px"])
        self._masks[object_id] = m
        return m

    def occluders(self, object_id: int) -> list[SceneObject]:
        """Objects in front of `object_id` that overlap it (their pixels must survive its edit)."""
        target = self.scene.get(object_id)
        return [o for o in self.scene.objects if o.id != object_id and in_front(o, target)]

    def edit_mask(self, object_id: int, grow: int | None = None, whole: bool = False) -> np.ndarray:
        """Pixels an edit of the object may change: its mask (`whole`: with gaps and holes closed), grown, minus
        the masks of its occluders."""
        grow = self.config.mask_dilation if grow is None else grow
        region = dilate(self.whole_mask(object_id) if whole else self.mask(object_id), grow)
        own = self.scene.get(object_id).mask
        for occ in self.occluders(object_id):
            body = solid(self.mask(occ.id))
            margin = dilate(body, OCCLUDER_MARGIN) & ~body
            if own is not None:  # margin pixels the segmenter gave to this object are its own (a red tube
                margin &= ~own.to_array()  # showing beside a dog's head), not the occluder's soft edge
            region &= ~(body | margin)
        return region

    def whole_mask(self, object_id: int) -> np.ndarray:
        """The object as one solid shape (holes and narrow gaps closed, within its box): what a cut-out moves."""
        m = solid(self.mask(object_id))
        x0, y0, x1, y1 = self.scene.get(object_id).box
        inside = np.zeros_like(m)
        inside[max(0, int(y0)):int(np.ceil(y1)) + 1, max(0, int(x0)):int(np.ceil(x1)) + 1] = True
        return m & (inside | self.mask(object_id))

    def known_masks(self) -> set[int]:
        """Ids of the objects whose masks are already computed (asking for others would segment them)."""
        return set(self._masks)

    def set_mask(self, object_id: int, mask: np.ndarray) -> None:
        """Record the object's mask after an edit moved or reshaped it."""
        self._masks[object_id] = mask

    def forget_mask(self, object_id: int) -> None:
        self._masks.pop(object_id, None)

    # --- output -----------------------------------------------------------------------------------------------

    def changed_pixels(self) -> int:
        return int(np.any(self.image != self.original, axis=2).sum())

    def save(self, path: str | Path) -> Path:
        """Write the current image atomically; refuses to overwrite the source image."""
        path = Path(path)
        if self.source != "<array>" and path.resolve() == Path(self.source).resolve():
            raise ValueError(f"refusing to overwrite the input image {path}; choose another output path")
        return save_image_atomic(self.image, path)
