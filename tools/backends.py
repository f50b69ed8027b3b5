"""Backend registry: config names -> backend objects. Other packages add backends with `register_backend`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from cielr_agent.config import AgentConfig

from .protocols import Describer, Detector, Generator, Recolorer, Remover, Segmenter

_FACTORIES: dict[str, dict[str, Callable[[], Any]]] = {
    "detector": {},
    "segmenter": {},
    "describer": {},
    "remover": {},
    "recolorer": {},
    "generator": {},
}


def register_backend(kind: str, name: str, factory: Callable[[], Any]) -> None:
    """Make `factory()` available as backend `name` of `kind` (detector, segmenter, ...)."""
    if kind not in _FACTORIES:
        raise ValueError(f"unknown backend kind {kind!r}; kinds: {', '.join(_FACTORIES)}")
    _FACTORIES[kind][name] = factory
    _instance.cache_clear()


def available_backends(kind: str) -> list[str]:
    return sorted(_FACTORIES[kind])


@lru_cache(maxsize=None)
def _instance(kind: str, name: str) -> Any:
    try:
        factory = _FACTORIES[kind][name]
    except KeyError:
        raise ValueError(
            f"unknown {kind} backend {name!r}; available: {', '.join(available_backends(kind)) or 'none'}"
        ) from None
    return factory()


def get_backend(kind: str, name: str) -> Any:
    """The (process-wide, shared) backend instance; models inside load lazily on first use."""
    return _instance(kind, name)


@dataclass
class Backends:
    """The backends one workspace uses."""

    detector: Detector
    segmenter: Segmenter
    describer: Describer
    remover: Remover
    recolorer: Recolorer
    generator: Generator | None = None

    @classmethod
    def from_config(cls, config: AgentConfig) -> Backends:
        return cls(
            detector=get_backend("detector", config.detector),
            segmenter=get_backend("segmenter", config.segmenter),
            describer=get_backend("describer", config.describer),
            remover=get_backend("remover", config.remover),
            recolorer=get_backend("recolorer", config.recolorer),
        )


def _register_embedded() -> None:
    from .embedded import backends as eb

    register_backend("detector", "centernet", lambda: eb.CocoDetector("centernet"))
    register_backend("detector", "nanodet", lambda: eb.CocoDetector("nanodet"))
    register_backend("segmenter", "isnet", lambda: eb.BoxSegmenter("isnet"))
    register_backend("segmenter", "u2netp", lambda: eb.BoxSegmenter("u2netp"))
    register_backend("describer", "embedded", eb.AttributeDescriber)
    register_backend("remover", "patchmatch", lambda: eb.ClassicRemover("auto"))
    register_backend("remover", "telea", lambda: eb.ClassicRemover("telea"))
    register_backend("recolorer", "oklab", eb.OklabRecolorer)


_register_embedded()
