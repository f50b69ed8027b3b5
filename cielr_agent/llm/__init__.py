"""The LLM layer: in-process llama.cpp chat model, provider factory, portable structured calls."""

from .llamacpp_chat import NATIVE_STRUCTURED_METHOD, ChatLlamaCpp, load_llama, schema_to_grammar
from .providers import ACCEPTED_SPECS, EMBEDDED_MODELS, make_chat_model, structured_method
from .structured import LLMOutputError, StructuredReply, structured_call

__all__ = [
    "ACCEPTED_SPECS",
    "EMBEDDED_MODELS",
    "NATIVE_STRUCTURED_METHOD",
    "ChatLlamaCpp",
    "LLMOutputError",
    "StructuredReply",
    "load_llama",
    "make_chat_model",
    "schema_to_grammar",
    "structured_call",
    "structured_method",
]
