"""LangGraph state machines of cielr-agent."""

from .edit_graph import build_edit_graph
from .state import EditContext, EditState

__all__ = ["EditContext", "EditState", "build_edit_graph"]
