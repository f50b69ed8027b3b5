"""Chat model factory: one string picks an embedded GGUF, an OpenAI-compatible server or any
`init_chat_model` provider; plus which structured-output method suits each provider."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from .llama_weights import EMBEDDED_MODELS
from .llamacpp_chat import NATIVE_STRUCTURED_METHOD, ChatLlamaCpp

__all__ = ["ACCEPTED_SPECS", "EMBEDDED_MODELS", "make_chat_model", "structured_method"]


ACCEPTED_SPECS = (
    '"embedded" (Qwen2.5-Coder-1.5B GGUF, in-process), "embedded-tiny" (SmolLM2-135M GGUF, in-process), '
    '"llamacpp:<path/to/model.gguf>", "openai:<model>" (OpenAI or any OpenAI-compatible server via '
    'base_url= / $OPENAI_BASE_URL), "ollama:<model>" ($OLLAMA_HOST, default http://localhost:11434), '
    '"<provider>:<model>" for langchain.chat_models.init_chat_model, or a BaseChatModel instance'
)

_OPENAI_HOSTS = ("api.openai.com",)


def make_chat_model(spec: str | BaseChatModel = "embedded", **kwargs: Any) -> BaseChatModel:
    """Build the chat model named by `spec` (see ACCEPTED_SPECS); kwargs go to the model class."""
    if isinstance(spec, BaseChatModel):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec must be a non-empty string or a BaseChatModel; accepted: {ACCEPTED_SPECS}")
    spec = spec.strip()

    if spec in EMBEDDED_MODELS:
        from cielr_agent.assets import ensure_asset

        path = ensure_asset(EMBEDDED_MODELS[spec])
        # the bundled prompts show the JSON to produce; repeating the schema costs ~300 prompt tokens a call
        kwargs.setdefault("schema_hint", False)
        return ChatLlamaCpp(model_path=str(path), **kwargs)

    prefix, sep, rest = spec.partition(":")
    if sep and prefix == "llamacpp":
        path = Path(rest).expanduser()
        if not rest or not path.is_file():
            raise FileNotFoundError(
                f"llamacpp model file not found: {str(path) if rest else '(empty path)'}. "
                'Use "llamacpp:/path/to/model.gguf" with an existing GGUF file, or "embedded" for the built-in model.'
            )
        return ChatLlamaCpp(model_path=str(path), **kwargs)

    if sep and prefix == "openai":
        if not rest:
            raise ValueError('"openai:" needs a model name, e.g. "openai:gpt-4o-mini"')
        return _chat_openai(rest, **kwargs)

    if sep and prefix == "ollama":
        if not rest:
            raise ValueError('"ollama:" needs a model name, e.g. "ollama:qwen2.5-coder:1.5b"')
        host = kwargs.pop("base_url", None) or os.environ.get("OLLAMA_HOST") or "http://localhost:11434"
        if "://" not in host:
            host = f"http://{host}"
        host = host.rstrip("/")
        base_url = host if host.endswith("/v1") else f"{host}/v1"
        kwargs.setdefault("api_key", "ollama")
        return _chat_openai(rest, base_url=base_url, **kwargs)

    try:
        from langchain.chat_models import init_chat_model

        return init_chat_model(spec, **kwargs)
    except Exception as e:  # noqa: BLE001 - init_chat_model raises ValueError/ImportError/...
        raise ValueError(f"cannot make a chat model from {spec!r}: {e}. Accepted forms: {ACCEPTED_SPECS}") from e


def _chat_openai(model: str, **kwargs: Any) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    base_url = kwargs.pop("base_url", None) or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
    api_key = kwargs.pop("api_key", None) or os.environ.get("OPENAI_API_KEY")
    if not api_key:
        if base_url:
            api_key = "not-needed"  # local OpenAI-compatible servers (vLLM, llama.cpp, LM Studio) ignore it
        else:
            raise ValueError(
                f"openai:{model} needs an API key: set OPENAI_API_KEY or pass api_key=..., or point it at an "
                "OpenAI-compatible server with base_url=... / $OPENAI_BASE_URL"
            )
    kwargs.setdefault("temperature", 0)
    if base_url:
        kwargs["base_url"] = base_url
    return ChatOpenAI(model=model, api_key=api_key, **kwargs)


def _is_official_openai(base_url: str | None) -> bool:
    if not base_url:
        return True
    return any(host in base_url for host in _OPENAI_HOSTS)


def structured_method(model: Any) -> str:
    """The `with_structured_output(method=...)` that works for this model's provider.

    * ChatLlamaCpp -> its grammar-constrained JSON path ("json_schema");
    * ChatOpenAI on the official OpenAI API -> "json_schema" (native structured outputs);
    * ChatOpenAI on another base_url (vLLM, llama.cpp server, Ollama...) -> "function_calling"
      (llama-cpp-python's server rejects response_format json_schema; tool calls are widely supported);
    * anything else -> "function_calling".
    """
    bound = getattr(model, "bound", None)  # a RunnableBinding around a chat model
    if bound is not None and not isinstance(model, BaseChatModel):
        model = bound
    if isinstance(model, ChatLlamaCpp):
        return NATIVE_STRUCTURED_METHOD
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:  # pragma: no cover
        ChatOpenAI = None  # type: ignore[assignment]  # noqa: N806
    if ChatOpenAI is not None and isinstance(model, ChatOpenAI):
        return "json_schema" if _is_official_openai(getattr(model, "openai_api_base", None)) else "function_calling"
    return "function_calling"
