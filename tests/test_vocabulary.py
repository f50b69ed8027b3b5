"""The ImageNet-1k vocabulary: its data, its knowledge cards, free text -> vocabulary, the classifier on photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cielr_agent.prompts import load_knowledge
from cielr_agent.tools.embedded.coco_detection import COCO_LABELS
from cielr_agent.tools.embedded.imagenet_vocabulary import coco_label, display_labels, find_class, imagenet_classes
from cielr_agent.tools.embedded.label_mapping import normalise

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
WORDNET = Path("/usr/share/wordnet")  # Debian/Ubuntu package wordnet-base

# ------------------------------------------------------------------------------------------ the data


def test_vocabulary_has_the_1000_classes_in_model_order():
    classes = imagenet_classes()
    assert [c.index for c in classes] == list(range(1000))
    wnids = [c.wnid for c in classes]
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000  # ILSVRC orders its classes by synset id
    assert classes[0].names == ("tench", "Tinca tinca") and classes[999].label == "toilet paper"


def test_display_labels_are_unique_and_readable():
    labels = display_labels()
    assert len({label.lower() for label in labels}) == 1000
    assert [find_class(n).index for n in ("crane bird", "crane", "tights", "one-piece swimsuit")] == [134, 517, 638, 639]
    assert find_class("trash can").names[0] == "ashcan" and find_class("kite bird").names[0] == "kite"
    assert "speaker" in find_class("loudspeaker").synonyms and "Tinca tinca" not in imagenet_classes()[0].synonyms
    # a class that is the same thing as a COCO class goes by the COCO label; no other display label is one
    assert {label for label in labels if label in COCO_LABELS} >= {"cell phone", "remote", "tv", "keyboard", "mouse"}
    assert all(coco_label(label) == label for label in labels if label in COCO_LABELS)


def test_each_name_leads_to_one_class():
    owner: dict[str, int] = {}
    for cls in imagenet_classes():
        for name in (cls.label, *cls.synonyms):
            key = normalise(name, keep_determiners=True)
            assert owner.setdefault(key, cls.index) == cls.index, f"{name!r}: classes {owner[key]} and {cls.index}"


def test_every_display_label_has_a_short_card():
    cards = json.loads((ROOT / "prompts" / "v1" / "imagenet_cards.json").read_text(encoding="utf-8"))
    assert list(cards) == list(display_labels())
    assert all(0 < len(card) <= 200 and card[0].isupper() for card in cards.values())
    knowledge = load_knowledge("v1")
    assert set(display_labels()) <= set(knowledge) and list(knowledge)[:80] == list(COCO_LABELS)
    coco_cards = json.loads((ROOT / "prompts" / "v1" / "knowledge_cards.json").read_text(encoding="utf-8"))
    assert knowledge["tv"] == coco_cards["tv"] != cards["tv"]  # COCO wins where both have the label
    assert "sound" in knowledge["loudspeaker"] and "rubbish" in knowledge["trash can"]
    assert load_knowledge("v4") == knowledge  # v4 extends v3, which extends v1


def test_custom_prompt_set_without_imagenet_cards(tmp_path):
    (tmp_path / "knowledge_cards.json").write_text('{"dog": "barks"}')
    assert load_knowledge(str(tmp_path)) == {"dog": "barks"}


def test_coco_label_an_imagenet_class_falls_under():
    classes = imagenet_classes()
    assert {coco_label(i) for i in range(151, 269)} == {"dog"}  # the 118 dog breeds
    assert [coco_label(n) for n in ("tabby cat", "Siamese cat", "sports car", "minivan", "pickup truck", "bald eagle",
                                    "kite bird", "goblet", "computer monitor", "ox", "hot dog")] == [
        "cat", "cat", "car", "car", "truck", "bird", "bird", "wine glass", "tv", "cow", "hot dog"]  # fmt: skip
    assert [coco_label(n) for n in ("tiger", "timber wolf", "trash can", "loudspeaker", "punching bag")] == [None] * 5
    assert coco_label("dog") == "dog" and coco_label("unicorn") is None
    assert all(c.coco is None or c.coco in COCO_LABELS for c in classes)
    assert sum(c.coco is not None for c in classes) > 300


@pytest.mark.assets
@pytest.mark.skipif(not (WORDNET / "data.noun").exists(), reason="WordNet 3.0 files missing (apt-get install wordnet-base)")
def test_build_script_reproduces_the_committed_files():
    from cielr_agent.assets import is_ready

    if not is_ready("efficientnet-lite3"):
        pytest.skip("efficientnet-lite3 not set up (cielr setup)")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_imagenet_vocabulary.py"), "--check"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------- free text -> vocabulary


@pytest.fixture(scope="module")
def mapper():
    from cielr_agent.assets import is_ready

    if not is_ready("minilm"):
        pytest.skip("MiniLM not set up: run `cielr setup`")
    from cielr_agent.tools.embedded.vocabulary_mapping import VocabularyMapper

    return VocabularyMapper()


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("trash bin", "trash can"), ("the garbage can", "trash can"), ("speaker", "loudspeaker"),
        ("the speakers next to the TV", "loudspeaker"), ("clock on the wall", "wall clock"), ("wall clock", "wall clock"),
        ("a pickup truck", "pickup truck"), ("monitor", "computer monitor"), ("plane", "airplane"),
        ("four-poster", "four-poster bed"), ("tabby", "tabby cat"), ("the puppies", "dog"), ("a red car", "car"),
        ("office chair", "chair"), ("television", "tv"), ("kite", "kite"), ("the husky dog", "Siberian husky"),
    ],
)  # fmt: skip
def test_resolve_by_name(mapper, text, label):
    assert mapper.resolve(text) == label


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("road sign", {"street sign"}), ("laundry machine", {"washing machine"}), ("hoodie", {"sweatshirt"}),
        ("shark", {"great white shark", "tiger shark", "hammerhead shark"}), ("guitar", {"acoustic guitar", "electric guitar"}),
        ("coffee machine", {"espresso maker", "coffeepot"}), ("camera", {"SLR camera", "Polaroid camera"}),
    ],
)  # fmt: skip
def test_resolve_by_embedding(mapper, text, labels):
    assert mapper.resolve(text) in labels


@pytest.mark.parametrize("text", ["a unicorn", "the sky", "tree", "road", "hair", "snow", "sword", "printer paper", ""])
def test_resolve_rejects_what_the_vocabulary_lacks(mapper, text):
    assert mapper.resolve(text) is None


def test_map_ranks_coco_and_imagenet_names(mapper):
    ranked = mapper.map("a loud speaker box", top_k=3)
    assert ranked[0][0] == "loudspeaker" and ranked[0][1] >= ranked[1][1] >= ranked[2][1]


# ------------------------------------------------------------------------------------ the classifier


def test_classifier_rejects_bad_images():
    from cielr_agent.tools.embedded.classifier import ImageNetClassifier

    with pytest.raises(ValueError, match="HxWx3 uint8"):
        ImageNetClassifier().classify(np.zeros((8, 8), np.uint8))


@pytest.fixture(scope="module")
def classifier():
    from cielr_agent.assets import is_ready

    if not is_ready("efficientnet-lite3"):
        pytest.skip("efficientnet-lite3 not set up (cielr setup)")
    pytest.importorskip("ai_edge_litert")
    from cielr_agent.tools.embedded.classifier import ImageNetClassifier

    return ImageNetClassifier()


def _photo(name: str) -> np.ndarray:
    path = PHOTOS / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


DOG = (126, 211, 310, 537)  # CenterNet's boxes on dog.jpg: the dog, and the pickup truck parked upper right
TRUCK = (468, 77, 681, 166)


@pytest.mark.assets
def test_classifier_names_the_dog_breed_and_the_truck(classifier):
    image = _photo("dog.jpg")
    dog = classifier.classify(image, DOG)
    assert len(dog) == 3 and dog[0][1] >= dog[1][1] >= dog[2][1] > 0
    assert coco_label(dog[0][0]) == "dog" and dog[0][1] > 0.5  # Alaskan malamute 0.68
    truck = classifier.classify(image, TRUCK)  # minivan, station wagon, tow truck
    assert {coco_label(label) for label, _ in truck} <= {"car", "truck", "bus"} and "truck" in {coco_label(l) for l, _ in truck}
    p = classifier.probabilities(image, DOG)
    assert p.shape == (1000,) and abs(float(p.sum()) - 1) < 1e-5
    assert classifier.classify_many(image, [DOG, TRUCK]) == [dog, truck]


@pytest.mark.assets
def test_classifier_regions_keep_the_aspect_and_can_grey_the_background(classifier):
    from cielr_agent.tools.embedded.classifier import PAD_VALUE, ImageNetClassifier

    image = _photo("dog.jpg")
    region = classifier.region(image, DOG)  # a tall box: padded left and right, not stretched
    assert region.shape == (280, 280, 3) and (region[:, :20] == PAD_VALUE).all() and not (region[:, 130:150] == PAD_VALUE).all()
    mask = np.zeros(image.shape[:2], bool)
    mask[300:500, 150:300] = True
    masked = ImageNetClassifier(mask_background=True).region(image, DOG, mask)
    assert (masked[:40] == PAD_VALUE).all() and not (masked[150:200, 120:160] == PAD_VALUE).all()
    assert (classifier.region(image, DOG, mask) == region).all()  # off by default
    with pytest.raises(ValueError, match="2 boxes but 1 masks"):
        classifier.classify_many(image, [DOG, TRUCK], [mask])
