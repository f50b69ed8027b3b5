"""Provider swapping against a real OpenAI-compatible HTTP server: llama-cpp-python's server (`python -m
llama_cpp.server`, extra `[server]`) on localhost, reached through the `openai` client that `--llm openai:...`
builds. That server rejects `response_format` json_schema, so structured calls take the forced-function path."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from cielr_agent.assets import EMBEDDED_PROFILE_ASSETS, asset_path, is_ready

pytest.importorskip("llama_cpp.server.app",
                    reason="llama-cpp-python's server extra is not installed: pip install 'llama-cpp-python[server]'")

ROOT = Path(__file__).resolve().parents[1]
DOG = ROOT / "examples" / "dog.jpg"
pytestmark = pytest.mark.assets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model: Path, alias: str, n_ctx: int, log: Path):
    port = _free_port()
    out = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", alias,
                             "--n_ctx", str(n_ctx), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    import urllib.request

    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {log.read_text(errors='replace')[-1500:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    return proc, f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def smollm_server(tmp_path_factory):
    if not is_ready("smollm2-135m"):
        pytest.skip("SmolLM2 is not set up: run `cielr setup --all`")
    proc, url = _start(asset_path("smollm2-135m"), "smollm2", 2048, tmp_path_factory.mktemp("srv") / "server.log")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


class Pick(BaseModel):
    object_id: int
    reason: str


def test_structured_call_through_the_openai_client(smollm_server):
    from langchain_core.messages import HumanMessage, SystemMessage

    from cielr_agent.llm import make_chat_model, structured_call, structured_method

    model = make_chat_model("openai:smollm2", base_url=smollm_server, max_tokens=64)
    assert structured_method(model) == "function_calling"  # not json_schema: this server rejects it
    reply = structured_call(model, Pick, [SystemMessage("Answer with the tool."),
                                          HumanMessage("Objects: #1 bicycle, #2 dog. Which one has no engine?")])
    assert isinstance(reply.value, Pick) and reply.input_tokens > 0


def test_the_server_rejects_json_schema_response_format(smollm_server):
    """What the structured method choice rests on (llama-cpp-python 0.3.36)."""
    import openai

    client = openai.OpenAI(base_url=smollm_server, api_key="not-needed")
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
                                       response_format={"type": "json_schema", "json_schema": {
                                           "name": "x", "schema": {"type": "object"}}})


@pytest.mark.slow
def test_cielr_edit_with_qwen_behind_an_openai_compatible_server(tmp_path):
    if not all(is_ready(a) for a in EMBEDDED_PROFILE_ASSETS):
        pytest.skip("the embedded models are not set up: run `cielr setup`")
    proc, url = _start(asset_path("qwen2.5-coder-1.5b"), "qwen", 6144, tmp_path / "server.log")
    try:
        out = tmp_path / "out.png"
        env = {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": "not-needed"}
        run = subprocess.run([sys.executable, "-m", "cielr_agent.cli", "edit", str(DOG),
                              "Remove the vehicle in the foreground that has no engine", "-o", str(out), "--json",
                              "--llm", "openai:qwen"], capture_output=True, text=True, env=env, timeout=900)
        assert run.returncode == 0, run.stderr[-2000:]
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert summary["status"] == "verified" and summary["plan"]["actions"][0]["target"]["label"] == "bicycle"
        assert out.is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
