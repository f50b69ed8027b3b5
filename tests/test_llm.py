"""The LLM layer: scripted-model unit tests, real llama.cpp tests (SmolLM2), one Qwen reasoning check."""

from __future__ import annotations

import datetime
import time
from typing import Annotated, Any, Literal, Optional, Union

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from cielr_agent.llm import (
    ChatLlamaCpp,
    LLMOutputError,
    StructuredReply,
    make_chat_model,
    structured_call,
    structured_method,
)
from cielr_agent.llm.llamacpp_chat import _inline_refs
from cielr_agent.llm.scripted import ScriptedChatModel

# --------------------------------------------------------------------------------------------
# Schemas used throughout
# --------------------------------------------------------------------------------------------


class Pick(BaseModel):
    reason: str
    object_id: int


class MoveAction(BaseModel):
    kind: Literal["move"]
    object_id: int
    dx: float = Field(description="horizontal shift in pixels")


class RemoveAction(BaseModel):
    kind: Literal["remove"]
    object_id: int
    note: str | None = None


class Plan(BaseModel):
    mood: Literal["happy", "sad"]
    steps: list[str]
    actions: list[Annotated[Union[MoveAction, RemoveAction], Field(discriminator="kind")]]


class Choice(BaseModel):
    action: Annotated[Union[MoveAction, RemoveAction], Field(discriminator="kind")]


@tool
def move_object(object_id: int, dx: float) -> str:
    """Move an object horizontally by dx pixels."""
    return f"moved {object_id} by {dx}"


# --------------------------------------------------------------------------------------------
# (a) scripted model: structured_call retry semantics
# --------------------------------------------------------------------------------------------


def test_structured_call_first_try():
    model = ScriptedChatModel([{"reason": "no engine", "object_id": 1}])
    reply = structured_call(model, Pick, [HumanMessage("which?")])
    assert isinstance(reply, StructuredReply)
    assert reply.value == Pick(reason="no engine", object_id=1)
    assert reply.attempts == 1
    assert reply.input_tokens > 0 and reply.output_tokens > 0
    assert isinstance(reply.raw, AIMessage)
    assert len(model.calls) == 1 and model.calls[0][0].content == "which?"


def test_structured_call_retries_once_with_the_error():
    model = ScriptedChatModel(["this is not json", Pick(reason="ok", object_id=2)])
    reply = structured_call(model, Pick, [SystemMessage("sys"), HumanMessage("which?")], retries=1)
    assert reply.value.object_id == 2
    assert reply.attempts == 2
    second = model.calls[1]
    assert [m.type for m in second] == ["system", "human", "ai", "human"]
    assert second[2].content == "this is not json"  # the bad output is echoed back
    assert "rejected" in second[3].content and "Pick" in second[3].content


def test_structured_call_validation_error_text_is_fed_back():
    model = ScriptedChatModel([{"reason": "x"}, {"reason": "x", "object_id": 5}])
    reply = structured_call(model, Pick, [HumanMessage("q")])
    assert reply.value.object_id == 5
    follow_up = model.calls[1][-1].content
    assert "object_id" in follow_up and "Field required" in follow_up


def test_structured_call_validate_hook_triggers_retry():
    def only_known_ids(value: Pick) -> None:
        if value.object_id not in (1, 2, 3):
            raise ValueError(f"object_id {value.object_id} does not exist; choose 1, 2 or 3")

    model = ScriptedChatModel([{"reason": "a", "object_id": 9}, {"reason": "b", "object_id": 3}])
    reply = structured_call(model, Pick, [HumanMessage("q")], validate=only_known_ids)
    assert reply.value.object_id == 3 and reply.attempts == 2
    assert "object_id 9 does not exist" in model.calls[1][-1].content


def test_structured_call_raises_after_retries():
    model = ScriptedChatModel(["nope", "still nope", "never"])
    with pytest.raises(LLMOutputError) as info:
        structured_call(model, Pick, [HumanMessage("q")], retries=1)
    err = info.value
    assert err.attempts == 2 and len(err.errors) == 2
    assert err.raw == "still nope"
    assert "Pick" in str(err) and "Try a stronger model" in str(err)
    assert model.remaining == 1  # exactly 1 + retries calls


