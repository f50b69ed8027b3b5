"""The foundation segmentation, depth and captioning backends, run through the backend registry on tiny
random-weight models saved to disk and loaded by path (nothing comes from a hub)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("segment_anything", reason="the full extra is not installed (pip install -e '.[full]')")
pytest.importorskip("transformers", reason="the full extra is not installed (pip install -e '.[full]')")

import torch  # noqa: E402

from cielr_agent.errors import MissingWeightsError  # noqa: E402
from cielr_agent.tools.backends import BackendContext, get_backend  # noqa: E402
from cielr_agent.tools.embedded.backends import AttributeDescriber  # noqa: E402
from cielr_agent.tools.foundation.captioning import object_crop  # noqa: E402
from cielr_agent.tools.foundation.depth import normalized  # noqa: E402
from cielr_agent.tools.model_manager import ModelManager  # noqa: E402
from tiny_vision import (  # noqa: E402
    build_tiny_blip, build_tiny_depth_anything, build_tiny_florence2, build_tiny_sam2, build_tiny_sam_checkpoint,
    build_tiny_sam_hf,
)

H, W = 96, 128
BOX = (30, 20, 90, 60)
GROWN = (27, 18, 93, 62)  # BOX grown by the default box_margin (5 % of 60 × 40 px), as x0, y0, x1, y1
SEGMENTERS = ("sam", "sam-hf", "sam2")
ENCODER = {"sam": "image_encoder", "sam-hf": "vision_encoder", "sam2": "vision_encoder"}


def make_image(seed: int = 0) -> np.ndarray:
    """A non-square noisy image with a red rectangle (the 'object') inside BOX."""
    image = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    image[24:56, 36:84] = (210, 40, 30)
    return image


IMAGE = make_image()


def region(box) -> np.ndarray:
    x0, y0, x1, y1 = box
    inside = np.zeros((H, W), dtype=bool)
    inside[y0:y1, x0:x1] = True
    return inside


def backend(kind: str, name: str, **options):
    """The registry's backend for these options, on the CPU, with its own model manager."""
    return get_backend(kind, name, BackendContext(name=name, options=options, device="cpu", models=ModelManager()))


def loaded_model(instance):
    """The torch model a backend loaded into its model manager."""
    manager = instance.ctx.models
    [key] = [k for k in manager.loaded() if ":model:" in k or ":sam:" in k]
    return manager.get(key, lambda: None)


@contextmanager
def counting_calls(module: torch.nn.Module):
    """A list that grows by one on every forward call of `module` while the block runs."""
    calls = []
    handle = module.register_forward_hook(lambda *args: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-vision")
    return {
        "sam": build_tiny_sam_checkpoint(root / "sam"),
        "sam-hf": build_tiny_sam_hf(root / "sam-hf"),
        "sam2": build_tiny_sam2(root / "sam2"),
        "depth": build_tiny_depth_anything(root / "depth"),
        "blip": build_tiny_blip(root / "blip"),
        "florence2": build_tiny_florence2(root / "florence2"),
    }


def segmenter_options(models, name: str) -> dict:
    if name == "sam":
        path, architecture = models["sam"]
        return {"checkpoint": str(path), "architecture": architecture}
    return {"model": str(models[name])}


@pytest.fixture(scope="module", params=SEGMENTERS)
def segmenter(request, models):
    return backend("segmenter", request.param, **segmenter_options(models, request.param))


# --- segmentation -----------------------------------------------------------------------------------------


def test_box_masks_fit_the_image_and_stay_in_the_grown_box(models, segmenter):
    mask = segmenter.segment_box(IMAGE, BOX)
    assert mask.dtype == bool and mask.shape == (H, W)
    assert mask.any() and not mask[~region(GROWN)].any()
    # the model's own mask reaches beyond the box: limiting it is what keeps it inside
    unlimited = backend("segmenter", segmenter.ctx.name, box_margin=10.0,
                        **segmenter_options(models, segmenter.ctx.name)).segment_box(IMAGE, BOX)
    assert unlimited[~region(GROWN)].any()
    assert (mask == (unlimited & region(GROWN))).all()


def test_excluded_pixels_are_never_in_the_mask(segmenter):
    exclude = np.zeros((H, W), dtype=bool)
    exclude[:, :60] = True  # an object in front covers the left half of the box
    plain = segmenter.segment_box(IMAGE, BOX)
    masked = segmenter.segment_box(IMAGE, BOX, exclude=exclude)
    assert (plain & exclude).any() and not (masked & exclude).any()
    assert (masked == (plain & ~exclude)).all()


def _reference_masks(name: str, model, path, box) -> tuple[np.ndarray, np.ndarray]:
    """Masks and scores for a box prompt, straight from the libraries' own predictor or processor pipeline."""
    if name == "sam":
        from segment_anything import SamPredictor

        predictor = SamPredictor(model)
        predictor.set_image(IMAGE)
        masks, scores, _ = predictor.predict(box=np.array(box, dtype=np.float32), multimask_output=True)
        return masks, scores
    from transformers import Sam2Processor, SamProcessor

    processor = (SamProcessor if name == "sam-hf" else Sam2Processor).from_pretrained(path)
    inputs = processor(images=IMAGE, input_boxes=[[list(box)]], return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], multimask_output=True)
    sizes = [inputs["original_sizes"]] + ([inputs["reshaped_input_sizes"]] if name == "sam-hf" else [])
    return processor.post_process_masks(out.pred_masks, *sizes)[0][0].numpy(), out.iou_scores[0, 0].numpy()


