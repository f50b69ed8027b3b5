"""The diffusers inpainting backend (remover/generator "sd-inpaint") on a tiny random-weight pipeline."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="the full extra is not installed (pip install -e '.[full]')")
pytest.importorskip("transformers", reason="the full extra is not installed (pip install -e '.[full]')")

from cielr_agent.errors import MissingWeightsError  # noqa: E402
from cielr_agent.tools.backends import BackendContext, get_backend  # noqa: E402
from cielr_agent.tools.foundation import inpainting  # noqa: E402
from cielr_agent.tools.model_manager import ModelManager  # noqa: E402
from cielr_agent.tools.protocols import Generator, Remover  # noqa: E402
from tiny_diffusion import build_tiny_sd_inpaint  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_sd_inpaint(tmp_path_factory.mktemp("tiny-sd-inpaint"))


def backend(kind, model, models=None, **options):
    options = {"model": str(model), "steps": 2, "resolution": 64, **options}
    ctx = BackendContext(name="sd-inpaint", options=options, device="cpu", **({"models": models} if models else {}))
    return get_backend(kind, "sd-inpaint", ctx)


@pytest.fixture(scope="module")
def scene():
    """A 96×128 image (gradients and texture) and a 20×24 mask inside it."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:96, 0:128]
    image = np.stack([xs * 2, ys * 2, (xs + ys) % 256], axis=-1) + rng.integers(0, 20, (96, 128, 3))
    mask = np.zeros((96, 128), bool)
    mask[40:60, 50:74] = True
    return image.astype(np.uint8), mask


def test_inpaint_changes_only_the_mask(tiny_model, scene):
    image, mask = scene
    generator = backend("generator", tiny_model)
    assert isinstance(generator, Generator) and isinstance(generator, Remover)
    out = generator.inpaint(image, mask, "a red ball")
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[~mask], image[~mask])
    assert (out[mask] != image[mask]).any(axis=-1).mean() > 0.5
    assert np.array_equal(image, scene[0])  # the input is not written to


def test_seed_makes_output_deterministic(tiny_model, scene):
    image, mask = scene
    first = backend("generator", tiny_model).inpaint(image, mask, "a red ball")
    again = backend("generator", tiny_model).inpaint(image, mask, "a red ball")
    other_seed = backend("generator", tiny_model, seed=1).inpaint(image, mask, "a red ball")
    assert np.array_equal(first, again)
    assert not np.array_equal(first[mask], other_seed[mask])


def test_remover_and_generator_share_one_pipeline(tiny_model, scene):
    image, mask = scene
    models = ModelManager()
    remover = backend("remover", tiny_model, models, seed=7)
    generator = backend("generator", tiny_model, models, seed=7)
    assert remover is not generator
    removed = remover.remove(image, mask)
    generator.inpaint(image, mask, "a cat")
    assert len(models.loaded()) == 1
    assert remover.pipeline() is generator.pipeline()
    assert np.array_equal(removed[~mask], image[~mask]) and not np.array_equal(removed, image)


def test_named_pipeline_class(tiny_model, scene):
    image, mask = scene
    generator = backend("generator", tiny_model, pipeline="StableDiffusionInpaintPipeline")
    assert type(generator.pipeline()).__name__ == "StableDiffusionInpaintPipeline"
    assert inpainting.default_resolution(generator.pipeline()) == 64  # unet sample size 32 × VAE factor 2
    out = generator.inpaint(image, mask, "a cat")
    assert np.array_equal(out[~mask], image[~mask])


@pytest.mark.parametrize("name, message", [("NoSuchPipeline", "AutoPipelineForInpainting"),
                                           ("StableDiffusionPipeline", "not an inpainting pipeline"),
                                           ("UNet2DConditionModel", "unknown diffusers pipeline")])
def test_unknown_pipeline_class_is_named(tiny_model, scene, name, message):
    with pytest.raises(ValueError, match=message) as error:
        backend("generator", tiny_model, pipeline=name).inpaint(*scene, "a cat")
    assert name in str(error.value)


def test_empty_mask_is_a_no_op_without_loading(tiny_model, scene):
    image, _ = scene
    models = ModelManager()
    out = backend("generator", tiny_model, models, seed=8).inpaint(image, np.zeros(image.shape[:2], bool), "a cat")
    assert np.array_equal(out, image) and out is not image
    assert models.loaded() == {}


def test_missing_model_folder_names_the_path(tmp_path, scene):
    missing = tmp_path / "no-such-model"
    with pytest.raises(MissingWeightsError, match=re.escape(str(missing))):
        backend("remover", missing).remove(*scene)


def test_color_correct_removes_the_shift_measured_just_outside_the_mask():
    rng = np.random.default_rng(1)
    original = rng.integers(60, 180, (48, 48, 3)).astype(np.uint8)
    mask = np.zeros((48, 48), bool)
    mask[16:32, 16:32] = True
    content = rng.uniform(60, 180, (48, 48, 3)).astype(np.float32)
    generated = np.where(mask[..., None], content, original.astype(np.float32)) + np.float32([20, -10, 5])
    far = np.ones((48, 48), bool)
    far[4:44, 4:44] = False  # beyond the 8-px ring: a different shift there must not count
    generated[far] += 50
    corrected = inpainting.color_correct(generated, original, mask, ring=8)
    np.testing.assert_allclose(corrected[mask], content[mask], atol=1e-3)
    assert np.array_equal(inpainting.color_correct(generated, original, np.ones((48, 48), bool)), generated)


def test_paste_back_blends_only_inside_the_mask():
    image = np.zeros((40, 40, 3), np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    box = (5, 5, 35, 35)
    generated = np.full((30, 30, 3), 200.0, np.float32)
    out = inpainting.paste_back(image, generated, mask, box, feather=4)
    assert np.array_equal(out[~mask], image[~mask])
    assert (out[13:27, 13:27] == 200).all()  # ≥ 4 px inside
    assert 0 < out[10, 20, 0] < out[11, 20, 0] < out[12, 20, 0] < 200  # the soft edge rises inwards


def test_paste_back_feathers_an_edge_on_the_box_border_but_not_the_image_border():
    image = np.zeros((20, 20, 3), np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[0:10, 5:15] = True  # touches the image's top border
    out = inpainting.paste_back(image, np.full((10, 10, 3), 200.0, np.float32), mask, (5, 0, 15, 10), feather=4)
    assert out[0, 10, 0] == 200  # the image border is not an edge
    assert 0 < out[5, 5, 0] < 200 and 0 < out[9, 10, 0] < 200  # the box border is


def test_crop_box_grows_by_context_and_stays_in_the_image():
    mask = np.zeros((100, 200), bool)
    mask[40:50, 20:30] = True
    assert inpainting.crop_box(mask, context=0.5) == (15, 35, 35, 55)
    assert inpainting.crop_box(mask, context=0.5, min_side=32) == (9, 29, 41, 61)
    mask[:] = False
    mask[90:100, 0:10] = True  # a corner: the box is moved inside the image
    assert inpainting.crop_box(mask, context=0.5, min_side=32) == (0, 68, 32, 100)
    assert inpainting.crop_box(mask, context=0.5, min_side=500) == (0, 0, 200, 100)


@pytest.mark.parametrize("size, expected", [((32, 20), (64, 40)), ((30, 17), (64, 40)), ((17, 30), (40, 64)),
                                            ((1000, 10), (64, 8)), ((640, 480), (64, 48))])
def test_working_size_keeps_aspect_in_multiples_of_8(size, expected):
    assert inpainting.working_size(*size, resolution=64) == expected
