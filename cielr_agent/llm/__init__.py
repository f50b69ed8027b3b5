"""The LLM layer: in-process llama.cpp chat model, provider factory, portable structured calls.

Names are imported on first use (`llama_weights` alone does not import LangChain; see its docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cielr_agent.lazy import lazy_exports

_EXPORTS = {
    "ACCEPTED_SPECS": ".providers", "EMBEDDED_MODELS": ".llama_weights", "NATIVE_STRUCTURED_METHOD": ".llamacpp_chat",
    "ChatLlamaCpp": ".llamacpp_chat", "LLMOutputError": "cielr_agent.errors", "StructuredReply": ".structured",
    "load_llama": ".llama_weights", "make_chat_model": ".providers", "schema_to_grammar": ".llamacpp_chat",
    "structured_call": ".structured", "structured_method": ".providers",
}
__all__ = [
    "ACCEPTED_SPECS",
    "ChatLlamaCpp",
    "EMBEDDED_MODELS",
    "LLMOutputError",
    "NATIVE_STRUCTURED_METHOD",
    "StructuredReply",
    "load_llama",
    "make_chat_model",
    "schema_to_grammar",
    "structured_call",
    "structured_method",
]

if TYPE_CHECKING:
    from cielr_agent.errors import LLMOutputError

    from .llama_weights import EMBEDDED_MODELS, load_llama
    from .llamacpp_chat import NATIVE_STRUCTURED_METHOD, ChatLlamaCpp, schema_to_grammar
    from .providers import ACCEPTED_SPECS, make_chat_model, structured_method
    from .structured import StructuredReply, structured_call

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
