"""The open-vocabulary detectors (GroundingDINO and OWLv2 through transformers, GroundingDINO through
groundingdino-py), run through the backend registry on tiny random-weight models saved to disk and loaded by
path, with the network cut off."""

from __future__ import annotations

import re
import socket

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the full extra is not installed (pip install -e '.[full]')")
pytest.importorskip("torchvision", reason="the full extra is not installed (pip install -e '.[full]')")

import torch  # noqa: E402

from cielr_agent.errors import MissingWeightsError  # noqa: E402
from cielr_agent.tools.backends import BackendContext, get_backend  # noqa: E402
from cielr_agent.tools.embedded.coco_detection import COCO_LABELS  # noqa: E402
from cielr_agent.tools.foundation.detection import phrase_label, prompt_chunks  # noqa: E402
from cielr_agent.tools.foundation.groundingdino_py import (  # noqa: E402
    GroundingDinoPyUnavailable, require_groundingdino,
)
from cielr_agent.tools.model_manager import ModelManager  # noqa: E402
from cielr_agent.tools.protocols import Detection, Detector  # noqa: E402
from tiny_detectors import build_tiny_grounding_dino, build_tiny_owlv2  # noqa: E402

H, W = 60, 100
IMAGE = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
DETECTORS = ("grounding-dino", "owlv2")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a detector tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-detectors")
    return {"grounding-dino": build_tiny_grounding_dino(root / "gdino"), "owlv2": build_tiny_owlv2(root / "owlv2")}


def backend(name: str, **options):
    """The registry's detector for these options, on the CPU, with its own model manager."""
    return get_backend("detector", name, BackendContext(name=name, options=options, device="cpu",
                                                        models=ModelManager()))


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def check_detections(found, labels, shape=(H, W)) -> None:
    """What every detector promises: Detections of the asked labels, non-empty float boxes inside the image,
    no same-label pair overlapping beyond the NMS threshold, highest score first."""
    height, width = shape
    assert found and all(isinstance(d, Detection) for d in found)
    assert {d.label for d in found} <= set(labels)
    for d in found:
        x0, y0, x1, y1 = d.box
        assert all(isinstance(v, float) for v in (d.score, *d.box))
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    for i, a in enumerate(found):
        assert all(iou(a.box, b.box) <= 0.5 for b in found[i + 1:] if b.label == a.label)


def loaded(instance, what: str):
    """The object a backend loaded into its model manager as component `what` ("model", "processor")."""
    manager = instance.ctx.models
    [key] = [k for k in manager.loaded() if f":{what}:" in k]
    return manager.get(key, lambda: None)


