"""cielr-agent: reasoning-driven image editing as a LangGraph plugin (CIELR).

    import cielr_agent
    result = cielr_agent.edit("photo.jpg", "remove the vehicle that has no engine", "out.png")

The names below are imported on first use, so that `import cielr_agent.<module>` (the CLI, a backend) does not
pay for LangChain and LangGraph until it needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "AgentConfig": ".config", "EditAction": ".actions", "EditError": ".errors", "EditPlan": ".actions",
    "EditResult": ".results", "InstructionError": ".errors", "SceneGraph": ".ssr", "SceneObject": ".ssr",
    "TargetNotFoundError": ".errors", "edit": ".api", "perceive": ".api",
}
__all__ = [
    "AgentConfig",
    "EditAction",
    "EditError",
    "EditPlan",
    "EditResult",
    "InstructionError",
    "SceneGraph",
    "SceneObject",
    "TargetNotFoundError",
    "edit",
    "perceive",
]

if TYPE_CHECKING:
    from .actions import EditAction, EditPlan
    from .api import edit, perceive
    from .config import AgentConfig
    from .errors import EditError, InstructionError, TargetNotFoundError
    from .results import EditResult
    from .ssr import SceneGraph, SceneObject

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
