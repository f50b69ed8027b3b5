"""One portable structured-output call with a repair retry, used by every LLM node of the graph."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import BaseModel, ValidationError

from cielr_agent.errors import LLMCallError, LLMOutputError

from .providers import structured_method

__all__ = ["LLMOutputError", "StructuredReply", "structured_call"]

_MAX_ECHO = 2000  # characters of a bad reply echoed back to the model / into errors


@dataclass
class StructuredReply:
    """A validated reply. Token counts (prompt, of those reused from the provider's cache, generated) and
    seconds are summed over all attempts."""

    value: BaseModel
    raw: AIMessage | None
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    seconds: float
    attempts: int


def _raw_text(raw: BaseMessage | None) -> str:
    """What the model said: its text, or its tool-call arguments rendered as JSON."""
    if raw is None:
        return ""
    content = raw.content if isinstance(raw.content, str) else json.dumps(raw.content, ensure_ascii=False)
    parts = [content] if content else []
    for call in getattr(raw, "tool_calls", None) or []:
        parts.append(json.dumps(call.get("args", {}), ensure_ascii=False))
    for call in getattr(raw, "invalid_tool_calls", None) or []:
        parts.append(str(call.get("args") or ""))
    return "\n".join(parts)


def _error_text(error: BaseException) -> str:
    cause = error.__cause__
    if isinstance(cause, ValidationError):
        error = cause
    if isinstance(error, ValidationError):
        lines = []
        for e in error.errors()[:8]:
            loc = ".".join(str(p) for p in e.get("loc", ())) or "(root)"
            lines.append(f"- {loc}: {e.get('msg')}")
        more = f"\n- ... {error.error_count() - 8} more" if error.error_count() > 8 else ""
        return f"{error.error_count()} validation error(s) for {error.title}:\n" + "\n".join(lines) + more
    text = str(error).strip() or type(error).__name__
    # LangChain appends a docs link to OutputParserException messages; it only distracts the model
    text = "\n".join(line for line in text.splitlines() if not line.startswith("For troubleshooting, visit:"))
    return text.strip()[:_MAX_ECHO]


def _usage(raw: BaseMessage | None) -> tuple[int, int, int]:
    """(prompt tokens, of those reused from a cache, generated tokens) of one reply."""
    usage = getattr(raw, "usage_metadata", None) or {}
    cached = (usage.get("input_token_details") or {}).get("cache_read", 0)
    return int(usage.get("input_tokens", 0) or 0), int(cached or 0), int(usage.get("output_tokens", 0) or 0)


def structured_call(
    model: BaseChatModel,
    schema: type[BaseModel],
    messages: list[BaseMessage],
    *,
    retries: int = 1,
    validate: Callable[[BaseModel], None] | None = None,
) -> StructuredReply:
    """Ask `model` for an instance of `schema`.

    Uses `with_structured_output(schema, include_raw=True, method=structured_method(model))`. When the
    reply does not parse, does not validate, or `validate(value)` raises ValueError, the bad reply and
    the error are appended to the conversation (as an AI message and a human follow-up) and the model
    is asked again, up to `retries` more times. Raises LLMOutputError when no attempt succeeds."""
    runnable = model.with_structured_output(schema, include_raw=True, method=structured_method(model))
    conversation = list(messages)
    errors: list[str] = []
    n_in = n_cached = n_out = 0
    raw: BaseMessage | None = None
    t0 = time.perf_counter()
    attempts = 0
    for attempt in range(1, retries + 2):
        attempts = attempt
        try:
            result = runnable.invoke(conversation)
        except Exception as exc:  # noqa: BLE001 - a provider's timeout, connection or API error
            name = getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__
            raise LLMCallError(f"the LLM ({name}) failed: {type(exc).__name__}: {exc}. Check that its server is "
                               "running and reachable (or its API key), then try again; --llm picks another "
                               "model") from exc
        raw = result.get("raw")
        i, c, o = _usage(raw)
        n_in, n_cached, n_out = n_in + i, n_cached + c, n_out + o
        parsed, error = result.get("parsed"), result.get("parsing_error")
        if error is None and parsed is None:
            error = ValueError(f"the model returned no {schema.__name__} object")
        if error is None and not isinstance(parsed, schema):
            try:
                parsed = schema.model_validate(parsed)
            except ValidationError as e:
                error = e
        if error is None and validate is not None:
            try:
                validate(parsed)
            except ValueError as e:  # includes pydantic.ValidationError
                error = e
        if error is None:
            return StructuredReply(
                value=parsed,
                raw=raw if isinstance(raw, AIMessage) else None,
                input_tokens=n_in,
                cached_tokens=n_cached,
                output_tokens=n_out,
                seconds=time.perf_counter() - t0,
                attempts=attempt,
            )
        errors.append(_error_text(error))
        if attempt <= retries:
            bad = _raw_text(raw)[:_MAX_ECHO] or "(empty reply)"
            conversation = [
                *conversation,
                AIMessage(content=bad),
                HumanMessage(
                    content=(
                        f"That reply was rejected: {errors[-1]}\n"
                        f"Reply again with one corrected {schema.__name__} JSON object that fixes this error."
                    )
                ),
            ]

    last = _raw_text(raw)
    name = getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__
    raise LLMOutputError(
        f"{name} gave no valid {schema.__name__} after {attempts} attempt(s). Last error: "
        f"{' '.join(errors[-1].split())}. "  # one line: the CLI prints it as one `error:` line
        f"Last reply: {last[:300]!r}. Try a stronger model (--llm openai:<model>, or llamacpp:<larger.gguf>), "
        "allow more retries, or make the instruction more explicit.",
        raw=last,
        errors=errors,
        attempts=attempts,
        schema=schema.__name__,
        usage=(n_in, n_cached, n_out),
        seconds=time.perf_counter() - t0,
    )
