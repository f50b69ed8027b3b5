"""MobileSAM: the ONNX graphs built without torch (checkpoint reader, decoder against segment-anything's own
code), box/point prompts and regions on real photos, and the
mask-based pieces that depend on it (occlusion, see-through pockets kept by a removal)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cielr_agent.assets import asset_dir, is_ready
from cielr_agent.imaging import load_image
from cielr_agent.masks import see_through
from cielr_agent.ssr import RLEMask, SceneObject, in_front

ROOT = Path(__file__).resolve().parents[1]
DOG = ROOT / "examples" / "dog.jpg"
BICYCLE_BOX = (115.9, 134.6, 562.5, 475.2)  # CenterNet's box on dog.jpg
DOG_BOX = (126.1, 211.2, 310.1, 537.1)
SADDLE, FRONT_WHEEL = (slice(135, 150), slice(390, 460)), (slice(260, 330), slice(130, 160))
needs_sam = pytest.mark.skipif(not is_ready("mobilesam"), reason="MobileSAM not set up: run `cielr setup`")


def test_see_through_keeps_the_wall_between_spokes_only():
    """A wheel (rim + spokes) on a striped wall: the wall inside the wheel is kept, rim and spokes are not."""
    h, w = 200, 200
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (200, 190, 60)
    img[::10] = (170, 160, 50)  # board lines
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - 100, xx - 100)
    rim = (r > 70) & (r < 80)
    spokes = np.zeros_like(rim)
    for a in np.linspace(0, np.pi, 6, endpoint=False):
        spokes |= (np.abs((xx - 100) * np.sin(a) - (yy - 100) * np.cos(a)) < 1.2) & (r <= 70)
    img[rim] = (20, 20, 20)
    img[spokes] = (120, 120, 130)
    wheel = r < 80  # what SAM gives for a wheel: the filled disc
    keep = see_through(img, wheel)
    assert not (keep & (rim | spokes)).any()
    wall_inside = (r < 60) & ~spokes
    assert keep[wall_inside].mean() > 0.5


def test_see_through_is_empty_for_an_object_coloured_like_its_surroundings():
    img = np.full((100, 100, 3), 128, np.uint8)
    obj = np.zeros((100, 100), bool)
    obj[30:70, 30:70] = True
    assert not see_through(img, obj).any()


def _obj(oid, box, mask):
    return SceneObject(id=oid, label=f"o{oid}", score=0.9, box=box, mask=RLEMask.from_array(mask))


def test_occlusion_from_masks_beats_the_ground_line():
    """A ball lying behind a post: its box ends lower, but the post's pixels are the ones seen where they meet."""
    m_post, m_ball = np.zeros((100, 100), bool), np.zeros((100, 100), bool)
    m_post[10:80, 40:60] = True
    m_ball[50:90, 20:80] = True
    m_ball[50:80, 40:60] = False  # hidden behind the post
    post, ball = _obj(1, (36, 10, 64, 80), m_post), _obj(2, (20, 50, 80, 90), m_ball)
    assert in_front(post, ball) and not in_front(ball, post)


@pytest.fixture(scope="module")
def dog_image():
    return load_image(DOG)


class _RunsACommand:
    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_checkpoint_reader_refuses_anything_but_tensors(tmp_path):
    """The torch-free reader unpickles only a state dict of tensors: a pickle that calls a function is refused."""
    import pickle
    import zipfile

    from cielr_agent.tools.embedded.mobilesam_onnx import read_checkpoint

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"x": _RunsACommand()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        read_checkpoint(evil)


@pytest.mark.assets
@needs_sam
def test_checkpoint_reader_gives_the_official_tensors():
    from cielr_agent.tools.embedded.mobilesam_onnx import read_checkpoint

    weights = read_checkpoint(asset_dir("mobilesam") / "mobile_sam.pt")
    assert not any(k.startswith("image_encoder.head.") for k in weights)  # the unused ImageNet head is left out
    assert weights["image_encoder.patch_embed.seq.0.c.weight"].shape == (32, 3, 3, 3)
    assert weights["mask_decoder.mask_tokens.weight"].shape == (4, 256)
    assert weights["image_encoder.layers.2.blocks.0.attn.attention_biases"].shape == (5, 196)
    assert all(v.dtype in (np.float32, np.int64) and np.isfinite(v).all() for v in weights.values())
    assert sum(v.size for v in weights.values() if v.dtype == np.float32) > 9_000_000  # ~10M parameters


@pytest.mark.assets
@needs_sam
def test_onnx_build_needs_no_torch_and_is_deterministic(tmp_path):
    """`cielr setup` builds the graphs with torch unimportable; the result is byte-identical to the set-up files."""
    import subprocess
    import sys

    folder = asset_dir("mobilesam")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from cielr_agent.tools.embedded.mobilesam_onnx import build_onnx\n"
            f"build_onnx({str(folder / 'mobile_sam.pt')!r}, {str(tmp_path)!r})")
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in ("mobilesam_encoder.onnx", "mobilesam_decoder.onnx"):
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes()