def test_structured_call_no_retries():
    model = ScriptedChatModel(["bad"])
    with pytest.raises(LLMOutputError):
        structured_call(model, Pick, [HumanMessage("q")], retries=0)
    assert len(model.calls) == 1


def test_structured_call_json_schema_method_on_scripted_model():
    model = ScriptedChatModel([{"reason": "r", "object_id": 1}, "{broken"])
    out = model.with_structured_output(Pick, method="json_schema").invoke("q")
    assert out == Pick(reason="r", object_id=1)
    raw = model.with_structured_output(Pick, include_raw=True, method="json_schema").invoke("q")
    assert raw["parsed"] is None and raw["parsing_error"] is not None and raw["raw"].content == "{broken"


# --------------------------------------------------------------------------------------------
# (a) scripted model: behaviour other tests rely on
# --------------------------------------------------------------------------------------------


def test_scripted_model_plain_tools_and_structured():
    model = ScriptedChatModel(
        ["hello", {"object_id": 4, "dx": 2.5}, {"name": "move_object", "args": {"object_id": 1, "dx": 0}},
         Plan(mood="sad", steps=["a"], actions=[RemoveAction(kind="remove", object_id=3)]),
         {"mood": "angry", "steps": [], "actions": []}]
    )
    assert model.invoke("hi").content == "hello"
    msg = model.bind_tools([move_object], tool_choice="move_object").invoke("move 4")
    assert msg.tool_calls[0]["name"] == "move_object" and msg.tool_calls[0]["args"] == {"object_id": 4, "dx": 2.5}
    msg = model.bind_tools([move_object, Pick], tool_choice="any").invoke("x")
    assert msg.tool_calls[0]["name"] == "move_object"
    plan = model.with_structured_output(Plan).invoke("plan")
    assert isinstance(plan, Plan) and isinstance(plan.actions[0], RemoveAction)
    res = model.with_structured_output(Plan, include_raw=True).invoke("plan")
    assert res["parsed"] is None and res["parsing_error"] is not None
    assert len(model.calls) == 5
    assert model.call_kwargs[1]["tool_choice"]["function"]["name"] == "move_object"
    with pytest.raises(AssertionError, match="ran out of responses"):
        model.invoke("one too many")


def test_scripted_model_raises_scripted_exception():
    model = ScriptedChatModel([RuntimeError("server down")])
    with pytest.raises(RuntimeError, match="server down"):
        model.invoke("x")


# --------------------------------------------------------------------------------------------
# (a) make_chat_model / structured_method
# --------------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_API_KEY", "OLLAMA_HOST"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_make_chat_model_passthrough():
    model = ScriptedChatModel([])
    assert make_chat_model(model) is model


def test_make_chat_model_openai(clean_env):
    from langchain_openai import ChatOpenAI

    m = make_chat_model("openai:gpt-4o-mini", api_key="sk-test")
    assert isinstance(m, ChatOpenAI) and m.model_name == "gpt-4o-mini" and m.temperature == 0
    assert m.openai_api_base is None
    assert structured_method(m) == "json_schema"

    m = make_chat_model("openai:qwen", base_url="http://localhost:8000/v1")
    assert m.openai_api_base == "http://localhost:8000/v1"
    assert m.openai_api_key.get_secret_value() == "not-needed"
    assert structured_method(m) == "function_calling"

    clean_env.setenv("OPENAI_BASE_URL", "http://gpu-box:8080/v1")
    clean_env.setenv("OPENAI_API_KEY", "sk-env")
    m = make_chat_model("openai:served-model")
    assert m.openai_api_base == "http://gpu-box:8080/v1" and m.openai_api_key.get_secret_value() == "sk-env"

    clean_env.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
    assert structured_method(make_chat_model("openai:gpt-4o")) == "json_schema"


def test_make_chat_model_openai_needs_key(clean_env):
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        make_chat_model("openai:gpt-4o-mini")