def test_box_masks_are_the_best_rated_mask_of_the_library_pipeline(models, segmenter):
    name = segmenter.ctx.name
    mask = segmenter.segment_box(IMAGE, BOX)
    path = models[name][0] if name == "sam" else models[name]
    masks, scores = _reference_masks(name, loaded_model(segmenter), path, BOX)
    assert len(masks) == 3 and len({m.tobytes() for m in masks}) == 3  # the choice matters
    assert (mask == (masks[int(np.argmax(scores))] & region(GROWN))).all()


def test_point_prompts(segmenter):
    mask = segmenter.segment_points(IMAGE, [(60, 40)], [1])
    assert mask.dtype == bool and mask.shape == (H, W) and mask.any()
    boxed = segmenter.segment_points(IMAGE, [(60, 40), (35, 25)], [1, 0], box=BOX)
    assert boxed.shape == (H, W) and boxed.any() and not boxed[~region(GROWN)].any()
    with pytest.raises(ValueError, match="label"):
        segmenter.segment_points(IMAGE, [(60, 40)], [2])
    with pytest.raises(ValueError, match="one label per point"):
        segmenter.segment_points(IMAGE, [(60, 40), (10, 10)], [1])


def test_each_image_is_encoded_once(segmenter):
    segmenter.segment_box(IMAGE, BOX)  # the model is loaded
    other = make_image(seed=1)
    with counting_calls(getattr(loaded_model(segmenter), ENCODER[segmenter.ctx.name])) as calls:
        segmenter.segment_box(other, BOX)
        segmenter.segment_box(other, (0, 0, 50, 40))
        segmenter.segment_points(other, [(20, 20)], [1])
        assert len(calls) == 1
        segmenter.segment_box(IMAGE, BOX)
        segmenter.segment_box(IMAGE.copy(), (10, 10, 40, 30))  # same pixels, another array
        assert len(calls) == 2


def test_bad_prompts_are_refused(segmenter):
    with pytest.raises(ValueError, match="empty"):
        segmenter.segment_box(IMAGE, (50, 20, 40, 60))
    with pytest.raises(ValueError, match="exclude"):
        segmenter.segment_box(IMAGE, BOX, exclude=np.zeros((W, H), dtype=bool))


def test_missing_sam_checkpoint_says_where_to_get_one(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"sam_vit_h_4b8939\.pth.*checkpoint"):
        backend("segmenter", "sam").segment_box(IMAGE, BOX)
    missing = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(MissingWeightsError, match=f"{missing}.*does not exist.*checkpoint"):
        backend("segmenter", "sam", checkpoint=str(missing)).segment_box(IMAGE, BOX)


def test_sam_checkpoint_of_another_architecture_names_the_fix(models, tmp_path):
    path, _ = models["sam"]
    renamed = tmp_path / "sam_vit_b_tiny.pth"  # the file name says vit_b: that architecture is tried
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(MissingWeightsError, match="SAM vit_b state dict.*model_type.*architecture"):
        backend("segmenter", "sam", checkpoint=str(renamed)).segment_box(IMAGE, BOX)


@pytest.mark.parametrize("kind,name", [("segmenter", "sam-hf"), ("segmenter", "sam2"), ("depth", "depth-anything"),
                                       ("describer", "captioner")])
