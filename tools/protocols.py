"""Backend protocols: what a detector, segmenter, describer, depth estimator, remover, recolorer or generator
must offer. Images are H×W×3 uint8 RGB arrays, masks H×W bool arrays, boxes (x0, y0, x1, y1) in pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, runtime_checkable

import numpy as np

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    """A detected object: label, confidence and box (x0, y0, x1, y1) in image pixels."""

    label: str
    score: float
    box: Box


@runtime_checkable
class Detector(Protocol):
    def detect(self, image: np.ndarray, min_score: float = 0.3, labels: Iterable[str] | None = None) -> list[Detection]:
        """Objects in an H×W×3 uint8 RGB image, optionally only the given (resolved) labels."""

    def resolve_label(self, text: str) -> str | None:
        """The detector's label for a free-text object name, or None when it cannot detect that thing.

        A detector with a fixed label set may also expose it as `closed_vocabulary` (a tuple of labels);
        the search step then asks the LLM to name only those."""


@runtime_checkable
class Segmenter(Protocol):
    def segment_box(self, image: np.ndarray, box: Box, exclude: np.ndarray | None = None) -> np.ndarray:
        """A bool H×W mask of the object inside `box`; `exclude` marks pixels of objects in front of it."""


@runtime_checkable
class PointSegmenter(Protocol):
    def segment_points(self, image: np.ndarray, points: list[tuple[float, float]], labels: list[int],
                       box: Box | None = None) -> np.ndarray:
        """A bool H×W mask from click points (label 1 = on the object, 0 = background), optionally with a box."""


@runtime_checkable
class Describer(Protocol):
    def describe(self, image: np.ndarray, mask: np.ndarray, box: Box, detail: bool = False) -> dict[str, str | float]:
        """Attributes of the masked object (colour, size, position ...); with `detail` also the costly ones
        (a caption of the object crop) that the agent asks for when the scene has gaps."""


@runtime_checkable
class DepthEstimator(Protocol):
    def nearness(self, image: np.ndarray) -> np.ndarray:
        """H×W float32 relative nearness in [0, 1]: 1 is the closest point to the camera, 0 the farthest."""


@runtime_checkable
class Remover(Protocol):
    def remove(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The image with the masked region filled with plausible background."""


@runtime_checkable
class Recolorer(Protocol):
    def recolor(self, image: np.ndarray, alpha: np.ndarray, color: str) -> np.ndarray:
        """The image with the soft-masked region changed to `color`, texture and shading kept."""


@runtime_checkable
class Generator(Protocol):
    def inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str, negative_prompt: str | None = None) -> np.ndarray:
        """The image with the masked region regenerated to show `prompt`; every pixel outside `mask` is returned
        exactly as it was."""
