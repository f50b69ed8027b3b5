"""Package attributes imported on first use (PEP 562), so that importing one light module of a package does not
import LangChain and LangGraph through the package's `__init__`."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package`: `exports` maps each name to the module that defines it (".api" is
    relative to the package, "cielr_agent.errors" absolute)."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(import_module(exports[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*import_module(package).__dict__, *exports])

    return __getattr__, __dir__
