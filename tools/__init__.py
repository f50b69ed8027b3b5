"""Typed LangChain tools over swappable backends. Each works alone in any LangChain/LangGraph agent:

    ws = Workspace.open("photo.jpg"); ws.perceive()
    agent = langchain.agents.create_agent(model, make_tools(ws))
"""

from langchain_core.tools import StructuredTool

from .backends import Backends, available_backends, get_backend, register_backend
from .editing import editing_tools
from .perception import perception_tools
from .protocols import Describer, Detection, Detector, Generator, Recolorer, Remover, Segmenter
from .workspace import Workspace


def make_tools(workspace: Workspace) -> list[StructuredTool]:
    """All perception and editing tools bound to `workspace`."""
    return [*perception_tools(workspace), *editing_tools(workspace)]


__all__ = [
    "Backends", "Describer", "Detection", "Detector", "Generator", "Recolorer", "Remover", "Segmenter",
    "Workspace", "available_backends", "editing_tools", "get_backend", "make_tools", "perception_tools",
    "register_backend",
]