@pytest.mark.assets
@needs_sam
def test_decoder_graph_matches_segment_anythings_own_code():
    """The prompt encoder + mask decoder graph against segment-anything's modules with the same weights."""
    torch = pytest.importorskip("torch", reason="the full extra is not installed (pip install -e '.[full]')")
    pytest.importorskip("segment_anything", reason="the full extra is not installed (pip install -e '.[full]')")
    import onnxruntime as ort
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    from cielr_agent.tools.embedded.mobilesam_onnx import read_checkpoint

    folder = asset_dir("mobilesam")
    weights = read_checkpoint(folder / "mobile_sam.pt")
    prompt = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                           mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8))
    for module, prefix in ((prompt, "prompt_encoder."), (decoder, "mask_decoder.")):
        module.load_state_dict({k[len(prefix):]: torch.from_numpy(v.copy()) for k, v in weights.items()
                                if k.startswith(prefix)}, strict=True)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((1, 256, 64, 64)).astype(np.float32)
    coords = np.array([[[100.0, 200.0], [600.0, 700.0]], [[300.0, 300.0], [0.0, 0.0]]], np.float32)
    labels = np.array([[2.0, 3.0], [1.0, -1.0]], np.float32)
    mask = rng.standard_normal((2, 1, 256, 256)).astype(np.float32)
    session = ort.InferenceSession(str(folder / "mobilesam_decoder.onnx"))
    for has_mask in (0.0, 1.0):
        with torch.no_grad():
            box = prompt._embed_boxes(torch.from_numpy(coords[:1].reshape(1, 4)))  # labels 2, 3: box corners
            points = prompt._embed_points(torch.from_numpy(coords[1:]), torch.from_numpy(labels[1:]), pad=False)
            sparse = torch.cat([box, points])
            dense = prompt._embed_masks(torch.from_numpy(mask)) if has_mask else \
                prompt.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(2, -1, 64, 64)
            low, iou = decoder.predict_masks(torch.from_numpy(emb), prompt.get_dense_pe(), sparse, dense)
        olow, oiou = session.run(None, {"image_embeddings": emb, "point_coords": coords, "point_labels": labels,
                                        "mask_input": mask, "has_mask_input": np.full(1, has_mask, np.float32)})
        assert np.abs(olow - low.numpy()).max() < 1e-3 and np.abs(oiou - iou.numpy()).max() < 1e-4


@pytest.mark.assets
@needs_sam
def test_box_prompts_give_the_whole_bicycle_without_the_dog(dog_image):
    from cielr_agent.tools.embedded.sam_segmenter import MobileSamSegmenter

    bike, dog = MobileSamSegmenter().segment_boxes(dog_image, [BICYCLE_BOX, DOG_BOX])
    assert bike[FRONT_WHEEL].mean() > 0.8  # the front wheel left of the dog, filled
    assert bike[SADDLE].mean() > 0.4  # the saddle: found thanks to the negative point on the dog
    assert (bike & dog).sum() < 0.05 * dog.sum()
    assert dog.sum() > 25000 and dog[400:500, 150:250].mean() > 0.8


@pytest.mark.assets
@needs_sam
def test_point_prompt_and_embedding_reuse(dog_image):
    from cielr_agent.tools.embedded.mobilesam import shared_predictor
    from cielr_agent.tools.embedded.sam_segmenter import MobileSamSegmenter

    seg = MobileSamSegmenter()
    seg.segment_boxes(dog_image, [DOG_BOX])
    key = shared_predictor()._key
    mask = seg.segment_points(dog_image, [(220.0, 420.0)], [1])
    assert shared_predictor()._key == key  # the same embedding answered both prompts
    ys, xs = np.nonzero(mask)
    assert 120 <= xs.min() and xs.max() <= 320 and ys.max() > 500  # the dog, down to its tail


@pytest.mark.assets
@needs_sam
def test_regions_cover_distinct_things(dog_image):
    from cielr_agent.tools.embedded.sam_segmenter import MobileSamSegmenter

    small = np.ascontiguousarray(dog_image[::2, ::2])
    regions = MobileSamSegmenter(points_per_side=8).regions(small)
    assert 5 <= len(regions) <= 64
    areas = [r.area for r in regions]
    assert areas == sorted(areas, reverse=True)
    for i, a in enumerate(regions):
        for b in regions[i + 1:]:
            inter = (a.mask & b.mask).sum()
            assert inter / (a.mask | b.mask).sum() <= 0.85
    dog = np.zeros(small.shape[:2], bool)
    dog[110:265, 65:155] = True
    assert any((r.mask & dog).sum() > 0.6 * r.area and r.area > 0.3 * dog.sum() for r in regions)
