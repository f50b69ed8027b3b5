"""The LangGraph Agent Server for real: `langgraph dev` (in-memory runtime) on localhost serves `cielr_edit` from
langgraph.json, driven by langgraph_sdk: threads, streamed progress, the approval interrupt, resume."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cielr_agent.assets import EMBEDDED_PROFILE_ASSETS, is_ready

pytest.importorskip("langgraph_api", reason="the server extra is not installed: pip install 'cielr-agent[server]'")
from langgraph_sdk import get_client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOG = ROOT / "examples" / "dog.jpg"
INSTRUCTION = "Remove the vehicle in the foreground that has no engine"

pytestmark = [pytest.mark.slow, pytest.mark.assets,
              pytest.mark.skipif(not all(is_ready(a) for a in EMBEDDED_PROFILE_ASSETS),
                                 reason="the embedded models are not set up: run `cielr setup`")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cli = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or "langgraph"
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "langgraph-dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([cli, "dev", "--no-browser", "--no-reload", "--port", str(port), "--config",
                                 str(ROOT / "langgraph.json")], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "LANGSMITH_TRACING": "false",
                                     "CIELR_ALLOW": os.pathsep.join([str(ROOT), str(tmp_path_factory.getbasetemp())])})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"langgraph dev exited: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _stream(client, thread_id, **kwargs):
    events = []
    async for part in client.runs.stream(thread_id, "cielr_edit", stream_mode=["custom", "values"], **kwargs):
        events.append((part.event, part.data))
    return events


def test_interrupted_then_approved_run_and_a_rejected_one(server, tmp_path):
    out, rejected_out = tmp_path / "out.png", tmp_path / "rejected.png"

    async def run():
        client = get_client(url=server)
        thread = await client.threads.create()
        first = await _stream(client, thread["thread_id"], input={
            "image": str(DOG), "instruction": INSTRUCTION, "output": str(out), "confirm": True})
        state = await client.threads.get_state(thread["thread_id"])
        state["written_before_approval"] = out.exists()
        resumed = await _stream(client, thread["thread_id"], command={"resume": "approve"})
        final = await client.threads.get_state(thread["thread_id"])

        other = await client.threads.create()
        await _stream(client, other["thread_id"], input={
            "image": str(DOG), "instruction": INSTRUCTION, "output": str(rejected_out), "confirm": True})
        await _stream(client, other["thread_id"], command={"resume": False})
        rejected = await client.threads.get_state(other["thread_id"])
        return first, state, resumed, final, rejected

    first, state, resumed, final, rejected = asyncio.run(run())
    progress = [data["message"] for event, data in first if event == "custom"]
    assert any("scene:" in m for m in progress) and any("plan:" in m for m in progress)
    interrupt = state["tasks"][0]["interrupts"][0]["value"]
    assert state["next"] == ["approve"] and not state["written_before_approval"]
    target = interrupt["plan"]["actions"][0]["target"]
    assert "#%d bicycle" % target in interrupt["scene"] and Path(interrupt["overlay"]).is_file()
    assert final["values"]["status"] == "verified" and final["values"]["output"] == str(out) and out.is_file()
    assert any(event == "custom" and "remove_object" in data["message"] for event, data in resumed)
    assert rejected["values"]["status"] == "rejected" and not rejected_out.exists()
    (tmp_path / "approved-run.json").write_text(json.dumps({"interrupt": interrupt, "final": final["values"]},
                                                           indent=2, default=str))


def test_a_run_without_confirm_goes_straight_through(server, tmp_path):
    out = tmp_path / "out.png"

    async def run():
        client = get_client(url=server)
        thread = await client.threads.create()
        await _stream(client, thread["thread_id"], input={"image": str(DOG), "instruction": INSTRUCTION,
                                                          "output": str(out)})
        return await client.threads.get_state(thread["thread_id"])

    state = asyncio.run(run())
    assert state["values"]["status"] == "verified" and out.is_file()
    assert state["values"]["result"]["plan"]["actions"][0]["target"]["label"] == "bicycle"


def test_paths_outside_the_allowed_folders_are_refused(server, tmp_path):
    """$CIELR_ALLOW bounds what a client can make the server read or write."""
    async def run(payload):
        client = get_client(url=server)
        thread = await client.threads.create()
        return await _stream(client, thread["thread_id"], input=payload)

    for payload in ({"image": "/etc/hostname", "instruction": INSTRUCTION, "output": str(tmp_path / "o.png")},
                    {"image": str(DOG), "instruction": INSTRUCTION, "output": "/etc/cielr-evil.png"},
                    {"image": str(DOG), "instruction": INSTRUCTION, "output": str(tmp_path / "../../../etc/x.png")}):
        events = asyncio.run(run(payload))
        errors = [data for event, data in events if event == "error"]
        assert errors and "outside the folders this server may use" in json.dumps(errors), events
    assert not Path("/etc/cielr-evil.png").exists() and not (tmp_path / "o.png").exists()


def test_sessions_over_the_server(server, tmp_path):
    """`cielr_session`: new, edit, undo on one session folder; the session keeps its own history."""
    folder = str(tmp_path / "porch")

    async def run():
        client = get_client(url=server)
        states = []
        for request in ({"op": "new", "image": str(DOG)}, {"op": "edit", "instruction": "Paint the dog blue"},
                        {"op": "undo"}):
            thread = await client.threads.create()
            async for _ in client.runs.stream(thread["thread_id"], "cielr_session",
                                              input={"session": folder, **request}, stream_mode="values"):
                pass
            states.append((await client.threads.get_state(thread["thread_id"]))["values"])
        return states

    new, edited, undone = asyncio.run(run())
    assert new["head"] == 0 and Path(new["head_image"]).is_file()
    assert edited["head"] == 1 and edited["edit"]["plan"]["actions"][0]["target"]["label"] == "dog"
    assert undone["head"] == 0 and undone["head_image"] == new["head_image"] and undone["versions"][1]["redo"]