def test_make_chat_model_ollama(clean_env):
    m = make_chat_model("ollama:qwen2.5-coder:1.5b")
    assert m.model_name == "qwen2.5-coder:1.5b"
    assert m.openai_api_base == "http://localhost:11434/v1"
    assert m.openai_api_key.get_secret_value() == "ollama"
    assert structured_method(m) == "function_calling"
    clean_env.setenv("OLLAMA_HOST", "gpu-box:11434")
    assert make_chat_model("ollama:llama3").openai_api_base == "http://gpu-box:11434/v1"


def test_make_chat_model_llamacpp_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        make_chat_model(f"llamacpp:{tmp_path / 'missing.gguf'}")
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    m = make_chat_model(f"llamacpp:{fake}", n_ctx=1024)  # weights load lazily: no llama.cpp call here
    assert isinstance(m, ChatLlamaCpp) and m.model_path == str(fake) and m.n_ctx == 1024
    assert m._llm_type == "llamacpp-inprocess"
    assert structured_method(m) == "json_schema"


def test_make_chat_model_embedded_uses_assets(monkeypatch, tmp_path):
    import cielr_agent.assets as assets

    asked = []

    def fake_ensure(name, progress=None):
        asked.append(name)
        return tmp_path / f"{name}.gguf"

    monkeypatch.setattr(assets, "ensure_asset", fake_ensure)
    assert make_chat_model("embedded").model_path.endswith("qwen2.5-coder-1.5b.gguf")
    assert make_chat_model("embedded-tiny", max_tokens=64).max_tokens == 64
    assert asked == ["qwen2.5-coder-1.5b", "smollm2-135m"]


def test_make_chat_model_init_chat_model_and_errors(clean_env):
    clean_env.setenv("OPENAI_API_KEY", "sk-test")
    m = make_chat_model("gpt-4o-mini")  # init_chat_model infers openai
    assert m.model_name == "gpt-4o-mini"
    with pytest.raises(ValueError, match="Accepted forms"):
        make_chat_model("nosuchprovider:model")
    with pytest.raises(ValueError):
        make_chat_model("")
    assert structured_method(ScriptedChatModel([])) == "function_calling"


def test_inline_refs_for_grammar():
    schema = _inline_refs(Plan.model_json_schema())
    text = str(schema)
    assert "$ref" not in text and "$defs" not in text and "discriminator" not in text
    assert schema["properties"]["actions"]["items"]["oneOf"][0]["properties"]["kind"]["const"] == "move"


class TreeNode(BaseModel):
    name: str
    children: list["TreeNode"] = []


class Odd(BaseModel):
    anything: Any
    counts: dict[str, int]
    pair: tuple[int, str]
    tree: TreeNode
    maybe: Optional[Choice] = None
    when: datetime.date


def test_schema_to_grammar_pydantic_corner_cases():
    pytest.importorskip("llama_cpp")
    from cielr_agent.llm import schema_to_grammar

    for cls in (Plan, Choice, Odd, TreeNode):
        assert schema_to_grammar(cls.model_json_schema()) is not None
    with pytest.raises(ValueError, match="llama.cpp grammar"):
        schema_to_grammar({"type": "object", "properties": {"x": {"$ref": "https://example.com/x.json"}}})


# --------------------------------------------------------------------------------------------
# (b) real llama.cpp with SmolLM2-135M
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("llama_cpp")
    from cielr_agent.assets import ensure_asset

    return ChatLlamaCpp(model_path=str(ensure_asset("smollm2-135m")), n_ctx=2048, max_tokens=160)


def _check_usage(msg: AIMessage) -> None:
    usage = msg.usage_metadata
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert msg.response_metadata["model_name"].endswith(".gguf")
    assert msg.response_metadata["duration_s"] > 0
    assert msg.response_metadata["finish_reason"] in ("stop", "length", "tool_calls")


