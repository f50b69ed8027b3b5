"""In-process llama.cpp chat model for LangChain (no server, no langchain_community).

`ChatLlamaCpp` runs a GGUF model through `llama_cpp.Llama` inside this process. Small local models
do not emit tool calls on their own (tool_choice="auto"), so structured output and forced tool calls
are produced by *grammar-constrained decoding*: the JSON schema of the wanted output is compiled to a
llama.cpp GBNF grammar and the sampler can only emit JSON that matches it. The result is then
validated with pydantic (or returned as a dict for JSON-schema dicts).

`llama_cpp` is imported lazily, so this module imports without the `embedded` extra installed.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field, ValidationError

from .llama_weights import _PREFIXES, DEFAULT_N_CTX, LOAD_SECONDS, default_threads, load_llama
from .prefix_states import PrefixStates, common_prefix

__all__ = [
    "ChatLlamaCpp",
    "NATIVE_STRUCTURED_METHOD",
    "load_llama",
    "schema_to_grammar",
    "structured_output_runnable",
    "resolve_output_schema",
]

# The `with_structured_output` method that maps onto ChatLlamaCpp's grammar-constrained JSON path.
NATIVE_STRUCTURED_METHOD = "json_schema"
# used for a GGUF that carries no chat template
_CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# ---------------------------------------------------------------------------------------------
# JSON schema -> llama.cpp grammar
# ---------------------------------------------------------------------------------------------

# Keywords that only annotate a schema; dropped when the schema is simplified for the grammar.
_ANNOTATION_KEYS = {"title", "discriminator", "examples", "default", "$schema", "$id", "$comment",
                    "deprecated", "readOnly", "writeOnly"}
_GRAMMAR_CACHE: dict[str, Any] = {}


_ANY_VALUE = {"type": ["object", "array", "string", "number", "boolean", "null"]}
# Keywords that carry a schema (so an empty/annotation-only value there means "any JSON value").
_SUBSCHEMA_KEYS = {"items", "additionalProperties", "not", "contains", "if", "then", "else"}
_SUBSCHEMA_LIST_KEYS = {"anyOf", "oneOf", "allOf", "prefixItems"}


def _clean_schema(schema: dict, *, inline_refs: bool, max_depth: int = 6) -> dict:
    """Make a (pydantic) JSON schema digestible for llama.cpp's schema->grammar converter.

    Drops annotation keywords (title, discriminator, default, examples...), turns schemas that
    accept anything (`{}`, `{"title": "Any"}`) into an explicit any-JSON-value union, and with
    `inline_refs` replaces local `$ref`s (#/$defs/X, #/definitions/X) by their targets; recursion
    deeper than `max_depth` becomes "any JSON value"."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}

    def resolve(ref: str) -> dict:
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix) and ref[len(prefix):] in defs:
                return defs[ref[len(prefix):]]
        raise ValueError(f"unsupported $ref {ref!r} (only local #/$defs/... references are supported)")

    def sub(node: Any, depth: int) -> Any:
        """A value that is itself a schema."""
        if isinstance(node, bool):
            return _ANY_VALUE if node else node
        if not isinstance(node, dict):
            return node
        if inline_refs and "$ref" in node:
            if depth >= max_depth:
                return dict(_ANY_VALUE)
            target = sub(resolve(node["$ref"]), depth + 1)
            skip = {"$ref", "$defs", "definitions", "description", *_ANNOTATION_KEYS}
            extra = {k: v for k, v in node.items() if k not in skip}
            return {**target, **sub(extra, depth)} if extra else target
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k in _ANNOTATION_KEYS or (inline_refs and k in ("$defs", "definitions")):
                continue
            if k in ("properties", "patternProperties", "$defs", "definitions") and isinstance(v, dict):
                out[k] = {name: sub(prop, depth) for name, prop in v.items()}  # keys are names
            elif k in _SUBSCHEMA_KEYS:
                out[k] = v if isinstance(v, bool) and k == "additionalProperties" else sub(v, depth)
            elif k in _SUBSCHEMA_LIST_KEYS and isinstance(v, list):
                out[k] = [sub(x, depth) for x in v]
            else:
                out[k] = v
        if len(out.get("allOf", [])) == 1 and isinstance(out["allOf"][0], dict):  # a described $ref
            only = out.pop("allOf")[0]
            out = {**only, **out}
        if not out or set(out) <= {"description"}:
            return {**_ANY_VALUE, **out}
        return out

    if not inline_refs and isinstance(schema.get("$ref"), str) and defs:
        # a root that is only a reference (pydantic does this for recursive models): start from the
        # target and keep $defs, so the converter can keep the recursion
        schema = {**resolve(schema["$ref"]), "$defs": defs}
    return sub(schema, 0)


