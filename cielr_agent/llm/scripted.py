"""A scripted chat model: replies with pre-written items, in order, and records its prompts (tests, the
robustness suite, replaying a conversation in prompt experiments).

    model = ScriptedChatModel([{"reason": "...", "object_id": 1}, "not json", Plan(...)])

Each call consumes the next item:

* plain `invoke`: a str is the reply text; a dict / pydantic object is replied as JSON text;
* `with_structured_output(schema, ...)` (any method): the item is validated into `schema` exactly as a
  real provider's reply would be - a dict or model that does not fit, or a str that is not matching
  JSON, becomes a parsing error (`include_raw=True`) or raises (`include_raw=False`);
* `bind_tools(tools, tool_choice=<name> | "any" | "required")`: a dict / pydantic object becomes the
  arguments of a tool call to the forced tool (for "any" with several tools, a dict
  `{"name": tool, "args": {...}}` picks the tool); a str that parses as a JSON object is used as the
  arguments, any other str is returned as text without a tool call;
* an `AIMessage` item is returned as is (script free-form tool calls with it), and an exception item
  is raised;
* a callable item is called with the messages, and what it returns is the item (a reply that depends on
  the prompt).

`.calls` holds the message list of every call, `.call_kwargs` the bound kwargs (tools, tool_choice,
response_format) of every call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import BaseModel

from cielr_agent.llm.llamacpp_chat import ToolBinding, json_schema_structured_output, tool_call_structured_output


def _as_json_text(item: Any) -> str:
    if isinstance(item, BaseModel):
        return item.model_dump_json()
    if isinstance(item, (dict, list)):
        return json.dumps(item, ensure_ascii=False)
    return str(item)


def _as_args(item: Any) -> dict | None:
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json")
    if isinstance(item, dict):
        return item
    if isinstance(item, str):
        try:
            data = json.loads(item)
        except json.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None
    return None


def _words(text: str) -> int:
    return len(text.split())


class ScriptedChatModel(ToolBinding, BaseChatModel):
    """Returns `responses` in order; see the module docstring."""

    responses: list[Any]
    calls: list[list[BaseMessage]] = []
    call_kwargs: list[dict[str, Any]] = []
    position: int = 0
    name_of_model: str = "scripted"

    def __init__(self, responses: Sequence[Any] | None = None, **kwargs: Any):
        super().__init__(responses=list(responses or []), **kwargs)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def model_name(self) -> str:
        return self.name_of_model

    @property
    def remaining(self) -> int:
        return len(self.responses) - self.position

    def add(self, *items: Any) -> None:
        """Script more replies."""
        self.responses.extend(items)

    # -- tools & structured output -----------------------------------------------------------

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: str = "function_calling",
        strict: bool | None = None,  # noqa: ARG002
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        if kwargs:
            raise ValueError(f"unexpected arguments {sorted(kwargs)}")
        if method == "function_calling":
            return tool_call_structured_output(self, schema, include_raw=include_raw)
        return json_schema_structured_output(self, schema, include_raw=include_raw, method=method)

    # -- generation ---------------------------------------------------------------------------

    def _next(self, messages: list[BaseMessage]) -> Any:
        if self.position >= len(self.responses):
            last = messages[-1].content if messages else ""
            raise AssertionError(
                f"ScriptedChatModel ran out of responses after {len(self.responses)} call(s); "
                f"unexpected call with last message {str(last)[:200]!r}"
            )
        item = self.responses[self.position]
        self.position += 1
        return item(messages) if callable(item) and not isinstance(item, (type, BaseModel)) else item

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        kwargs.pop("ls_structured_output_format", None)
        self.calls.append(list(messages))
        self.call_kwargs.append(dict(kwargs))
        item = self._next(messages)
        if isinstance(item, BaseException):
            raise item
        n_in = sum(_words(str(m.content)) for m in messages)

        if isinstance(item, AIMessage):
            message = item
        else:
            tools: list[dict] = kwargs.get("tools") or []
            choice = kwargs.get("tool_choice")
            forced: str | None = None
            if tools and isinstance(choice, dict):
                forced = choice["function"]["name"]
            elif tools and choice == "any":
                forced = tools[0]["function"]["name"]
            message = None
            if forced is not None:
                args = _as_args(item)
                names = {t["function"]["name"] for t in tools}
                if args is not None and choice == "any" and set(args) == {"name", "args"} and args["name"] in names:
                    forced, args = args["name"], args["args"]
                if args is not None:
                    message = AIMessage(
                        content="",
                        tool_calls=[{"type": "tool_call", "id": f"call_{len(self.calls)}", "name": forced,
                                     "args": args}],
                        response_metadata={"finish_reason": "tool_calls", "model_name": self.model_name},
                    )
            if message is None:
                message = AIMessage(content=_as_json_text(item),
                                    response_metadata={"finish_reason": "stop", "model_name": self.model_name})
            n_out = _words(_as_json_text(item))
            message.usage_metadata = UsageMetadata(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out)
        return ChatResult(generations=[ChatGeneration(message=message)])
