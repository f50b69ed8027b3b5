"""Property tests (Hypothesis): whatever bytes, profile text or LLM reply comes in, the outcome is a result or one
of the user-facing errors, never another exception. Scripted LLM and fake backends: fast."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the dev extra is not installed (pip install -e '.[dev]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from cielr_agent.cli import user_errors  # noqa: E402
from cielr_agent.config import AgentConfig  # noqa: E402
from cielr_agent.imaging import ImageInputError, load_image  # noqa: E402
from cielr_agent.llm.scripted import ScriptedChatModel  # noqa: E402
from cielr_agent.tools import register_backend  # noqa: E402
from fakes import BoxSegmenter, FakeDetector, MeanFillRemover, dog_scene_detections  # noqa: E402

DOG = Path(__file__).resolve().parents[1] / "examples" / "dog.jpg"
FAKE = {"detector": "fake", "segmenter": "fake", "remover": "fake"}
SMALL = settings(max_examples=60, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


@SMALL
@given(data=st.one_of(st.binary(max_size=4000),
                      st.builds(lambda cut, junk: PNG[:cut] + junk, st.integers(0, len(PNG)), st.binary(max_size=64))))
def test_any_bytes_as_an_image_load_or_raise_image_input_error(tmp_path, data):
    path = tmp_path / "in.png"
    path.write_bytes(data)
    try:
        image = load_image(path)
    except ImageInputError as exc:
        assert str(exc)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert path.read_bytes() == data


@SMALL
@given(text=st.text(max_size=300))
def test_any_profile_text_loads_or_says_what_is_wrong(tmp_path, text):
    path = tmp_path / "profile.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        AgentConfig.load(path)
    except (ValueError, FileNotFoundError) as exc:
        assert str(exc) and "\n" not in str(exc)


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
                       lambda children: st.one_of(st.lists(children, max_size=4),
                                                  st.dictionaries(st.text(max_size=10), children, max_size=4)),
                       max_leaves=12)
REPLY = st.one_of(
    st.text(max_size=200),
    JSONISH.map(lambda v: json.dumps(v, allow_nan=True)),
    st.fixed_dictionaries({"reason": st.text(max_size=40), "steps": st.lists(st.fixed_dictionaries({
        "action": st.sampled_from(["remove", "recolor", "resize", "move", "add", "replace", "flip", "explode"]),
        "object_id": st.one_of(st.integers(-3, 6), st.none()),
        "color": st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["red", "blue"])),
        "scale": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
        "dx": st.one_of(st.none(), st.floats(-1e6, 1e6)), "dy": st.one_of(st.none(), st.integers(-5000, 5000)),
    }), max_size=3)}).map(lambda d: json.dumps(d, allow_nan=True)),
)


@pytest.fixture(scope="module", autouse=True)
def fakes():
    register_backend("detector", "fake", lambda ctx: FakeDetector(dog_scene_detections()))
    register_backend("segmenter", "fake", lambda ctx: BoxSegmenter())
    register_backend("remover", "fake", lambda ctx: MeanFillRemover())


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reply=REPLY)
def test_any_llm_reply_ends_in_an_edit_or_a_user_error(tmp_path, reply):
    import cielr_agent

    out = tmp_path / "out.png"
    out.unlink(missing_ok=True)
    try:
        result = cielr_agent.edit(DOG, "remove the bicycle", out, llm=ScriptedChatModel([reply] * 4), **FAKE)
    except user_errors() as exc:
        assert str(exc) and not out.exists()
    else:
        assert (result.output is not None) == out.exists()
