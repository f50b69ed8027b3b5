"""Typed LangChain tools over swappable backends. Each works alone in any LangChain/LangGraph agent:

    ws = Workspace.open("photo.jpg"); ws.perceive()
    agent = langchain.agents.create_agent(model, make_tools(ws))

Names are imported on first use: the workspace and the backends (perception) do not need LangChain, so an edit
can perceive while LangChain and LangGraph are still being imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cielr_agent.lazy import lazy_exports

_EXPORTS = {
    "Backends": ".backends", "available_backends": ".backends", "get_backend": ".backends",
    "register_backend": ".backends", "editing_tools": ".editing", "perception_tools": ".perception",
    "Describer": ".protocols", "Detection": ".protocols", "Detector": ".protocols", "Generator": ".protocols",
    "Recolorer": ".protocols", "Remover": ".protocols", "Segmenter": ".protocols", "Workspace": ".workspace",
}
__all__ = [
    "Backends", "Describer", "Detection", "Detector", "Generator", "Recolorer", "Remover", "Segmenter",
    "Workspace", "available_backends", "editing_tools", "get_backend", "make_tools", "perception_tools",
    "register_backend",
]

if TYPE_CHECKING:
    from langchain_core.tools import StructuredTool

    from .backends import Backends, available_backends, get_backend, register_backend
    from .editing import editing_tools
    from .perception import perception_tools
    from .protocols import Describer, Detection, Detector, Generator, Recolorer, Remover, Segmenter
    from .workspace import Workspace


def make_tools(workspace: Workspace) -> list[StructuredTool]:
    """All perception and editing tools bound to `workspace`."""
    from .editing import editing_tools
    from .perception import perception_tools

    return [*perception_tools(workspace), *editing_tools(workspace)]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