@pytest.mark.parametrize("name", DETECTORS)
def test_detects_the_requested_labels(models, name):
    detector = backend(name, model=str(models[name]))
    assert isinstance(detector, Detector)
    found = detector.detect(IMAGE, min_score=0.0, labels=["cat", "dog"])
    check_detections(found, {"cat", "dog"})

    cut = found[len(found) // 2].score
    assert [d for d in detector.detect(IMAGE, min_score=cut, labels=["cat", "dog"])] == [d for d in found
                                                                                       if d.score > cut]
    assert {d.label for d in detector.detect(IMAGE, min_score=0.0, labels=["The Cat"])} == {"The Cat"}
    assert detector.detect(IMAGE, labels=["", "  "]) == []
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.detect(IMAGE[..., 0])


@pytest.mark.parametrize("name", DETECTORS)
def test_without_labels_it_looks_for_the_vocabulary(models, name):
    detector = backend(name, model=str(models[name]), vocabulary=["dog", "bicycle"])
    check_detections(detector.detect(IMAGE, min_score=0.0), {"dog", "bicycle"})
    assert backend(name, model=str(models[name])).vocabulary == list(COCO_LABELS)


@pytest.mark.parametrize("name", DETECTORS)
def test_loads_once_per_component(models, name):
    # options no other test uses, so that the registry makes a new instance with this (empty) model manager
    options = {"model": str(models[name]), "labels_per_prompt": 10}
    context = BackendContext(name=name, options=options, device="cpu", models=ModelManager())
    detector = get_backend("detector", name, context)
    assert detector.ctx.models.loaded() == {}  # construction loads nothing
    detector.detect(IMAGE, min_score=0.0, labels=["cat"])
    model = loaded(detector, "model")
    detector.detect(IMAGE, min_score=0.0, labels=["dog"])
    assert get_backend("detector", name, context) is detector
    assert sorted(k.split(":")[1] for k in detector.ctx.models.loaded()) == ["model", "processor"]
    assert loaded(detector, "model") is model and not model.training
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("name", DETECTORS)
def test_missing_weights_say_where_and_how_to_fix(tmp_path, name):
    folder = tmp_path / "nowhere"
    detector = backend(name, model=str(folder))
    with pytest.raises(MissingWeightsError) as error:
        detector.detect(IMAGE, labels=["cat"])
    message = str(error.value)
    assert str(folder) in message and "To fix" in message and f"[backend_options.{name}]" in message


def test_resolve_label_normalises_free_text(models):
    detector = backend("owlv2", model=str(models["owlv2"]))
    assert detector.resolve_label("  The   Red  Car. ") == "red car"
    assert detector.resolve_label("an Apple") == "apple"
    assert detector.resolve_label("theatre seat") == "theatre seat"
    assert detector.resolve_label("traffic light") == "traffic light"
    assert detector.resolve_label("  ") is None and detector.resolve_label("") is None


@pytest.mark.parametrize("shape", [(H, W), (W, H)], ids=["wide", "tall"])
def test_owlv2_boxes_are_in_original_image_pixels(models, shape):
    """OWLv2 pads the image to a square: boxes scale by the longer side, not by width and height."""
    from transformers import Owlv2ForObjectDetection, Owlv2Processor
    from transformers.image_transforms import center_to_corners_format

    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    found = backend("owlv2", model=str(models["owlv2"])).detect(image, min_score=0.0, labels=["cat", "dog"])
    check_detections(found, {"cat", "dog"}, shape)

    processor = Owlv2Processor.from_pretrained(models["owlv2"])
    model = Owlv2ForObjectDetection.from_pretrained(models["owlv2"]).eval()
    inputs = processor(images=image, text=[["a photo of a cat", "a photo of a dog"]], return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    scores = outputs.logits[0].max(dim=-1).values.sigmoid().numpy()
    boxes = (center_to_corners_format(outputs.pred_boxes[0]) * max(shape)).numpy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, shape[1])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, shape[0])
    for d in found:
        assert any(np.allclose(d.box, boxes[i], atol=1e-3) for i in np.flatnonzero(np.isclose(scores, d.score)))