@pytest.mark.assets
def test_tiny_plain_chat(tiny):
    msg = tiny.invoke([SystemMessage("You are terse."), HumanMessage("Name one colour.")], max_tokens=16)
    assert isinstance(msg.content, str) and msg.content.strip()
    _check_usage(msg)


@pytest.mark.assets
def test_tiny_structured_literal_and_list(tiny):
    res = tiny.with_structured_output(Plan, include_raw=True).invoke(
        "Plan: remove object 3, then move object 1 right by 20 pixels. Mood is happy."
    )
    assert res["parsing_error"] is None, res["raw"].content
    plan = res["parsed"]
    assert isinstance(plan, Plan) and plan.mood in ("happy", "sad") and isinstance(plan.steps, list)
    assert all(isinstance(a, (MoveAction, RemoveAction)) for a in plan.actions)
    _check_usage(res["raw"])


@pytest.mark.assets
def test_tiny_discriminated_union(tiny):
    choice = tiny.with_structured_output(Choice).invoke("Remove object 7.")
    assert isinstance(choice, Choice) and isinstance(choice.action, (MoveAction, RemoveAction))
    as_dict = tiny.with_structured_output(Choice.model_json_schema()).invoke("Move object 2 by 5.")
    assert Choice.model_validate(as_dict)  # dict schemas return dicts that fit the schema


@pytest.mark.assets
def test_tiny_forced_tool_call(tiny):
    msg = tiny.bind_tools([move_object], tool_choice="move_object").invoke("Move object 2 right by 10 pixels.")
    assert len(msg.tool_calls) == 1, msg.invalid_tool_calls
    call = msg.tool_calls[0]
    assert call["name"] == "move_object" and call["id"].startswith("call_")
    assert set(call["args"]) == {"object_id", "dx"}
    assert move_object.invoke(call["args"]).startswith("moved")
    _check_usage(msg)
    free = tiny.bind_tools([move_object], tool_choice="auto").invoke("Say hello.", max_tokens=12)
    assert free.tool_calls == [] and isinstance(free.content, str)


@pytest.mark.assets
def test_tiny_structured_call_function_calling_method(tiny):
    reply = structured_call(tiny, Pick, [HumanMessage("Pick object 1 and explain briefly.")])
    assert isinstance(reply.value, Pick) and reply.input_tokens > 0 and reply.output_tokens > 0
    wrapped = tiny.with_structured_output(Pick, method="function_calling").invoke("Pick object 2.")
    assert isinstance(wrapped, Pick)


# --------------------------------------------------------------------------------------------
# (c) the product model must get an easy reasoning question right
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.assets
def test_qwen_picks_object_without_engine():
    pytest.importorskip("llama_cpp")
    model = make_chat_model("embedded", max_tokens=200)
    t0 = time.perf_counter()
    reply = structured_call(
        model,
        Pick,
        [
            SystemMessage("You answer questions about objects in an image. Think briefly in `reason`."),
            HumanMessage("Which object has no engine? objects: 1 bicycle, 2 truck, 3 dog"),
        ],
    )
    seconds = time.perf_counter() - t0
    print(f"\nqwen structured call: {seconds:.1f}s, {reply.input_tokens} in / {reply.output_tokens} out, "
          f"attempts={reply.attempts}, value={reply.value!r}")
    assert reply.value.object_id == 1



SYSTEM = ("You are a careful assistant that names objects in photos. " * 12).strip()  # > MIN_PREFIX_TOKENS


