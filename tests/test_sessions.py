"""Sessions: versions, undo/redo/checkout, durability across processes, small checkpoints (scripted LLM, fake
backends; the real stack runs in test_embedded_pipeline)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cielr_agent.actions import EditDecision, PlannedStep
from cielr_agent.errors import EditError
from cielr_agent.imaging import load_image
from cielr_agent.sessions import Session, resolve_folder
from cielr_agent.tools import register_backend
from fakes import BoxSegmenter, FakeDetector, MeanFillRemover, dog_scene_detections
from cielr_agent.llm.scripted import ScriptedChatModel

DOG = Path(__file__).resolve().parents[1] / "examples" / "dog.jpg"
FAKE = {"detector": "fake", "segmenter": "fake", "remover": "fake"}


@pytest.fixture(autouse=True)
def fakes():
    register_backend("detector", "fake", lambda ctx: FakeDetector(dog_scene_detections()))
    register_backend("segmenter", "fake", lambda ctx: BoxSegmenter())
    register_backend("remover", "fake", lambda ctx: MeanFillRemover())


def step(action, oid, **kw):
    return EditDecision(reason=f"{action} #{oid}", steps=[PlannedStep(action=action, object_id=oid, **kw)])


def test_three_turns_undo_redo_checkout_and_what_the_planner_reads(tmp_path):
    folder = tmp_path / "porch"
    before = DOG.read_bytes()
    model = ScriptedChatModel([step("remove", 1), step("recolor", 3, color="blue")])
    with Session.create(folder, DOG) as s:
        assert s.head.number == 0 and load_image(s.head_image).shape == load_image(DOG).shape
        first = s.edit("remove the bicycle", llm=model, **FAKE)
        assert first.status == "verified" and s.head.number == 1 and s.head.done[0].startswith("remove #1 bicycle")
        s.edit("now paint the truck blue", llm=model, **FAKE)
        assert s.head.number == 2 and s.head.parent == 1
        # the second turn planned on version 1's image and SSR (no new perception), told what turn 1 did
        second_prompt = model.calls[1]
        text = "\n".join(str(m.content) for m in second_prompt)
        assert 'earlier edit 1: "remove the bicycle" -> remove #1 bicycle' in text
        assert "#1 bicycle" not in text.split("Objects:")[1].split("Instruction")[0]  # removed in turn 1
        v1, v2 = load_image(s.image_of(1)), load_image(s.image_of(2))
        assert not np.array_equal(v1, v2)
        assert s.undo().number == 1 and np.array_equal(load_image(s.head_image), v1)
        assert s.redo().number == 2
        assert s.checkout(0).number == 0
        with pytest.raises(EditError, match="nothing to undo"):
            s.undo()
        with pytest.raises(EditError, match="no version 7"):
            s.checkout(7)
        assert [h["head"] for h in s.history()] == [True, False, False]
    assert DOG.read_bytes() == before  # the input is never written
    # images are stored once, by content
    assert len(list((folder / "images").glob("*.png"))) == 3


def test_an_edit_after_undo_branches_and_clears_redo(tmp_path):
    model = ScriptedChatModel([step("remove", 1), step("remove", 2)])
    with Session.create(tmp_path / "s", DOG) as s:
        s.edit("remove the bicycle", llm=model, **FAKE)
        s.undo()
        s.edit("remove the dog", llm=model, **FAKE)
        assert s.head.number == 2 and s.head.parent == 0 and s.state["redo"] == []
        with pytest.raises(EditError, match="nothing to redo"):
            s.redo()


def test_the_session_comes_back_from_its_checkpoint_in_a_new_process(tmp_path):
    folder = tmp_path / "s"
    model = ScriptedChatModel([step("remove", 1), step("recolor", 3, color="blue")])
    with Session.create(folder, DOG) as s:
        s.edit("remove the bicycle", llm=model, **FAKE)
        s.edit("paint the truck blue", llm=model, **FAKE)
        s.undo()
        expected = {v.number: load_image(folder / v.image) for v in s.versions}
    code = ("import sys, json; from cielr_agent.sessions import Session\n"
            "s = Session.open(sys.argv[1]); print(json.dumps([s.head.number, [v.image for v in s.versions]]))")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True)
    import json

    head, images = json.loads(out.stdout)
    assert head == 1
    for number, rel in enumerate(images):
        assert np.array_equal(load_image(folder / rel), expected[number])


def test_checkpoints_hold_no_pixels(tmp_path):
    """Base64 images in LangGraph state filled a peer's SQLite checkpoint with 135 GB: here a version costs
    a few kB of checkpoint, whatever the image size."""
    folder = tmp_path / "s"
    model = ScriptedChatModel([step("recolor", 3, color=c) for c in ("blue", "red", "green", "purple")])
    with Session.create(folder, DOG) as s:
        for color in ("blue", "red", "green", "purple"):
            s.edit(f"paint the truck {color}", llm=model, **FAKE)
        image_bytes = (folder / s.versions[1].image).stat().st_size
    with sqlite3.connect(folder / "session.sqlite") as db:
        sizes = [sum(len(v or b"") for v in row) for row in db.execute("SELECT checkpoint, metadata FROM checkpoints")]
        writes = sum(len(v or b"") for (v,) in db.execute("SELECT value FROM writes"))
    total = sum(sizes) + writes
    assert total / 5 < 24_000, total  # per version, all checkpoints and writes included
    assert max(sizes) < image_bytes / 20


def test_names_and_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("CIELR_SESSIONS", str(tmp_path))
    assert resolve_folder("porch-1") == tmp_path / "porch-1"
    with pytest.raises(EditError, match="invalid session name"):
        resolve_folder("..")
    with pytest.raises(EditError, match="no session"):
        Session.open("missing")
    with pytest.raises(EditError, match="image not found"):
        Session.create("new", tmp_path / "nope.jpg")
    assert not (tmp_path / "new" / "session.sqlite").exists()
    Session.create("dup", DOG).close()
    with pytest.raises(EditError, match="already exists"):
        Session.create("dup", DOG)
