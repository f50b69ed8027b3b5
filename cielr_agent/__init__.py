"""cielr-agent: reasoning-driven image editing as a LangGraph plugin (CIELR).

    import cielr_agent
    result = cielr_agent.edit("photo.jpg", "remove the vehicle that has no engine", "out.png")
"""

from .actions import EditAction, EditPlan
from .api import edit, perceive
from .config import AgentConfig
from .errors import EditError, InstructionError, TargetNotFoundError
from .results import EditResult
from .ssr import SceneGraph, SceneObject

__version__ = "0.1.0"
__all__ = [
    "AgentConfig", "EditAction", "EditError", "EditPlan", "EditResult", "InstructionError", "SceneGraph",
    "SceneObject", "TargetNotFoundError", "edit", "perceive",
]