def _inline_refs(schema: dict, max_depth: int = 6) -> dict:
    """`_clean_schema` with every local $ref inlined."""
    return _clean_schema(schema, inline_refs=True, max_depth=max_depth)


def schema_to_grammar(schema: dict, verbose: bool = False) -> Any:
    """Compile a JSON schema into a `llama_cpp.LlamaGrammar` (cached).

    llama.cpp's converter understands $defs/$ref/oneOf/anyOf/const/enum but not every pydantic
    schema (e.g. `Any` fields), so the schema is cleaned first (see `_clean_schema`); if conversion
    still fails, refs are inlined too. A schema that cannot be converted raises ValueError instead
    of silently degrading to unconstrained JSON, as llama-cpp-python's response_format does."""
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    key = json.dumps(schema, sort_keys=True)
    cached = _GRAMMAR_CACHE.get(key)
    if cached is not None:
        return cached
    try:
        gbnf = json_schema_to_gbnf(json.dumps(_clean_schema(schema, inline_refs=False)))
    except Exception as first:  # noqa: BLE001 - the converter raises AssertionError/KeyError/...
        try:
            gbnf = json_schema_to_gbnf(json.dumps(_inline_refs(schema)))
        except Exception as second:  # noqa: BLE001
            raise ValueError(
                f"cannot compile this JSON schema into a llama.cpp grammar ({first!r}; after inlining "
                f"refs: {second!r}). Simplify the schema (plain objects, lists, Literal/enums, unions)."
            ) from second
    grammar = LlamaGrammar.from_string(gbnf, verbose=verbose)
    if len(_GRAMMAR_CACHE) > 256:
        _GRAMMAR_CACHE.clear()
    _GRAMMAR_CACHE[key] = grammar
    return grammar


