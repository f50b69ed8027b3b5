"""Replace / add through a generator backend and depth-based SSR, with deterministic stand-in backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_core.tools import ToolException

from cielr_agent.config import AgentConfig
from cielr_agent.ssr import SceneObject, in_front
from cielr_agent.tools import Workspace, editing_tools
from cielr_agent.tools.backends import Backends
from cielr_agent.tools.embedded.backends import AttributeDescriber, OklabRecolorer
from cielr_agent.tools.protocols import Detection
from fakes import ExactBoxSegmenter, FakeDetector, MeanFillRemover

PROFILES = Path(__file__).resolve().parents[1] / "examples" / "profiles"


class PaintGenerator:
    """Fills the mask with a flat colour derived from the prompt and records every call."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []

    def inpaint(self, image, mask, prompt, negative_prompt=None):
        self.calls.append((prompt, int(mask.sum())))
        out = image.copy()
        out[mask] = (len(prompt) * 7 % 256, 200, 50)
        out[0, 0] = 255 - out[0, 0]  # a stray change outside the mask: the tool must not let it through
        return out


class RampDepth:
    """Nearness grows towards the bottom of the image (a ground plane seen from above)."""

    def __init__(self):
        self.calls = 0

    def nearness(self, image):
        self.calls += 1
        h, w = image.shape[:2]
        return np.repeat(np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None], w, axis=1)


def scene(generator=None, depth=None):
    image = np.full((120, 200, 3), 128, np.uint8)
    image[60:90, 40:60] = (220, 30, 30)
    dets = [Detection("box", 0.9, (40.0, 60.0, 60.0, 90.0)), Detection("cup", 0.8, (140.0, 20.0, 160.0, 40.0))]
    backends = Backends(detector=FakeDetector(dets), segmenter=ExactBoxSegmenter(), describer=AttributeDescriber(),
                        remover=MeanFillRemover(), recolorer=OklabRecolorer(), generator=generator, depth=depth)
    ws = Workspace(image, config=AgentConfig(generator="paint" if generator else None), backends=backends)
    ws.perceive()
    return ws, {t.name: t for t in editing_tools(ws, handle_errors=False)}


def test_replace_regenerates_only_the_grown_mask_and_relabels():
    gen = PaintGenerator()
    ws, tools = scene(gen)
    before = ws.image.copy()
    note = tools["replace_object"].invoke({"object_id": 1, "prompt": "A green vase"})
    changed = np.any(ws.image != before, axis=2)
    region = np.zeros(changed.shape, bool)
    region[53:97, 33:67] = True  # the box mask grown by mask_dilation (7 px)
    assert changed.any() and not (changed & ~region).any() and not changed[0, 0]
    obj = ws.scene.get(1)
    assert obj.label == "green vase" and obj.source == "generator:paint" and "replaced" in note
    assert len(gen.calls) == 1 and gen.calls[0][0] == "A green vase" and gen.calls[0][1] > 20 * 30


def test_add_in_a_box_or_beside_an_anchor():
    gen = PaintGenerator()
    ws, tools = scene(gen)
    before = ws.image.copy()
    tools["add_object"].invoke({"prompt": "a cat", "box": [100, 60, 130, 90]})
    changed = np.any(ws.image != before, axis=2)
    assert changed[60:90, 100:130].all() and changed.sum() == 30 * 30
    added = ws.scene.get(3)
    assert added.label == "cat" and added.box == (100.0, 60.0, 130.0, 90.0)
    tools["add_object"].invoke({"prompt": "a dog", "anchor_id": 1, "side": "left"})
    dog = ws.scene.get(4)
    assert dog.box[2] <= 40 and dog.box[3] == pytest.approx(90.0)  # left of #1, on the same ground line
    with pytest.raises(ToolException, match="box"):
        tools["add_object"].invoke({"prompt": "a bird"})
    with pytest.raises(ToolException, match="inside the image"):
        tools["add_object"].invoke({"prompt": "a bird", "box": [500, 500, 600, 600]})


def test_depth_backend_sets_nearness_and_front_relations():
    depth = RampDepth()
    ws, tools = scene(depth=depth)
    box, cup = ws.scene.get(1), ws.scene.get(2)
    assert box.nearness > cup.nearness and box.depth_rank == 0
    assert depth.calls == 1  # one depth map per image
    assert "nearness" in ws.scene.render()
    near = SceneObject(id=1, label="a", score=1, box=(0, 0, 10, 10), nearness=0.9)
    far = SceneObject(id=2, label="b", score=1, box=(0, 0, 10, 12), nearness=0.2)
    assert in_front(near, far) and not in_front(far, near)  # depth wins over the ground-plane cue


@pytest.mark.parametrize("profile", sorted(PROFILES.glob("*.toml")), ids=lambda p: p.name)
def test_example_profiles_name_registered_backends(profile):
    from cielr_agent.tools import available_backends

    config = AgentConfig.load(profile)
    for kind in ("detector", "segmenter", "describer", "depth", "remover", "recolorer", "generator"):
        name = getattr(config, kind)
        assert name is None or name in available_backends(kind), (kind, name)
    assert set(config.backend_options) <= {getattr(config, k) for k in ("detector", "segmenter", "describer",
                                                                         "depth", "remover", "generator")}


class DiscSegmenter(ExactBoxSegmenter):
    """Box masks, and a disc of radius 6 around a clicked point."""

    def segment_points(self, image, points, labels, box=None):
        h, w = image.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        (x, y), = points
        return (xx - x) ** 2 + (yy - y) ** 2 <= 36


def test_segment_at_point_adds_an_object_with_its_mask():
    from cielr_agent.tools import perception_tools

    ws, _ = scene()
    tools = {t.name: t for t in perception_tools(ws, handle_errors=False)}
    with pytest.raises(ToolException, match="point prompts"):
        tools["segment_at_point"].invoke({"x": 50, "y": 70, "label": "knob"})
    ws.backends.segmenter = DiscSegmenter()
    note = tools["segment_at_point"].invoke({"x": 50, "y": 70, "label": "knob"})
    knob = ws.scene.get(3)
    assert knob.label == "knob" and knob.box == (44.0, 64.0, 57.0, 77.0) and "#3 knob" in note
    assert ws.mask(3).sum() == knob.mask.area
    with pytest.raises(ToolException, match="outside"):
        tools["segment_at_point"].invoke({"x": 500, "y": 70, "label": "knob"})
