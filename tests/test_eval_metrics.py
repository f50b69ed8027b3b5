"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cielr_agent.evals import metrics as M

C1, C2 = (0.01 * 1) ** 2, (0.03 * 1) ** 2


def rng_image(h=24, w=20, c=3, seed=0):
    return np.random.default_rng(seed).random((h, w, c))


def test_mse_and_psnr_known_values():
    a = np.zeros((16, 16, 3))
    assert M.mse(a, a + 0.1) == pytest.approx(0.01)
    assert M.psnr(a, a + 0.1) == pytest.approx(20.0)  # 10·log10(1 / 0.01)
    black, white = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)
    assert M.mse(black, white) == 1.0 and M.psnr(black, white) == 0.0  # uint8 is read as /255
    assert M.psnr(a, a) == math.inf
    assert M.mse(np.array([[0.0, 1.0]]), np.array([[0.0, 0.0]])) == 0.5
    with pytest.raises(ValueError, match="shape"):
        M.mse(a, np.zeros((8, 8, 3)))


def test_ssim_identical_and_constant_images():
    img = rng_image()
    assert M.ssim(img, img) == pytest.approx(1.0)
    # constant images: no variance, so SSIM = luminance term (2ab + C1) / (a² + b² + C1)
    a, b = np.full((16, 16), 0.5), np.full((16, 16), 0.25)
    assert M.ssim(a, b) == pytest.approx((2 * 0.5 * 0.25 + C1) / (0.25 + 0.0625 + C1), abs=1e-12)  # 0.800064
    assert M.ssim(a, b) == pytest.approx(0.8000640, abs=1e-6)
    with pytest.raises(ValueError, match="11"):
        M.ssim(np.zeros((10, 30)), np.zeros((10, 30)))