def _compact_schema(schema: dict) -> str:
    """A short rendering of a schema for the prompt: refs inlined, titles/defaults dropped."""
    try:
        simple = _inline_refs(schema, max_depth=4)
    except ValueError:
        simple = schema
    return json.dumps(simple, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Schemas and parsers shared by with_structured_output implementations
# ---------------------------------------------------------------------------------------------


def _is_pydantic_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def resolve_output_schema(schema: Any) -> tuple[str, str, dict]:
    """(name, description, JSON schema) of a pydantic class, JSON-schema dict, OpenAI tool/function
    dict, TypedDict, function or BaseTool."""
    if _is_pydantic_class(schema):
        doc = (schema.__doc__ or "").strip()
        if doc.startswith("Usage docs:") or doc.startswith("!!! abstract"):  # BaseModel's own docstring
            doc = ""
        return schema.__name__, doc, schema.model_json_schema()
    if isinstance(schema, dict):
        if schema.get("type") == "function" and isinstance(schema.get("function"), dict):
            fn = schema["function"]
            return fn["name"], fn.get("description", ""), fn.get("parameters", {"type": "object"})
        if "name" in schema and "parameters" in schema:
            return schema["name"], schema.get("description", ""), schema["parameters"]
        if schema.get("type") == "json_schema" and isinstance(schema.get("json_schema"), dict):
            js = schema["json_schema"]
            return js.get("name", "output"), js.get("description", ""), js["schema"]
        name = str(schema.get("title") or "output")
        return name, str(schema.get("description", "")), schema
    fn = convert_to_openai_tool(schema)["function"]
    return fn["name"], fn.get("description", ""), fn.get("parameters", {"type": "object"})


def _message_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
    return "".join(parts)


def _parse_json_content(message: BaseMessage) -> Any:
    text = _message_text(message).strip()
    if not text:
        raise OutputParserException("the model returned an empty reply instead of JSON", llm_output=text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        finish = (getattr(message, "response_metadata", None) or {}).get("finish_reason")
        hint = " (the reply was cut off at max_tokens)" if finish == "length" else ""
        raise OutputParserException(f"the reply is not valid JSON{hint}: {e}", llm_output=text) from e


def _json_content_parser(schema: Any) -> Runnable:
    """AIMessage whose content is JSON -> pydantic instance (for pydantic schemas) or dict."""

    def parse(message: BaseMessage) -> Any:
        data = _parse_json_content(message)
        if _is_pydantic_class(schema):
            try:
                return schema.model_validate(data)
            except ValidationError as e:
                raise OutputParserException(
                    f"the JSON does not match {schema.__name__}: {e}", llm_output=_message_text(message)
                ) from e
        return data

    return RunnableLambda(parse, name="JsonContentParser")


def structured_output_runnable(
    llm: Runnable, parser: Runnable, include_raw: bool
) -> Runnable[LanguageModelInput, Any]:
    """Standard LangChain `include_raw` wiring: `{"raw", "parsed", "parsing_error"}` or just parsed."""
    if include_raw:
        parser_assign = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        parser_none = RunnablePassthrough.assign(parsed=lambda _: None)
        with_fallback = parser_assign.with_fallbacks([parser_none], exception_key="parsing_error")
        return RunnableMap(raw=llm) | with_fallback
    return llm | parser


def json_schema_structured_output(
    model: BaseChatModel, schema: Any, *, include_raw: bool, method: str
) -> Runnable[LanguageModelInput, Any]:
    """`with_structured_output` via a bound `response_format` whose JSON reply is parsed from content.

    Used by ChatLlamaCpp and by the tests' scripted model."""
    name, description, json_schema = resolve_output_schema(schema)
    # "json_mode" also gets the schema: a grammar for the exact schema is strictly better than one
    # for any JSON, and the schema is known here.
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": name, "description": description, "schema": json_schema},
    }
    llm = model.bind(
        response_format=response_format,
        ls_structured_output_format={"kwargs": {"method": method}, "schema": json_schema},
    )
    return structured_output_runnable(llm, _json_content_parser(schema), include_raw)


def tool_call_structured_output(
    model: BaseChatModel, schema: Any, *, include_raw: bool
) -> Runnable[LanguageModelInput, Any]:
    """`with_structured_output` via a forced tool call (method="function_calling")."""
    name, _, json_schema = resolve_output_schema(schema)
    llm = model.bind_tools(  # type: ignore[call-arg]
        [schema],
        tool_choice=name,
        ls_structured_output_format={"kwargs": {"method": "function_calling"}, "schema": json_schema},
    )
    if _is_pydantic_class(schema):
        parser: Runnable = PydanticToolsParser(tools=[schema], first_tool_only=True)
    else:
        parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)

    def require(parsed: Any) -> Any:
        if parsed is None:
            raise OutputParserException(f"the model did not call the {name!r} tool")
        return parsed

    return structured_output_runnable(llm, parser | RunnableLambda(require), include_raw)


def format_tool(tool: Any) -> dict:
    """OpenAI tool dict for a @tool, function, pydantic class or dict (pydantic keeps its own schema)."""
    if _is_pydantic_class(tool):
        name, description, params = resolve_output_schema(tool)
        return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}
    if isinstance(tool, dict) and tool.get("type") == "function":
        return tool
    return convert_to_openai_tool(tool)


def normalize_tool_choice(tool_choice: Any, tools: list[dict]) -> str | dict | None:
    """LangChain tool_choice forms -> None | "auto" | "none" | "any" | {"type": "function", ...}."""
    names = [t["function"]["name"] for t in tools]
    if tool_choice is None or tool_choice is False:
        return None
    if tool_choice is True:
        tool_choice = "any"
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
        if name not in names:
            raise ValueError(f"tool_choice names {name!r}, which is not among the bound tools {names}")
        return {"type": "function", "function": {"name": name}}
    if isinstance(tool_choice, str):
        if tool_choice in ("auto", "none"):
            return tool_choice
        if tool_choice in ("any", "required"):
            if len(names) == 1:
                return {"type": "function", "function": {"name": names[0]}}
            return "any"
        if tool_choice in names:
            return {"type": "function", "function": {"name": tool_choice}}
        raise ValueError(f"tool_choice {tool_choice!r} is not a bound tool ({names}) nor auto/none/any/required")
    raise ValueError(f"unsupported tool_choice {tool_choice!r}")