@pytest.mark.assets
def test_tiny_system_prefix_is_reused_and_restored_from_disk(tmp_path):
    pytest.importorskip("llama_cpp")
    from cielr_agent.assets import ensure_asset
    from cielr_agent.llm import llamacpp_chat
    from cielr_agent.llm.prefix_states import PrefixStates

    model = ChatLlamaCpp(model_path=str(ensure_asset("smollm2-135m")), n_ctx=1024, max_tokens=8)
    llama, _ = llamacpp_chat.load_llama(model.model_path, 1024, model._threads())
    states = PrefixStates(llama, model.model_path, tmp_path)  # this test's own folder, in place of the cache's
    monkey = pytest.MonkeyPatch()
    monkey.setitem(llamacpp_chat._PREFIXES, model._key(), states)
    try:
        ask = lambda text: model.invoke([SystemMessage(SYSTEM), HumanMessage(text)])  # noqa: E731
        first = ask("Name a fruit.")
        assert first.response_metadata["prefix"] == "evaluated" and list(tmp_path.glob("*.state"))
        second = ask("Name a colour.")
        cached = second.usage_metadata["input_token_details"]["cache_read"]
        assert second.response_metadata["prefix"] == "live" and 64 <= cached < second.usage_metadata["input_tokens"]
        # another prompt in between, then a fresh store (a new process): the prefix comes back from disk,
        # and greedy decoding gives exactly what a full evaluation gives
        model.invoke([HumanMessage("Say hi.")])
        reference = ask("Name a colour.").content
        model.invoke([HumanMessage("Say hi.")])
        monkey.setitem(llamacpp_chat._PREFIXES, model._key(),
                       PrefixStates(llama, model.model_path, tmp_path))
        restored = ask("Name a colour.")
        assert restored.response_metadata["prefix"] == "disk" and restored.content == reference
        # a damaged state file is never loaded: the prefix is evaluated again and the file rewritten
        state = next(tmp_path.glob("*.state"))
        state.write_bytes(b"garbage")
        model.invoke([HumanMessage("Say hi.")])
        monkey.setitem(llamacpp_chat._PREFIXES, model._key(),
                       PrefixStates(llama, model.model_path, tmp_path))
        assert ask("Name a colour.").response_metadata["prefix"] == "evaluated" and state.stat().st_size > 1000
    finally:
        monkey.undo()


@pytest.mark.assets
def test_greedy_grammar_sampler_matches_the_full_grammar_chain():
    """The argmax-first grammar sampler picks exactly what grammar-then-greedy picks, including where the grammar
    rejects the model's favourite token (odd enum words force that)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from cielr_agent.assets import ensure_asset
    from cielr_agent.llm import schema_to_grammar
    from cielr_agent.llm.greedy_grammar import GreedyGrammarLlama

    path = str(ensure_asset("smollm2-135m"))
    schema = {"type": "object", "properties": {
        "reason": {"type": "string"}, "pick": {"enum": ["zyxomorph", "quillback", "bicycle"]},
        "ids": {"type": "array", "items": {"type": "integer"}}}, "required": ["reason", "pick", "ids"]}
    grammar = schema_to_grammar(schema)
    prompts = ["Which vehicle has no engine? Answer in JSON.", "List three numbers and a word as JSON."]
    replies = {}
    for cls in (llama_cpp.Llama, GreedyGrammarLlama):
        llama = cls(model_path=path, n_ctx=512, n_threads=2, verbose=False)
        for text in prompts:
            llama.reset()
            out = llama.create_completion(prompt=text, max_tokens=48, temperature=0.0, grammar=grammar)
            replies.setdefault(text, []).append(out["choices"][0]["text"])
        if cls is GreedyGrammarLlama:
            assert llama._sampler.custom_samplers[0][1].full_passes > 0  # the fallback path ran
        llama.close()
    for text, (reference, fast) in replies.items():
        assert fast == reference, text


@pytest.mark.assets
def test_output_printed_while_weights_load_in_the_background_is_not_lost(capfd):
    """llama-cpp-python silences a load by pointing stdout/stderr at /dev/null; a background load must not swallow
    what the command prints meanwhile (progress lines, the error of a bad input)."""
    import sys

    pytest.importorskip("llama_cpp")
    from cielr_agent.llm import llama_weights

    thread = llama_weights.preload("embedded-tiny", {"n_ctx": 320})  # a context size no other test loads
    assert thread is not None
    written = 0
    while thread.is_alive() or written == 0:
        print(f"line {written}", file=sys.stderr, flush=True)
        written += 1
    thread.join()
    err = capfd.readouterr().err
    assert all(f"line {i}\n" in err for i in range(written))
    assert "llama_model_loader" not in err  # llama.cpp's info lines stay quiet
