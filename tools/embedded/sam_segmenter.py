"""The `mobilesam` segmenter backend: box prompts, point prompts, mask refinement and class-agnostic regions,
all on one shared image embedding (computed once per image)."""

from __future__ import annotations

import numpy as np

from cielr_agent.imaging import image_key
from cielr_agent.masks import box_iou, box_of

from .mobilesam import MobileSamPredictor, shared_predictor
from .regions import Region, clean_mask, generate_regions

Box = tuple[float, float, float, float]
UNION_MIN_IOU = 0.85  # outputs this confident may add the parts the best one dropped
BOX_SLACK = 0.04  # a mask may leave its (detector-made, often tight) box by this fraction of the box size


def _overlaps(a: Box, b: Box) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _inside_of(a: Box, b: Box) -> bool:
    """`a` lies (80 %) within `b`, which is at least twice as big: a part of, or a thing on, `b`."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return area_a > 0 and ix * iy >= 0.8 * area_a and area_b >= 2 * area_a


def _inner_point(mask: np.ndarray) -> tuple[float, float]:
    """The mask pixel farthest from its edge (a safe click on the object)."""
    import cv2

    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x), float(y)


class MobileSamSegmenter:
    """MobileSAM behind the Segmenter and PointSegmenter protocols, plus `regions` and batched box prompts."""

    def __init__(self, predictor: MobileSamPredictor | None = None, points_per_side: int = 12):
        self._predictor = predictor
        self.points_per_side = int(points_per_side)
        self._regions: tuple[str, list[Region]] | None = None

    @property
    def predictor(self) -> MobileSamPredictor:
        if self._predictor is None:
            self._predictor = shared_predictor()
        return self._predictor

    # --- boxes ------------------------------------------------------------------------------------------

    def segment_boxes(self, image: np.ndarray, boxes: list[Box],
                      others: list[tuple[Box, np.ndarray]] = ()) -> list[np.ndarray]:
        """One mask per box, decoded in batches on one embedding.

        First pass: the box alone; of SAM's four outputs the best predicted IoU × fit (IoU of the mask's own
        box with the prompt box) wins. A box prompt often takes in an overlapping object (a dog sitting in
        front of a bicycle) and then loses thin parts of its own (the saddle). Second pass, for boxes that
        overlap other objects (the other boxes of the call and `others`, known (box, mask) pairs): the same
        box plus a negative point at the innermost pixel of each overlapping object, unless the box lies
        within that object (a tie on a person). Pixels far outside the box are cut in the end."""
        if not boxes:
            return []
        p = self.predictor
        p.set_image(image)
        first = self._decode(boxes, [[] for _ in boxes])
        known = [(b, m) for b, m in zip(boxes, first)] + list(others)
        negatives = [[_inner_point(m) for j, (b, m) in enumerate(known)
                      if j != i and m.any() and _overlaps(box, b) and not _inside_of(box, b)] for i, box in enumerate(boxes)]
        redo = [i for i, n in enumerate(negatives) if n]
        if redo:
            avoid = [np.logical_or.reduce([m for j, (b, m) in enumerate(known) if j != i and m.any()
                                           and _overlaps(boxes[i], b) and not _inside_of(boxes[i], b)]) for i in redo]
            for i, m in zip(redo, self._decode([boxes[i] for i in redo], [negatives[i] for i in redo], avoid)):
                first[i] = m
        return [self._inside(m, b) for m, b in zip(first, boxes)]

    def _decode(self, boxes: list[Box], negatives: list[list[tuple[float, float]]],
                avoid: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Best output per box; with `avoid` (the overlapping objects' masks) also the union with the other
        confident outputs that stay inside the box and off those objects (parts the best one dropped)."""
        p = self.predictor
        h, w = p.image_shape
        width = max(len(n) for n in negatives)
        coords = np.zeros((len(boxes), width + 2, 2), np.float32)
        labels = np.full((len(boxes), width + 2), -1.0, np.float32)
        for i, (box, neg) in enumerate(zip(boxes, negatives)):
            if neg:
                coords[i, :len(neg)] = neg
                labels[i, :len(neg)] = 0.0
            coords[i, width:] = [[box[0], box[1]], [box[2], box[3]]]
            labels[i, width:] = (2.0, 3.0)
        low, iou = p.predict_batch(coords, labels)
        out = []
        for k, (box, lows, ious) in enumerate(zip(boxes, low, iou)):
            masks = p.upscale(lows) > 0.0
            scores = [float(s) * (box_iou(box_of(m), box) if m.any() else 0.0) for m, s in zip(masks, ious)]
            best = masks[int(np.argmax(scores))]
            if avoid is not None:
                inside = self._inside(np.ones((h, w), bool), box)
                for m, s in zip(masks, ious):
                    area = max(1, int(m.sum()))
                    if s >= UNION_MIN_IOU and (m & ~inside).sum() <= 0.1 * area and (m & avoid[k]).sum() <= 0.05 * area:
                        best = best | m
            out.append(best)
        return out

    def segment_box(self, image: np.ndarray, box: Box, exclude: np.ndarray | None = None) -> np.ndarray:
        (mask,) = self.segment_boxes(image, [box])
        return mask if exclude is None else mask & ~exclude

    @staticmethod
    def _inside(mask: np.ndarray, box: Box) -> np.ndarray:
        h, w = mask.shape
        x0, y0, x1, y1 = box
        sx, sy = BOX_SLACK * (x1 - x0) + 2, BOX_SLACK * (y1 - y0) + 2
        keep = np.zeros_like(mask)
        keep[max(0, int(y0 - sy)):min(h, int(np.ceil(y1 + sy))), max(0, int(x0 - sx)):min(w, int(np.ceil(x1 + sx)))] = True
        return clean_mask(mask & keep, max(16, int(0.002 * (x1 - x0) * (y1 - y0))))

    # --- points -----------------------------------------------------------------------------------------

    def segment_points(self, image: np.ndarray, points: list[tuple[float, float]], labels: list[int],
                       box: Box | None = None) -> np.ndarray:
        """Mask from clicks (1 on the object, 0 background), optionally with a box. One positive click is
        ambiguous (a part or the whole): the best-scoring of the three multimask outputs is taken; with more
        prompts SAM's single output is, then refined once with itself as the mask prompt."""
        p = self.predictor
        p.set_image(image)
        single = len(points) == 1 and box is None
        pred = p.predict(points=points, point_labels=labels, box=box, multimask=single)
        best = int(np.argmax(pred.scores))
        refined = p.predict(points=points, point_labels=labels, box=box, mask_input=pred.low_res[best],
                            multimask=False)
        mask = refined.masks[0] if refined.masks[0].any() else pred.masks[best]
        return clean_mask(mask, max(16, int(0.0005 * mask.size)))

    # --- regions ----------------------------------------------------------------------------------------

    def regions(self, image: np.ndarray) -> list[Region]:
        """Class-agnostic regions of the image (cached per image)."""
        key = image_key(image)
        if self._regions is None or self._regions[0] != key:
            self._regions = (key, generate_regions(self.predictor, image, points_per_side=self.points_per_side))
        return self._regions[1]
