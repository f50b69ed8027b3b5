"""`cielr mcp` for real: the server runs as a subprocess (stdio, and streamable HTTP on localhost) and is driven by the
official SDK client and by langchain-mcp-adapters inside a LangGraph agent. Perception uses the real embedded
models; edits go through sessions here without an LLM (the LLM edit over MCP is in the slow test)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cielr_agent.assets import EMBEDDED_PROFILE_ASSETS, is_ready

mcp = pytest.importorskip("mcp", reason="the server extra is not installed: pip install 'cielr-agent[server]'")
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

DOG = Path(__file__).resolve().parents[1] / "examples" / "dog.jpg"
needs_models = pytest.mark.skipif(not all(is_ready(a) for a in ("centernet", "mobilesam", "efficientnet-lite3")),
                                  reason="embedded models not set up: run `cielr setup`")
qwen = pytest.mark.skipif(not all(is_ready(a) for a in EMBEDDED_PROFILE_ASSETS),
                          reason="the embedded LLM is not set up: run `cielr setup`")


def _server(tmp_path: Path, *extra: str) -> StdioServerParameters:
    env = {**os.environ, "CIELR_SESSIONS": str(tmp_path / "sessions")}
    return StdioServerParameters(command=sys.executable, args=["-m", "cielr_agent.cli", "mcp", "--allow",
                                                               str(tmp_path), "--allow", str(DOG.parent), *extra],
                                 env=env)


async def _with_client(params, body):
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await body(session)


@pytest.mark.assets
@needs_models
def test_stdio_tools_perceive_sessions_and_refuse_paths_outside(tmp_path):
    async def body(client: ClientSession):
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"perceive_image", "edit_image", "session_new", "session_edit", "session_undo", "session_redo",
                "session_checkout", "session_history", "session_export"} <= set(tools)
        assert tools["edit_image"].outputSchema["properties"]["status"]
        scene = await client.call_tool("perceive_image", {"image": str(DOG), "preview": True})
        assert not scene.isError
        data = scene.structuredContent
        assert data["width"] == 768 and {"bicycle", "dog"} <= {o["label"] for o in data["objects"]}
        assert "#1" in data["text"] and any(c.type == "image" and c.mimeType == "image/jpeg" for c in scene.content)
        started = await client.call_tool("session_new", {"session": "porch", "image": str(DOG)})
        assert not started.isError and started.structuredContent["head"] == 0
        undo = await client.call_tool("session_undo", {"session": "porch"})
        assert undo.isError and "nothing to undo" in undo.content[0].text
        outside = await client.call_tool("perceive_image", {"image": "/etc/hostname"})
        assert outside.isError and "outside the folders" in outside.content[0].text
        exported = await client.call_tool("session_export", {"session": "porch", "output": str(tmp_path / "v0.png")})
        assert not exported.isError and (tmp_path / "v0.png").is_file()

    asyncio.run(_with_client(_server(tmp_path), body))


@pytest.mark.assets
@needs_models
def test_the_tools_load_into_a_langgraph_agent_through_langchain_mcp_adapters(tmp_path):
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from cielr_agent.llm.scripted import ScriptedChatModel

    params = _server(tmp_path)
    client = MultiServerMCPClient({"cielr": {"transport": "stdio", "command": params.command, "args": params.args,
                                             "env": params.env}})

    async def run():
        tools = await client.get_tools()
        model = ScriptedChatModel([
            AIMessage("", tool_calls=[{"type": "tool_call", "id": "c1", "name": "perceive_image",
                                       "args": {"image": str(DOG)}}]),
            AIMessage("The photo shows a bicycle, a car and a dog."),
        ])
        agent = create_agent(model, tools)
        return await agent.ainvoke({"messages": [("user", "What is in examples/dog.jpg?")]})

    state = asyncio.run(run())
    tool_message = next(m for m in state["messages"] if m.type == "tool")
    assert "bicycle" in str(tool_message.content) and state["messages"][-1].content.startswith("The photo shows")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.assets
@needs_models
def test_streamable_http_transport(tmp_path):
    from mcp.client.streamable_http import streamable_http_client

    port = _free_port()
    params = _server(tmp_path, "--http", str(port))
    proc = subprocess.Popen([params.command, *params.args], env=params.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)

        async def run():
            async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await session.call_tool("perceive_image", {"image": str(DOG)})

        result = asyncio.run(run())
        assert not result.isError and {"bicycle", "dog"} <= {o["label"] for o in result.structuredContent["objects"]}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
@qwen
def test_an_edit_over_mcp_with_the_embedded_llm(tmp_path):
    out = tmp_path / "out.png"

    async def body(client: ClientSession):
        return await client.call_tool("edit_image", {"image": str(DOG), "output": str(out),
                                                     "instruction": "Remove the vehicle in the foreground that has no engine"})

    result = asyncio.run(_with_client(_server(tmp_path), body))
    assert not result.isError, result.content[0].text
    data = result.structuredContent
    assert data["status"] == "verified" and data["actions"][0]["target"]["label"] == "bicycle"
    assert data["output"] == str(out) and out.is_file()
    assert any(c.type == "image" for c in result.content)
    (tmp_path / "mcp_edit.json").write_text(json.dumps(data, indent=2))