def test_grounding_dino_splits_prompts_at_the_token_limit(models):
    """The tiny model takes 64 tokens: COCO-80 ("person. bicycle. …") needs several prompts, each within it."""
    detector = backend("grounding-dino", model=str(models["grounding-dino"]))
    lengths = []
    detector.detect(IMAGE, min_score=0.0, labels=["cat"])
    hook = loaded(detector, "model").register_forward_hook(
        lambda module, args, kwargs, output: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        found = detector.detect(IMAGE, min_score=0.0)
    finally:
        hook.remove()
    assert len(lengths) == 3 and max(lengths) <= 64
    check_detections(found, set(COCO_LABELS))

    capped = backend("grounding-dino", model=str(models["grounding-dino"]), labels_per_prompt=1)
    capped.detect(IMAGE, min_score=0.0, labels=["cat"])
    hook = loaded(capped, "model").register_forward_hook(
        lambda module, args, kwargs, output: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        capped.detect(IMAGE, min_score=0.0, labels=["cat", "dog"])
    finally:
        hook.remove()
    assert lengths[3:] == [4, 4]  # [CLS] cat . [SEP], then the same for dog


def test_prompt_chunks():
    labels = ["a", "bb", "ccc", "dddddd", "e"]
    assert prompt_chunks(labels) == [labels]
    assert prompt_chunks(labels, max_labels=2) == [["a", "bb"], ["ccc", "dddddd"], ["e"]]
    assert prompt_chunks(labels, tokens=len, budget=5) == [["a", "bb"], ["ccc"], ["dddddd"], ["e"]]
    assert prompt_chunks(labels, max_labels=1, tokens=len, budget=100) == [[x] for x in labels]
    with pytest.raises(ValueError, match="labels_per_prompt"):
        backend("owlv2", labels_per_prompt=0)


def test_phrases_map_to_one_requested_label():
    def words(text: str) -> list[str]:
        return re.findall(r"\w+|[^\w\s]", text)

    assert phrase_label("dog", ["cat", "dog"], words) == "dog"
    assert phrase_label("light", ["traffic light", "light"], words) == "light"
    assert phrase_label("teddy", ["teddy bear", "bear"], words) == "teddy bear"
    assert phrase_label("cat. dog. traffic light. [SEP]", ["cat", "traffic light"], words) == "traffic light"
    assert phrase_label("red car", ["red ball", "car"], words) == "car"  # all of "car" beats half of "red ball"
    assert phrase_label("cat dog", ["dog", "cat"], words) == "dog"  # a full tie: the earlier label
    assert phrase_label(". [SEP]", ["cat"], words) is None
    assert phrase_label("horse", ["cat", "dog"], words) is None


def test_grounding_dino_py_says_what_to_install():
    try:
        require_groundingdino()
    except GroundingDinoPyUnavailable:
        pass
    else:
        pytest.skip("groundingdino-py runs in this environment: its end-to-end test covers it")
    detector = backend("grounding-dino-py", checkpoint="/nowhere/groundingdino_swint_ogc.pth")  # loads nothing yet
    with pytest.raises(GroundingDinoPyUnavailable, match=r"groundingdino-py==0\.4\.0 transformers==4\.57\.6"):
        detector.detect(IMAGE, labels=["cat"])


def test_grounding_dino_py_end_to_end(tmp_path_factory, monkeypatch):
    try:
        require_groundingdino()
    except GroundingDinoPyUnavailable as exc:
        pytest.skip(f"groundingdino-py cannot run in this environment: {exc}")
    import huggingface_hub.constants
    import transformers
    from tiny_detectors import build_tiny_groundingdino_py

    options = build_tiny_groundingdino_py(tmp_path_factory.mktemp("gdino-py"))
    detector = backend("grounding-dino-py", **options, vocabulary=["dog", "bicycle"])
    assert detector.ctx.models.loaded() == {}
    check_detections(detector.detect(IMAGE, min_score=0.0, labels=["cat", "dog"]), {"cat", "dog"})
    check_detections(detector.detect(IMAGE, min_score=0.0), {"dog", "bicycle"})
    assert [k.split(":")[1] for k in detector.ctx.models.loaded()] == ["model"]
    assert detector.resolve_label("A  Dog") == "dog"

    missing = backend("grounding-dino-py", **{**options, "checkpoint": "/nowhere/groundingdino_swint_ogc.pth"})
    with pytest.raises(MissingWeightsError, match=r"/nowhere/groundingdino_swint_ogc\.pth.*To fix"):
        missing.detect(IMAGE, labels=["cat"])
    empty = tmp_path_factory.mktemp("gdino-py-empty") / "empty.pth"
    torch.save({"model": {}}, empty)
    with pytest.raises(MissingWeightsError, match=r"lacks \d+ of the model's \d+ tensors.*config_file"):
        backend("grounding-dino-py", **{**options, "checkpoint": str(empty)}).detect(IMAGE, labels=["cat"])
    # the released config names bert-base-uncased: with no text_encoder folder it must come from the hub cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub-cache")))
    with pytest.raises(MissingWeightsError, match=r"bert-base-uncased is not in the local hub cache.*text_encoder"):
        backend("grounding-dino-py", checkpoint=options["checkpoint"]).detect(IMAGE, labels=["cat"])
    monkeypatch.setattr(transformers, "__version__", "5.0.0")
    with pytest.raises(GroundingDinoPyUnavailable, match="get_extended_attention_mask.*transformers==4.57.6"):
        require_groundingdino()
