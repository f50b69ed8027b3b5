"""Backend registry: config names -> backend objects. Other packages add backends with `register_backend`.

A factory gets a `BackendContext`: the backend's options from the profile (``[backend_options.NAME]``), the
device and dtype, and the model manager that loads weights once and unloads them to fit a memory budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from cielr_agent.config import AgentConfig

from .model_manager import MODELS, ModelManager
from .protocols import DepthEstimator, Describer, Detector, Generator, Recolorer, Remover, Segmenter

KINDS = ("detector", "segmenter", "describer", "depth", "remover", "recolorer", "generator")
_FACTORIES: dict[str, dict[str, Callable[[BackendContext], Any]]] = {kind: {} for kind in KINDS}
_INSTANCES: dict[str, Any] = {}


@dataclass(frozen=True)
class BackendContext:
    """What a backend factory may use: its own options, where to run, whether it may download, the models."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    allow_download: bool = False
    models: ModelManager = MODELS

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def key(self, kind: str) -> str:
        opts = json.dumps(self.options, sort_keys=True, default=str)
        return f"{kind}/{self.name}/{opts}/{self.device}/{self.dtype}/{self.allow_download}"

    @classmethod
    def from_config(cls, config: AgentConfig, name: str) -> BackendContext:
        if config.memory_budget_gb is not None:
            MODELS.budget_bytes = int(config.memory_budget_gb * 2**30)
        return cls(name=name, options=dict(config.backend_options.get(name, {})), device=config.device,
                   dtype=config.dtype, allow_download=config.allow_download)


def register_backend(kind: str, name: str, factory: Callable[[BackendContext], Any]) -> None:
    """Make `factory(context)` available as backend `name` of `kind` (detector, segmenter, ...)."""
    if kind not in _FACTORIES:
        raise ValueError(f"unknown backend kind {kind!r}; kinds: {', '.join(_FACTORIES)}")
    _FACTORIES[kind][name] = factory
    for key in [k for k in _INSTANCES if k.startswith(f"{kind}/{name}/")]:
        del _INSTANCES[key]


def available_backends(kind: str) -> list[str]:
    return sorted(_FACTORIES[kind])


def get_backend(kind: str, name: str, context: BackendContext | None = None) -> Any:
    """The (process-wide, shared) backend instance for these options; models inside load lazily on first use."""
    context = context or BackendContext(name=name)
    try:
        factory = _FACTORIES[kind][name]
    except KeyError:
        raise ValueError(
            f"unknown {kind} backend {name!r}; available: {', '.join(available_backends(kind)) or 'none'}"
        ) from None
    key = context.key(kind)
    if key not in _INSTANCES:
        _INSTANCES[key] = factory(context)
    return _INSTANCES[key]


@dataclass
class Backends:
    """The backends one workspace uses."""

    detector: Detector
    segmenter: Segmenter
    describer: Describer
    remover: Remover
    recolorer: Recolorer
    generator: Generator | None = None
    depth: DepthEstimator | None = None

    @classmethod
    def from_config(cls, config: AgentConfig) -> Backends:
        def get(kind: str, name: str | None) -> Any:
            return None if name is None else get_backend(kind, name, BackendContext.from_config(config, name))

        return cls(
            detector=get("detector", config.detector),
            segmenter=get("segmenter", config.segmenter),
            describer=get("describer", config.describer),
            remover=get("remover", config.remover),
            recolorer=get("recolorer", config.recolorer),
            generator=get("generator", config.generator),
            depth=get("depth", config.depth),
        )


def _register_embedded() -> None:
    from .embedded import backends as eb

    register_backend("detector", "embedded", lambda ctx: _open_detector(ctx))
    register_backend("detector", "centernet", lambda ctx: eb.CocoDetector("centernet"))
    register_backend("detector", "nanodet", lambda ctx: eb.CocoDetector("nanodet"))
    register_backend("segmenter", "mobilesam", lambda ctx: _mobilesam(ctx))
    register_backend("describer", "embedded", lambda ctx: eb.AttributeDescriber())
    register_backend("remover", "patchmatch", lambda ctx: eb.ClassicRemover("auto"))
    register_backend("remover", "telea", lambda ctx: eb.ClassicRemover("telea"))
    register_backend("recolorer", "oklab", lambda ctx: eb.OklabRecolorer())


def _open_detector(ctx: BackendContext) -> Any:
    from .embedded.open_detection import OpenVocabularyDetector

    return OpenVocabularyDetector(ctx.option("coco_model", "centernet"), ctx.option("points_per_side", 12))


def _mobilesam(ctx: BackendContext) -> Any:
    from .embedded.sam_segmenter import MobileSamSegmenter

    return MobileSamSegmenter(points_per_side=ctx.option("points_per_side", 12))


def _register_foundation() -> None:
    """Foundation-model backends; their modules (torch, transformers, diffusers ...) import on first use."""

    def lazy(module: str, cls: str) -> Callable[[BackendContext], Any]:
        def factory(ctx: BackendContext) -> Any:
            import importlib

            return getattr(importlib.import_module(f"cielr_agent.tools.foundation.{module}"), cls)(ctx)

        return factory

    register_backend("detector", "grounding-dino", lazy("detection", "GroundingDinoDetector"))
    register_backend("detector", "owlv2", lazy("detection", "Owlv2Detector"))
    register_backend("detector", "grounding-dino-py", lazy("groundingdino_py", "GroundingDinoPyDetector"))
    register_backend("segmenter", "sam", lazy("segmentation", "SamSegmenter"))
    register_backend("segmenter", "sam-hf", lazy("segmentation", "SamHfSegmenter"))
    register_backend("segmenter", "sam2", lazy("segmentation", "Sam2Segmenter"))
    register_backend("depth", "depth-anything", lazy("depth", "DepthAnythingEstimator"))
    register_backend("describer", "captioner", lazy("captioning", "CaptionDescriber"))
    register_backend("remover", "sd-inpaint", lazy("inpainting", "DiffusersInpainter"))
    register_backend("generator", "sd-inpaint", lazy("inpainting", "DiffusersInpainter"))


_register_embedded()
_register_foundation()
