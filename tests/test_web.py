"""`cielr serve`: the JSON API over sessions (scripted LLM, fake backends) and the page in a real browser
(Debian's chromium driven by Playwright, the real embedded models)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the server extra is not installed: pip install 'cielr-agent[server]'")

from starlette.testclient import TestClient  # noqa: E402

from cielr_agent.actions import EditDecision, PlannedStep  # noqa: E402
from cielr_agent.assets import EMBEDDED_PROFILE_ASSETS, is_ready  # noqa: E402
from cielr_agent.imaging import load_image  # noqa: E402
from cielr_agent.tools import register_backend  # noqa: E402
from cielr_agent.web_server import WebEditor, build_app  # noqa: E402
from fakes import BoxSegmenter, FakeDetector, MeanFillRemover, dog_scene_detections  # noqa: E402
from cielr_agent.llm.scripted import ScriptedChatModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOG = ROOT / "examples" / "dog.jpg"
FAKE = {"detector": "fake", "segmenter": "fake", "remover": "fake"}
ARTIFACTS = ROOT / "test-artifacts" / "web"


@pytest.fixture(autouse=True)
def fakes():
    register_backend("detector", "fake", lambda ctx: FakeDetector(dog_scene_detections()))
    register_backend("segmenter", "fake", lambda ctx: BoxSegmenter())
    register_backend("remover", "fake", lambda ctx: MeanFillRemover())


def _remove(oid: int) -> EditDecision:
    return EditDecision(reason=f"remove #{oid}", steps=[PlannedStep(action="remove", object_id=oid)])


@pytest.fixture
def page(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(DOG, photos / "dog.jpg")
    model = ScriptedChatModel([_remove(1), _remove(1), _remove(1)])
    editor = WebEditor([photos], tmp_path / "sessions", {"llm": model, **FAKE})
    with TestClient(build_app(editor)) as client:
        client.photos = photos
        yield client


def _wait(client, job_id: str, *statuses: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is still {job['status']}: {job['events']}")


def test_edit_with_approval_a_click_that_retargets_and_undo(page):
    images = page.get("/api/images").json()["images"]
    assert [i["name"] for i in images] == ["dog.jpg"]
    session = page.post("/api/sessions", json={"image": images[0]["path"]}).json()
    name = session["session"]
    assert session["head"] == 0 and len(session["versions"]) == 1

    job = page.post(f"/api/sessions/{name}/edit", json={"instruction": "remove the bicycle"})
    assert job.status_code == 202
    job = _wait(page, job.json()["id"], "awaiting_approval")
    approval = job["approval"]
    assert approval["targets"] == [1] and approval["plan"]["actions"][0]["type"] == "remove"
    assert {o["label"] for o in approval["objects"]} == {"bicycle", "dog", "truck"}
    overlay = page.get(f"/api/jobs/{job['id']}/overlay")
    assert overlay.headers["content-type"] == "image/png" and overlay.content[:4] == b"\x89PNG"
    assert page.post(f"/api/sessions/{name}/undo").status_code == 409  # busy while the plan waits

    # the person clicks the truck instead: the plan's one action is aimed at it
    page.post(f"/api/jobs/{job['id']}/decision", json={"answer": {"point": [640, 100]}})
    job = _wait(page, job["id"], "done", "failed")
    assert job["status"] == "done", job["error"]
    assert job["outcome"]["plan"]["actions"][0]["target"]["label"] == "truck"
    history = page.get(f"/api/sessions/{name}").json()
    assert history["head"] == 1 and history["versions"][1]["done"][0].startswith("remove #3 truck")
    assert any("your answer" in e for e in job["events"]) and any("perceive" in e for e in job["events"])

    original, edited = load_image(DOG), load_image(page.photos / "dog.jpg")
    assert (original == edited).all()  # the input is never written
    v1 = page.get(f"/api/sessions/{name}/image/1?download=1")
    assert "attachment" in v1.headers["content-disposition"] and v1.content[:4] == b"\x89PNG"

    assert page.post(f"/api/sessions/{name}/undo").json()["head"] == 0
    assert page.post(f"/api/sessions/{name}/redo").json()["head"] == 1
    assert page.post(f"/api/sessions/{name}/checkout", json={"version": 0}).json()["head"] == 0


def test_a_rejected_plan_makes_no_version(page):
    name = page.post("/api/sessions", json={"image": "dog.jpg"}).json()["session"]
    job = page.post(f"/api/sessions/{name}/edit", json={"instruction": "remove the bicycle"}).json()
    _wait(page, job["id"], "awaiting_approval")
    page.post(f"/api/jobs/{job['id']}/decision", json={"answer": "reject"})
    assert _wait(page, job["id"], "rejected", "done", "failed")["status"] == "rejected"
    assert page.get(f"/api/sessions/{name}").json()["head"] == 0


def test_paths_outside_the_folders_and_bad_requests_get_clear_errors(page, tmp_path):
    outside = tmp_path / "outside.jpg"
    shutil.copy(DOG, outside)
    assert page.get("/api/file", params={"path": "/etc/passwd"}).status_code == 403
    assert page.get("/api/file", params={"path": str(page.photos / ".." / "outside.jpg")}).status_code == 403
    assert page.post("/api/sessions", json={"image": str(outside)}).status_code == 403
    assert page.get("/api/file", params={"path": str(page.photos / "dog.jpg")}).content == DOG.read_bytes()

    bad = page.post("/api/upload", params={"name": "notes.txt"}, content=b"hello")
    assert bad.status_code == 400 and "not an image" in bad.json()["error"]
    broken = page.post("/api/upload", params={"name": "broken.png"}, content=b"not a png")
    assert broken.status_code == 400 and not list((page.photos / "uploads").glob("*"))  # nothing half-written
    up = page.post("/api/upload", params={"name": "../../evil name.jpg"}, content=DOG.read_bytes()).json()
    assert Path(up["path"]).parent == (page.photos / "uploads").resolve() and "evil" in Path(up["path"]).name

    name = page.post("/api/sessions", json={"image": "dog.jpg"}).json()["session"]
    empty = page.post(f"/api/sessions/{name}/edit", json={"instruction": "  "})
    assert empty.status_code == 400 and "instruction is empty" in empty.json()["error"]
    assert page.post(f"/api/sessions/{name}/undo").json().get("error", "").startswith("nothing to undo")
    assert page.get("/api/jobs/nope").status_code == 404
    assert page.post(f"/api/sessions/{name}/edit", content=b"{").status_code == 400
    assert page.get("/api/sessions/..%2F..%2Fetc").status_code in (400, 404)


# ---------------------------------------------------------------------------------------- a real browser

CHROMIUM = Path("/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not all(is_ready(a) for a in EMBEDDED_PROFILE_ASSETS),
                    reason="embedded models not set up: run `cielr setup`")
def test_the_page_in_a_real_browser_edit_with_approval_then_undo(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the webtest extra is not installed: pip install 'cielr-agent[webtest]'")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed: apt-get install chromium")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(DOG, photos / "dog.jpg")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "cielr_agent.cli", "serve", "--folder", str(photos),
                               "--sessions", str(tmp_path / "sessions"), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        assert "http://127.0.0.1" in server.stdout.readline()
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            _open_when_up(tab, f"http://127.0.0.1:{port}/")
            tab.select_option("#image-list", label="dog.jpg")
            tab.click("#open-image")
            tab.wait_for_selector("#edit-panel:not([hidden])")
            tab.fill("#instruction", "Remove the vehicle in the foreground that has no engine")
            tab.click("#plan")
            tab.wait_for_selector("#approval:not([hidden])", timeout=180_000)
            tab.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
            assert "bicycle" in tab.inner_text("#actions")
            assert "perceive" in tab.inner_text("#log")
            tab.screenshot(path=str(ARTIFACTS / "1-plan.png"), full_page=True)
            # a click on the bicycle itself (inside its rear wheel): the point picks the same object
            box = tab.locator("#overlay").bounding_box()
            tab.mouse.click(box["x"] + box["width"] * 490 / 768, box["y"] + box["height"] * 360 / 576)
            assert "bicycle" in tab.inner_text("#correction")
            tab.click("#approve")
            tab.wait_for_function("document.body.dataset.lastJob", timeout=180_000)
            assert tab.evaluate("document.body.dataset.lastJob") == "done", tab.inner_text("#error")
            tab.wait_for_function("document.getElementById('after').complete")
            assert tab.locator("#history li").count() == 2
            assert "remove #" in tab.inner_text("#history") and "bicycle" in tab.inner_text("#history")
            tab.screenshot(path=str(ARTIFACTS / "2-after.png"), full_page=True)
            tab.click("#undo")
            tab.wait_for_selector("#history li.head[data-version='0']")
            assert tab.locator("#history li.redo").count() == 1
            tab.screenshot(path=str(ARTIFACTS / "3-undone.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    edited = sorted((tmp_path / "sessions").glob("*/images/*.png"))
    assert len(edited) == 2  # the original and the one edit, content-addressed
    assert load_image(photos / "dog.jpg").shape == load_image(DOG).shape


def _open_when_up(tab, url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            tab.goto(url)
            tab.wait_for_function("document.getElementById('image-list').options.length > 0")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