def _tokens(llama: Any, formatted: Any) -> list[int]:
    """The tokens of a formatted chat prompt, as llama-cpp-python's chat handlers tokenize it."""
    return llama.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)


# ---------------------------------------------------------------------------------------------
# The chat model
# ---------------------------------------------------------------------------------------------


class ToolBinding:
    """`bind_tools` for chat models that take OpenAI-format tools and a normalised tool_choice (this file's
    ChatLlamaCpp, the scripted model)."""

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [format_tool(t) for t in tools]
        choice = normalize_tool_choice(tool_choice, formatted)
        return self.bind(tools=formatted, tool_choice=choice, **kwargs)


class ChatLlamaCpp(ToolBinding, BaseChatModel):
    """A GGUF chat model run in-process by llama.cpp.

    * plain calls: the model's own chat template (from the GGUF), greedy at temperature 0;
    * `bind_tools(tools, tool_choice=<name> | "any" | "required")`: the reply is constrained to the
      tool's argument schema and returned as an AIMessage with `tool_calls`; with "auto"/None the
      model answers in free text (small models never choose to call tools on their own);
    * `with_structured_output(schema, include_raw=..., method=...)`: grammar-constrained JSON,
      validated into the pydantic class (or returned as a dict for JSON-schema dicts).
    """

    model_path: str
    n_ctx: int = DEFAULT_N_CTX
    n_threads: int | None = None
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int = 0
    verbose: bool = False
    schema_hint: bool = Field(
        default=True,
        description="When output is constrained to a schema, also show the (compact) schema in the "
        "system prompt so the model knows what the fields mean. The grammar alone only fixes the syntax.",
    )

    # -- LangChain plumbing -------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "llamacpp-inprocess"

    @property
    def model_name(self) -> str:
        return Path(self.model_path).name

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_path": self.model_path,
            "n_ctx": self.n_ctx,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }

    def _threads(self) -> int:
        return self.n_threads or default_threads()

    def _llama(self) -> tuple[Any, threading.Lock]:
        return load_llama(self.model_path, self.n_ctx, self._threads(), seed=self.seed, verbose=self.verbose)

    def _key(self) -> tuple[str, int, int]:
        return (str(Path(self.model_path).expanduser().resolve()), int(self.n_ctx), int(self._threads()))

    def _prefix_states(self) -> PrefixStates:
        return _PREFIXES[self._key()]

    @staticmethod
    def _formatter(llama: Any) -> Any:
        """The GGUF's own chat template as a prompt formatter (what create_chat_completion would use)."""
        formatter = getattr(llama, "_cielr_formatter", None)
        if formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = str(llama.metadata.get("tokenizer.chat_template", "")) or _CHATML
            eos, bos = llama.token_eos(), llama.token_bos()
            text = llama._model.token_get_text
            formatter = Jinja2ChatFormatter(template=template, eos_token=text(eos) if eos != -1 else "",
                                            bos_token=text(bos) if bos != -1 else "", stop_token_ids=[eos])
            llama._cielr_formatter = formatter
        return formatter

    @staticmethod
    def _system_prefix(llama: Any, formatter: Any, chat: list[dict[str, str]]) -> int:
        """How many leading prompt tokens depend only on the system message: the prefix every call with the
        same system prompt shares (measured by formatting it with two different user turns)."""
        if not chat or chat[0]["role"] != "system":
            return 0
        cache = llama.__dict__.setdefault("_cielr_prefix_lengths", {})
        system = chat[0]["content"]
        if system not in cache:
            a, b = (_tokens(llama, formatter(messages=[chat[0], {"role": "user", "content": u}])) for u in "AB")
            if len(cache) > 64:
                cache.clear()
            cache[system] = common_prefix(a, b)
        return cache[system]

    def warm_prefix(self, system: str) -> str:
        """Evaluate (or restore) the KV state of a system prompt now, e.g. at setup, so that the first call of
        a new process does not pay for it; returns where the state came from (see PrefixStates.restore)."""
        llama, run_lock = self._llama()
        formatter = self._formatter(llama)
        chat = [{"role": "system", "content": system}, {"role": "user", "content": "A"}]
        tokens = _tokens(llama, formatter(messages=chat))
        with run_lock:
            return self._prefix_states().restore(tokens[: self._system_prefix(llama, formatter, chat)])

    def preload(self) -> float:
        """Load the weights now (they are otherwise loaded on the first call); returns load seconds."""
        self._llama()
        return LOAD_SECONDS.get(self._key(), 0.0)

    # -- tools & structured output ------------------------------------------------------------

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: str = NATIVE_STRUCTURED_METHOD,
        strict: bool | None = None,  # noqa: ARG002 - the grammar is always strict
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        if kwargs:
            raise ValueError(f"unexpected arguments {sorted(kwargs)}")
        if method in ("json_schema", "grammar", "json_mode"):
            return json_schema_structured_output(self, schema, include_raw=include_raw, method=method)
        if method == "function_calling":
            return tool_call_structured_output(self, schema, include_raw=include_raw)
        raise ValueError(f"unknown method {method!r}; use json_schema, json_mode or function_calling")

    # -- generation ---------------------------------------------------------------------------

    def _chat_messages(self, messages: list[BaseMessage], tool_role: bool) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for m in messages:
            text = _message_text(m)
            if isinstance(m, SystemMessage):
                out.append({"role": "system", "content": text})
            elif isinstance(m, HumanMessage):
                out.append({"role": "user", "content": text})
            elif isinstance(m, AIMessage):
                calls = [json.dumps({"name": c["name"], "arguments": c["args"]}, ensure_ascii=False)
                         for c in m.tool_calls]
                out.append({"role": "assistant", "content": "\n".join([text, *calls]).strip()})
            elif isinstance(m, ToolMessage):
                if tool_role:
                    out.append({"role": "tool", "content": text})
                else:
                    name = m.name or "tool"
                    out.append({"role": "user", "content": f"Result of {name} (call {m.tool_call_id}):\n{text}"})
            elif isinstance(m, ChatMessage):
                out.append({"role": m.role, "content": text})
            else:
                out.append({"role": "user", "content": text})
        return out

    @staticmethod
    def _add_system(chat: list[dict[str, str]], hint: str) -> list[dict[str, str]]:
        if chat and chat[0]["role"] == "system":
            return [{"role": "system", "content": f"{chat[0]['content']}\n\n{hint}"}, *chat[1:]]
        return [{"role": "system", "content": hint}, *chat]

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools: list[dict] = kwargs.pop("tools", None) or []
        tool_choice = kwargs.pop("tool_choice", None)
        response_format: dict | None = kwargs.pop("response_format", None)
        kwargs.pop("ls_structured_output_format", None)
        if tools:
            tool_choice = normalize_tool_choice(tool_choice, tools)

        t_load = time.perf_counter()
        llama, run_lock = self._llama()
        load_s = time.perf_counter() - t_load
        template = str(llama.metadata.get("tokenizer.chat_template", ""))
        chat = self._chat_messages(messages, tool_role="'tool'" in template or '"tool"' in template)

        # What the output is constrained to.
        schema: dict | None = None
        hint: str | None = None
        forced: dict | None = None  # the single forced tool
        multi_tool = False
        if tools and isinstance(tool_choice, dict):
            name = tool_choice["function"]["name"]
            forced = next(t for t in tools if t["function"]["name"] == name)["function"]
            schema = forced.get("parameters") or {"type": "object", "properties": {}}
            desc = f" ({forced['description']})" if forced.get("description") else ""
            hint = (f"Call the function `{name}`{desc}. Reply with only its arguments as one JSON object"
                    f" matching this JSON schema:\n{_compact_schema(schema)}")
        elif tools and tool_choice == "any":
            multi_tool = True
            schema = {"anyOf": [
                {"type": "object",
                 "properties": {"name": {"const": t["function"]["name"]},
                                "arguments": t["function"].get("parameters") or {"type": "object"}},
                 "required": ["name", "arguments"]}
                for t in tools]}
            listing = "\n".join(
                f"- {t['function']['name']}: {t['function'].get('description', '')} "
                f"arguments schema: {_compact_schema(t['function'].get('parameters') or {})}" for t in tools)
            hint = ('Call exactly one of these functions. Reply with only a JSON object '
                    f'{{"name": <function name>, "arguments": {{...}}}}.\nFunctions:\n{listing}')
        elif response_format:
            if response_format.get("type") == "json_schema":
                schema = response_format["json_schema"]["schema"]
            elif response_format.get("type") == "json_object" and "schema" in response_format:
                schema = response_format["schema"]
            elif response_format.get("type") == "json_object":
                schema = {}
            if schema:
                hint = f"Reply with only a JSON object that matches this JSON schema:\n{_compact_schema(schema)}"
            else:
                hint = "Reply with only a JSON object."

        grammar = None
        if schema is not None:
            if schema:
                grammar = schema_to_grammar(schema, verbose=self.verbose)
            else:
                from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

                grammar = LlamaGrammar.from_string(JSON_GBNF, verbose=self.verbose)
            if hint and self.schema_hint:
                chat = self._add_system(chat, hint)

        params: dict[str, Any] = {
            "temperature": kwargs.pop("temperature", self.temperature),
            "max_tokens": kwargs.pop("max_tokens", self.max_tokens),
            "seed": kwargs.pop("seed", self.seed),
            "stop": stop or [],
            "repeat_penalty": kwargs.pop("repeat_penalty", 1.0),
        }
        if grammar is not None:
            params["grammar"] = grammar
        formatter = self._formatter(llama)
        formatted = formatter(messages=chat)
        tokens = _tokens(llama, formatted)
        if len(tokens) + 1 > self.n_ctx:
            raise ValueError(
                f"the prompt ({len(tokens)} tokens) does not fit n_ctx={self.n_ctx}: shorten it or create the model "
                "with a larger n_ctx (e.g. make_chat_model('embedded', n_ctx=8192))."
            )
        stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
        params["stop"] = [*params["stop"], *stops]
        params["max_tokens"] = min(int(params["max_tokens"]), self.n_ctx - len(tokens))
        t0 = time.perf_counter()
        with run_lock:
            prefix = self._system_prefix(llama, formatter, chat)
            source = self._prefix_states().restore(tokens[:prefix]) if prefix else "none"
            reused = min(common_prefix(llama._input_ids.tolist(), tokens), len(tokens) - 1)
            response = llama.create_completion(prompt=tokens, stopping_criteria=formatted.stopping_criteria, **params)
        seconds = time.perf_counter() - t0

        choice = response["choices"][0]
        text = choice.get("text") or ""
        finish_reason = choice.get("finish_reason")
        usage = response.get("usage") or {}
        n_in = int(usage.get("prompt_tokens", 0))
        n_out = int(usage.get("completion_tokens", 0))
        metadata = {
            "model_name": self.model_name,
            "finish_reason": finish_reason,
            "duration_s": round(seconds, 4),
            "prefix": source,
        }
        if load_s > 0.05:  # the weights were loaded by this call
            metadata["load_s"] = round(load_s, 3)
        usage_md = UsageMetadata(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out,
                                 input_token_details={"cache_read": reused})

        if forced is not None or multi_tool:
            message = self._tool_call_message(text, forced, metadata, usage_md)
        else:
            message = AIMessage(content=text, response_metadata=metadata, usage_metadata=usage_md)
        return ChatResult(generations=[ChatGeneration(message=message)],
                          llm_output={"model_name": self.model_name})

    @staticmethod
    def _tool_call_message(text: str, forced: dict | None, metadata: dict, usage_md: UsageMetadata) -> AIMessage:
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        name = forced["name"] if forced else None
        try:
            data = json.loads(text)
            if forced is None:
                name, args = data["name"], data["arguments"]
            else:
                args = data
            if not isinstance(args, dict):
                raise ValueError("arguments are not a JSON object")
        except (ValueError, KeyError, TypeError) as e:
            cut = " (cut off at max_tokens)" if metadata.get("finish_reason") == "length" else ""
            return AIMessage(
                content="",
                invalid_tool_calls=[{"type": "invalid_tool_call", "id": call_id, "name": name, "args": text,
                                     "error": f"arguments are not valid JSON{cut}: {e}"}],
                response_metadata=metadata,
                usage_metadata=usage_md,
            )
        return AIMessage(
            content="",
            tool_calls=[{"type": "tool_call", "id": call_id, "name": name, "args": args}],
            response_metadata={**metadata, "finish_reason": "tool_calls"},
            usage_metadata=usage_md,
        )