def test_missing_model_folders_fail_with_an_actionable_error(tmp_path, kind, name):
    instance = backend(kind, name, model=str(tmp_path / "nowhere"))
    with pytest.raises(MissingWeightsError, match=f"nowhere.*backend_options.{name}"):
        if kind == "segmenter":
            instance.segment_box(IMAGE, BOX)
        elif kind == "depth":
            instance.nearness(IMAGE)
        else:
            instance.describe(IMAGE, region(BOX), BOX, detail=True)


# --- depth ------------------------------------------------------------------------------------------------


def test_nearness_is_the_normalised_depth_prediction_at_image_size(models):
    from transformers import AutoImageProcessor

    estimator = backend("depth", "depth-anything", model=str(models["depth"]))
    near = estimator.nearness(IMAGE)
    assert near.shape == (H, W) and near.dtype == np.float32
    assert near.min() == 0.0 and near.max() == 1.0
    processor = AutoImageProcessor.from_pretrained(models["depth"])
    with torch.no_grad():
        outputs = loaded_model(estimator)(**processor(images=IMAGE, return_tensors="pt"))
    depth = processor.post_process_depth_estimation(outputs, target_sizes=[(H, W)])[0]["predicted_depth"].numpy()
    assert np.allclose(near, (depth - depth.min()) / (depth.max() - depth.min()), atol=1e-5)
    inverted = backend("depth", "depth-anything", model=str(models["depth"]), invert=True).nearness(IMAGE)
    assert np.allclose(inverted, 1.0 - near)


def test_nearness_of_the_last_image_is_cached(models):
    estimator = backend("depth", "depth-anything", model=str(models["depth"]))
    estimator.nearness(IMAGE)  # the model is loaded
    with counting_calls(loaded_model(estimator)) as calls:
        first = estimator.nearness(make_image(seed=2))
        first[:] = 0  # the caller's copy: the cache is untouched
        again = estimator.nearness(make_image(seed=2))
        assert len(calls) == 1 and again.max() == 1.0
        estimator.nearness(IMAGE)
        assert len(calls) == 2


def test_a_constant_map_is_half_near():
    assert (normalized(np.full((4, 6), 3.5)) == 0.5).all()
    assert normalized(np.full((4, 6), 3.5)).dtype == np.float32


# --- captioning -------------------------------------------------------------------------------------------


def test_captioner_adds_a_caption_only_with_detail(models):
    describer = backend("describer", "captioner", model=str(models["blip"]), max_new_tokens=6)
    mask = region((36, 24, 84, 56))
    plain = describer.describe(IMAGE, mask, BOX)
    assert plain == AttributeDescriber().describe(IMAGE, mask, BOX) and "caption" not in plain
    detailed = describer.describe(IMAGE, mask, BOX, detail=True)
    caption = detailed.pop("caption")
    assert detailed == plain and isinstance(caption, str) and caption.strip()
    assert "[SEP]" not in caption and "[DEC]" not in caption
    assert describer.describe(IMAGE, mask, BOX, detail=True)["caption"] == caption  # greedy: deterministic


def test_a_conditional_prompt_is_not_echoed(models):
    describer = backend("describer", "captioner", model=str(models["blip"]), max_new_tokens=6, prompt="a photo of")
    caption = describer.describe(IMAGE, region(BOX), BOX, detail=True)["caption"]
    assert isinstance(caption, str) and not caption.startswith("a photo of")


def test_florence2_captions(models):
    describer = backend("describer", "captioner", model=str(models["florence2"]), max_new_tokens=6)
    caption = describer.describe(IMAGE, region(BOX), BOX, detail=True)["caption"]
    assert isinstance(caption, str) and caption and "</s>" not in caption


def test_other_model_types_are_refused_with_the_supported_ones(models):
    describer = backend("describer", "captioner", model=str(models["depth"]))
    with pytest.raises(ValueError, match="'depth_anything'.*blip, florence2"):
        describer.describe(IMAGE, region(BOX), BOX, detail=True)


def test_object_crop_greys_out_the_background():
    mask = region((36, 24, 84, 56))
    crop = object_crop(IMAGE, mask, BOX, context=0.1)
    assert crop.shape == (48, 72, 3)  # BOX grown by 6 × 4 px on each side
    inside = mask[16:64, 24:96]
    original = IMAGE[16:64, 24:96]
    assert (crop[inside] == original[inside]).all()
    assert np.abs(crop[~inside].astype(int) - 128).mean() < np.abs(original[~inside].astype(int) - 128).mean() / 2
    assert (object_crop(IMAGE, mask, BOX, context=0.1, mask_background=False) == original).all()