def _ssim_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM written out window by window (11×11 Gaussian, σ 1.5, population statistics, valid positions)."""
    r = np.arange(11) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append((2 * mx * my + C1) * (2 * cxy + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
    return float(np.mean(vals))


def test_ssim_matches_the_definition_window_by_window():
    x = rng_image(15, 13, 1, seed=1)[..., 0]
    y = np.clip(x + np.random.default_rng(2).normal(0, 0.1, x.shape), 0, 1)
    assert M.ssim(x, y) == pytest.approx(_ssim_by_hand(x, y), abs=1e-10)
    # colour: the mean of the channels
    a, b = rng_image(14, 14, 3, 3), rng_image(14, 14, 3, 4)
    by_channel = np.mean([_ssim_by_hand(a[..., c], b[..., c]) for c in range(3)])
    assert M.ssim(a, b) == pytest.approx(by_channel, abs=1e-10)


def test_l1_l2_resize_the_prediction_to_the_ground_truth():
    pred = np.zeros((16, 16, 3), np.uint8)
    target = np.full((32, 32, 3), 51, np.uint8)  # 0.2
    assert M.l1(pred, target) == pytest.approx(0.2)
    assert M.l2(pred, target) == pytest.approx(0.04)
    assert M.l1(target, target) == 0.0


def test_reason_edit_protocol_zeroes_the_edited_region():
    rng = np.random.default_rng(5)
    original = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mask = np.zeros((256, 256), np.uint8)
    mask[10:21, 30:41] = 255
    edited = original.copy()
    edited[10:21, 30:41] = 0  # a change inside the mask does not count
    out = M.reason_edit_background(original, edited, mask, learned=False)
    assert out["psnr"] == math.inf and out["mse"] == 0.0 and out["ssim"] == pytest.approx(1.0)
    assert out["clip_crop_box"] == (30, 10, 40, 20)  # upstream: max index used as an exclusive edge
    # one pixel outside the mask turned from 0 to 255 in every channel: MSE = 1 / 256², PSNR = 10·log10(65536)
    zeros = np.zeros((256, 256, 3), np.uint8)
    changed = zeros.copy()
    changed[200, 200] = 255
    out = M.reason_edit_background(zeros, changed, mask, learned=False)
    assert out["mse"] == pytest.approx(1 / 65536)
    assert out["psnr"] == pytest.approx(10 * math.log10(65536))  # 48.16 dB
    # soft (JPEG) mask values weigh the pixel by 1 - m/255, as in SmartEdit's script
    soft = mask.copy()
    soft[200, 200] = 51
    assert M.reason_edit_background(zeros, changed, soft, learned=False)["mse"] == pytest.approx(0.8**2 / 65536)


def test_reason_edit_protocol_resizes_to_256():
    original = np.zeros((100, 300, 3), np.uint8)
    edited = original.copy()
    edited[:, :150] = 255  # left half changed, left half masked
    mask = np.zeros((100, 300), bool)
    mask[:, :150] = True
    out = M.reason_edit_background(original, edited, mask, learned=False)
    assert out["clip_crop_box"] == (0, 0, 127, 255)
    # bicubic resizing bleeds the changed half one pixel past the nearest-resized mask: finite, as upstream
    assert 40 < out["psnr"] < math.inf


def test_learned_metrics_are_unavailable_without_local_weights(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    img = np.zeros((32, 32, 3), np.uint8)
    for value, reason in (M.clip_score(img, "a dog"), M.clip_image_similarity(img, img), M.dino_similarity(img, img)):
        assert value is None and "not in the local Hugging Face cache" in reason
    value, reason = M.lpips_squeeze(img / 255.0, img / 255.0)
    assert value is None and reason
    out = M.reason_edit_background(img, img, np.ones((32, 32), bool), text="a dog")
    assert out["lpips"] is None and out["clip_score"] is None and set(out["unavailable"]) == {"lpips", "clip_score"}


def test_learned_image_metrics_run_with_a_local_model(tmp_path):
    """The code path with weights present: tiny random models saved to a local folder (values not meaningful)."""
    transformers = pytest.importorskip("transformers", reason="the full extra is not installed (pip install -e '.[full]')")
    vit = tmp_path / "vit"
    transformers.ViTModel(transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=32, image_size=32, patch_size=16)).save_pretrained(vit)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vit)
    clip = tmp_path / "clip"
    cfg = transformers.CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                               "num_attention_heads": 2, "vocab_size": 64},
                                  vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                                 "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
                                  projection_dim=8)
    transformers.CLIPModel(cfg).save_pretrained(clip)
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32).save_pretrained(clip)
    a = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    b = 255 - a
    for fn, path in ((M.dino_similarity, vit), (M.clip_image_similarity, clip)):
        same, reason = fn(a, a, model=str(path))
        assert reason is None and same == pytest.approx(1.0, abs=1e-5)
        other, _ = fn(a, b, model=str(path))
        assert -1.0 <= other <= 1.0


def test_iou():
    assert M.iou_box((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert M.iou_box((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0 and M.iou_box((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 px
    b[1:3, 1:3] = True  # 4 px, 1 shared
    assert M.iou_mask(a, b) == pytest.approx(1 / 7)
    assert M.iou_mask(a, a) == 1.0


def test_outside_and_changed_fraction():
    a = np.zeros((20, 20, 3), np.uint8)
    b = a.copy()
    b[:5, :5] = 200  # 25 of 400 px changed
    region = np.zeros((20, 20), bool)
    region[:5, :5] = True
    assert M.changed_fraction(a, b) == 25 / 400
    assert M.changed_fraction(a, b, ~region) == 0.0
    out = M.outside(a, b, region)
    assert out["psnr"] == math.inf and out["ssim"] == pytest.approx(1.0)
    assert M.outside(a, b, np.zeros((20, 20), bool))["psnr"] < 20


def test_align_steps_by_object_then_order():
    gold = [{"type": "remove", "object": 1}, {"type": "recolor", "object": 2}, {"type": "add", "object": "cat"}]
    # right objects in another order, one wrong type
    pred = [{"type": "recolor", "object": 2}, {"type": "replace", "object": 1}]
    out = M.align_steps(gold, pred)
    assert [o["predicted"] for o in out] == [1, 0, None]
    assert [o["type_ok"] for o in out] == [False, True, False]
    assert [o["object_ok"] for o in out] == [True, True, False]
    assert [o["correct"] for o in out] == [False, True, False]
    # no object matches: paired by order; extra predicted steps stay unpaired
    out = M.align_steps(gold[:1], [{"type": "remove", "object": 9}, {"type": "remove", "object": 8}])
    assert out == [{"predicted": 0, "type_ok": True, "object_ok": False, "correct": False}]
    # a custom object test
    out = M.align_steps([{"type": "add", "matches": lambda p: "cat" in p.get("prompt", "")}],
                        [{"type": "remove", "object": 1}, {"type": "add", "prompt": "a cat"}])
    assert out[0]["predicted"] == 1 and out[0]["correct"]


def test_cost_of_an_edit_result():
    from cielr_agent.results import EditResult, LLMCall

    result = EditResult(instruction="x", image="y", timings={"perceive": 1.0, "llm": 2.5, "total": 4.0},
                        llm_calls=[LLMCall(node="reason", seconds=1, input_tokens=100, output_tokens=10),
                                   LLMCall(node="plan", seconds=1.5, input_tokens=200, cached_tokens=150,
                                           output_tokens=20)],
                        peak_rss_mb=1234.56)
    c = M.cost(result)
    assert c["llm_calls"] == 2 and c["input_tokens"] == 300 and c["output_tokens"] == 30
    assert c["new_tokens"] == 150 and c["reused_tokens"] == 150
    assert c["calls"][1] == {"node": "plan", "new_tokens": 50, "reused_tokens": 150, "generated_tokens": 20,
                             "seconds": 1.5}
    assert c["timings"]["llm"] == 2.5 and c["timings"]["execute"] == 0.0 and c["peak_rss_mb"] == 1234.6
    assert M.percentile([1, 2, 3, 4], 90) == pytest.approx(3.7) and M.percentile([], 50) is None
