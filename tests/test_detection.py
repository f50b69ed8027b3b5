"""COCO detection: the TFJS graph executor, CenterNet / NanoDet on real photos, free text -> COCO label."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from cielr_agent.tools.embedded.tfjs_graph import TfjsGraph

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "photos"


# ------------------------------------------------------------------ tiny hand-built TFJS graph models


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(values) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _strs(values) -> dict:
    return {"list": {"s": [base64.b64encode(v.encode()).decode() for v in values]}}


def _node(name: str, op: str, inputs=(), **attr) -> dict:
    return {"name": name, "op": op, "input": list(inputs), "attr": attr}


def _write_model(tmp_path: Path, nodes: list[dict], weights: dict[str, np.ndarray], quantize: dict | None = None):
    """model.json + one .bin shard; `quantize` maps weight name -> "uint8" | "uint16" | "float16".

    Returns (path, the weight values as the model stores them, i.e. after (de)quantization)."""
    quantize = quantize or {}
    specs, chunks, stored = [], [], {}
    for name, value in weights.items():
        value = np.asarray(value)
        dtype = "int32" if value.dtype.kind in "iu" else "float32"
        spec = {"name": name, "shape": list(value.shape), "dtype": dtype}
        q = quantize.get(name)
        if q in ("uint8", "uint16"):
            levels = 255 if q == "uint8" else 65535
            lo, hi = float(value.min()), float(value.max())
            scale = (hi - lo) / levels or 1.0
            codes = np.round((value - lo) / scale).astype(np.uint8 if q == "uint8" else "<u2")
            spec["quantization"] = {"dtype": q, "min": lo, "scale": scale, "original_dtype": dtype}
            chunks.append(codes.tobytes())
            stored[name] = (codes.astype(np.float32) * np.float32(scale) + np.float32(lo)).astype(np.float32)
        elif q == "float16":
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            chunks.append(value.astype("<f2").tobytes())
            stored[name] = value.astype(np.float16).astype(np.float32)
        else:
            arr = value.astype("<i4" if dtype == "int32" else "<f4")
            chunks.append(arr.tobytes())
            stored[name] = arr
        specs.append(spec)
        nodes = [_node(name, "Const", dtype={"type": "DT_INT32" if dtype == "int32" else "DT_FLOAT"}), *nodes]
    (tmp_path / "w.bin").write_bytes(b"".join(chunks))
    model = {
        "format": "graph-model",
        "modelTopology": {"node": nodes, "library": {}, "versions": {}},
        "weightsManifest": [{"paths": ["w.bin"], "weights": specs}],
    }
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    return path, stored


def _placeholder(name="x") -> dict:
    return _node(name, "Placeholder", dtype={"type": "DT_FLOAT"})


def _ref_conv(x, w, stride, depthwise=False):
    """Plain numpy NHWC convolution with TF 'SAME' padding (pad_total split, extra after)."""
    n, h, wd, c = x.shape
    kh, kw = w.shape[:2]
    oh, ow = -(-h // stride), -(-wd // stride)
    ph = max((oh - 1) * stride + kh - h, 0)
    pw = max((ow - 1) * stride + kw - wd, 0)
    xp = np.pad(x, [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)])
    outc = c * w.shape[3] if depthwise else w.shape[3]
    out = np.zeros((n, oh, ow, outc), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            if depthwise:  # [kh, kw, C, M] -> channel c*M + m
                out[:, i, j, :] = np.einsum("nhwc,hwcm->ncm", patch, w).reshape(n, -1)
            else:
                out[:, i, j, :] = np.einsum("nhwc,hwco->no", patch, w)
    return out


def test_fused_conv_with_quantized_weights_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 7, 6, 3)).astype(np.float32)
    weights = {
        "w": rng.normal(size=(3, 3, 3, 4)).astype(np.float32),
        "b": rng.normal(size=(4,)).astype(np.float32),
        "dw": rng.normal(size=(3, 3, 4, 2)).astype(np.float32),
        "db": rng.normal(size=(8,)).astype(np.float32),
    }
    conv_attr = dict(
        strides=_ints([1, 2, 2, 1]), dilations=_ints([1, 1, 1, 1]), padding=_s("SAME"), data_format=_s("NHWC")
    )
    nodes = [
        _placeholder(),
        _node("conv", "_FusedConv2D", ["x", "w", "b"], fused_ops=_strs(["BiasAdd", "Relu6"]), num_args={"i": "1"}, **conv_attr),
        _node("dwconv", "FusedDepthwiseConv2dNative", ["conv", "dw", "db"], fused_ops=_strs(["BiasAdd"]),
              num_args={"i": "1"}, **{**conv_attr, "strides": _ints([1, 1, 1, 1])}),
    ]  # fmt: skip
    path, stored = _write_model(tmp_path, nodes, weights, quantize={"w": "uint8", "b": "float16", "dw": "uint16"})
    graph = TfjsGraph(path)
    # the dequantized weights are what the model holds (uint8: at most half a step off the originals)
    assert np.abs(graph.weights["w"] - weights["w"]).max() <= (weights["w"].max() - weights["w"].min()) / 255 / 2 + 1e-6
    np.testing.assert_array_equal(graph.weights["w"], stored["w"])
    np.testing.assert_array_equal(graph.weights["b"], stored["b"])

    out = graph.run({"x": x}, ["conv", "dwconv"])
    conv = np.clip(_ref_conv(x, stored["w"], 2) + stored["b"], 0, 6)
    dw = _ref_conv(conv, stored["dw"], 1, depthwise=True) + stored["db"]
    assert out["conv"].shape == (1, 4, 3, 4) and out["dwconv"].shape == (1, 4, 3, 8)
    np.testing.assert_allclose(out["conv"], conv, atol=1e-4)
    np.testing.assert_allclose(out["dwconv"], dw, atol=1e-4)


@pytest.mark.parametrize(
    ("align_corners", "half_pixel", "size", "expected"),
    [
        (False, False, 6, [0, 0.5, 1, 1.5, 2, 2]),  # TF legacy: src = dst * in/out
        (False, True, 6, [0, 0.25, 0.75, 1.25, 1.75, 2]),  # half-pixel centres, clamped at the edges
        (True, False, 5, [0, 0.5, 1, 1.5, 2]),  # corners aligned
    ],
)
def test_resize_bilinear_follows_tf_modes(tmp_path, align_corners, half_pixel, size, expected):
    nodes = [
        _placeholder(),
        _node("resize", "ResizeBilinear", ["x", "size"], align_corners={"b": align_corners}, half_pixel_centers={"b": half_pixel}),
    ]
    path, _ = _write_model(tmp_path, nodes, {"size": np.array([2, size], np.int32)})
    x = np.array([0, 1, 2], np.float32).reshape(1, 1, 3, 1).repeat(2, axis=1)
    out = TfjsGraph(path).run({"x": x}, ["resize"])["resize"]
    assert out.shape == (1, 2, size, 1)
    np.testing.assert_allclose(out[0, 0, :, 0], expected, atol=1e-6)


def _run_op(tmp_path, op: str, x: np.ndarray, consts: dict[str, np.ndarray], outputs=("op",), **attr):
    nodes = [_placeholder(), _node("op", op, ["x", *consts], **attr)]
    path, _ = _write_model(tmp_path, nodes, consts)
    result = TfjsGraph(path).run({"x:0": x}, list(outputs))
    return [result[o] for o in outputs]


def test_small_ops_match_numpy(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 5, 5, 3)).astype(np.float32)

    (pooled,) = _run_op(tmp_path, "MaxPool", x, {}, ksize=_ints([1, 3, 3, 1]), strides=_ints([1, 2, 2, 1]),
                        padding=_s("SAME"), data_format=_s("NHWC"))  # fmt: skip
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=-np.inf)
    ref = np.stack([padded[:, i : i + 3, j : j + 3].max(axis=(1, 2)) for i in (0, 2, 4) for j in (0, 2, 4)], 1)
    np.testing.assert_allclose(pooled, ref.reshape(1, 3, 3, 3))

    (mean,) = _run_op(tmp_path, "Mean", x, {"axes": np.array([1, 2], np.int32)}, keep_dims={"b": True})
    np.testing.assert_allclose(mean, x.mean(axis=(1, 2), keepdims=True), atol=1e-6)

    flat = x.reshape(1, -1)
    values, indices = _run_op(tmp_path, "TopKV2", flat, {"k": np.array(5, np.int32)}, outputs=("op", "op:1"))
    order = np.argsort(-flat[0], kind="stable")[:5]
    np.testing.assert_array_equal(indices[0], order)
    np.testing.assert_allclose(values[0], flat[0, order])

    parts = _run_op(tmp_path, "SplitV", x, {"sizes": np.array([1, -1], np.int32), "axis": np.array(3, np.int32)},
                    outputs=("op", "op:1"))  # fmt: skip
    np.testing.assert_array_equal(parts[0], x[..., :1])
    np.testing.assert_array_equal(parts[1], x[..., 1:])

    ss = {"b": np.array([0, 1, 0], np.int32), "e": np.array([0, 4, 2], np.int32), "s": np.array([1, 2, 1], np.int32)}
    (sliced,) = _run_op(tmp_path, "StridedSlice", x.reshape(5, 5, 3), ss, begin_mask={"i": "0"}, end_mask={"i": "4"},
                        shrink_axis_mask={"i": "1"})  # fmt: skip
    np.testing.assert_array_equal(sliced, x.reshape(5, 5, 3)[0, 1:4:2, :])

    (padded2,) = _run_op(tmp_path, "Pad", x, {"p": np.array([[0, 0], [1, 0], [0, 2], [0, 0]], np.int32)})
    np.testing.assert_array_equal(padded2, np.pad(x, [(0, 0), (1, 0), (0, 2), (0, 0)]))

    (gathered,) = _run_op(tmp_path, "GatherV2", x.reshape(25, 3), {"i": np.array([4, 0], np.int32), "a": np.array(0, np.int32)})
    np.testing.assert_array_equal(gathered, x.reshape(25, 3)[[4, 0]])

    (dense,) = _run_op(tmp_path, "SparseToDense", np.zeros((0, 1), np.float32),
                       {"shape": np.array([3], np.int32), "v": np.zeros((0,), np.int32), "d": np.array(0, np.int32)})  # fmt: skip
    np.testing.assert_array_equal(dense, np.zeros(3))


def _tf_pads(size: int, k: int, s: int, d: int, padding: str) -> tuple[int, int]:
    if padding == "VALID":
        return 0, 0
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2  # TF SAME: the extra pixel goes after


def _torch_reference(op: str, x: np.ndarray, w_or_k, stride: int, dilation: int, padding: str) -> np.ndarray:
    """The op computed by torch (NCHW) on the TF-padded input, back in NHWC."""
    torch = pytest.importorskip("torch", reason="the full extra is not installed (pip install -e '.[full]')")
    F = torch.nn.functional
    k = w_or_k.shape[0] if op in ("conv", "depthwise") else w_or_k
    top, bottom = _tf_pads(x.shape[1], k, stride, dilation, padding)
    left, right = _tf_pads(x.shape[2], k, stride, dilation, padding)
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    if op == "max":
        y = F.max_pool2d(F.pad(t, (left, right, top, bottom), value=-np.inf), k, stride)
    elif op == "avg":  # TF averages the valid (unpadded) part of each window only
        ones = F.pad(torch.ones_like(t[:, :1]), (left, right, top, bottom))
        y = F.avg_pool2d(F.pad(t, (left, right, top, bottom)), k, stride) / F.avg_pool2d(ones, k, stride)
    else:
        w = w_or_k
        if op == "depthwise":  # [KH, KW, C, M] -> [C*M, 1, KH, KW]: output channel c*M + m
            filt = w.reshape(*w.shape[:2], -1).transpose(2, 0, 1)[:, None]
        else:  # [KH, KW, C, O] -> [O, C, KH, KW]
            filt = w.transpose(3, 2, 0, 1)
        y = F.conv2d(F.pad(t, (left, right, top, bottom)), torch.from_numpy(np.ascontiguousarray(filt)),
                     stride=stride, dilation=dilation, groups=x.shape[3] if op == "depthwise" else 1)  # fmt: skip
    return y.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(
    ("op", "shape", "kernel", "stride", "dilation", "padding"),
    [
        ("conv", (1, 9, 8, 5), (3, 3, 5, 7), 1, 1, "SAME"),
        ("conv", (2, 8, 9, 5), (3, 3, 5, 7), 2, 1, "SAME"),  # 8 rows: padding 0 before, 1 after
        ("conv", (1, 9, 8, 5), (1, 1, 5, 7), 1, 1, "SAME"),
        ("conv", (1, 9, 8, 5), (1, 1, 5, 7), 2, 1, "VALID"),
        ("conv", (1, 11, 10, 5), (3, 3, 5, 7), 1, 2, "SAME"),
        ("conv", (1, 11, 10, 5), (3, 3, 5, 7), 2, 1, "VALID"),
        ("conv", (1, 16, 16, 3), (3, 3, 3, 16), 2, 1, "SAME"),  # CenterNet's stem
        ("depthwise", (1, 9, 8, 6), (3, 3, 6, 1), 1, 1, "SAME"),
        ("depthwise", (2, 8, 9, 6), (3, 3, 6, 2), 2, 1, "SAME"),
        ("depthwise", (1, 12, 11, 6), (5, 5, 6, 1), 2, 1, "SAME"),
        ("depthwise", (1, 11, 10, 6), (3, 3, 6, 2), 1, 2, "VALID"),
        ("max", (1, 8, 9, 5), 3, 2, 1, "SAME"),
        ("max", (1, 9, 8, 5), 3, 1, 1, "SAME"),
        ("max", (1, 9, 9, 5), 3, 2, 1, "VALID"),
        ("avg", (1, 8, 9, 5), 3, 2, 1, "SAME"),
        ("avg", (1, 9, 8, 5), 3, 1, 1, "SAME"),
        ("avg", (1, 9, 8, 5), 2, 2, 1, "VALID"),
    ],
)
def test_convolutions_and_pools_match_torch(tmp_path, op, shape, kernel, stride, dilation, padding):
    rng = np.random.default_rng(sum(shape) + stride + dilation)
    x = rng.normal(size=shape).astype(np.float32)
    attr = dict(strides=_ints([1, stride, stride, 1]), padding=_s(padding), data_format=_s("NHWC"))
    if op in ("conv", "depthwise"):
        w = rng.normal(size=kernel).astype(np.float32)
        tf_op = "Conv2D" if op == "conv" else "DepthwiseConv2dNative"
        (out,) = _run_op(tmp_path, tf_op, x, {"w": w}, dilations=_ints([1, dilation, dilation, 1]), **attr)
        ref = _torch_reference(op, x, w, stride, dilation, padding)
    else:
        tf_op = "MaxPool" if op == "max" else "AvgPool"
        (out,) = _run_op(tmp_path, tf_op, x, {}, ksize=_ints([1, kernel, kernel, 1]), **attr)
        ref = _torch_reference(op, x, kernel, stride, 1, padding)
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_only_needed_nodes_run_and_unknown_ops_are_named(tmp_path):
    nodes = [_placeholder(), _node("relu", "Relu", ["x"]), _node("odd", "Cumsum", ["x", "ax"])]
    path, _ = _write_model(tmp_path, nodes, {"ax": np.array(0, np.int32)})
    graph = TfjsGraph(path)
    x = np.array([[-1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(graph.run({"x": x}, ["relu"])["relu"], [[0.0, 2.0]])
    with pytest.raises(NotImplementedError, match="TFJS op Cumsum"):
        graph.run({"x": x}, ["odd"])


# ---------------------------------------------------------------------------- detectors on real photos


def _ready(name: str) -> bool:
    from cielr_agent.assets import is_ready

    return is_ready(name)


def _photo(name: str) -> np.ndarray:
    path = PHOTOS / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def centernet():
    if not _ready("centernet"):
        pytest.skip("CenterNet not set up (cielr setup)")
    from cielr_agent.tools.embedded.coco_detection import make_detector

    return make_detector("centernet")


@pytest.fixture(scope="module")
def nanodet():
    if not _ready("nanodet"):
        pytest.skip("NanoDet not set up (cielr setup)")
    from cielr_agent.tools.embedded.coco_detection import make_detector

    return make_detector("nanodet")


def _centre(box, width, height):
    return (box[0] + box[2]) / 2 / width, (box[1] + box[3]) / 2 / height


def _best(dets, label):
    return max((d for d in dets if d.label == label), key=lambda d: d.score)


def _check_well_formed(dets, width, height):
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    for d in dets:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert all(isinstance(v, float) for v in d.box) and isinstance(d.score, float)


@pytest.mark.assets
def test_centernet_dog_photo(centernet):
    image = _photo("dog.jpg")
    height, width = image.shape[:2]
    # the pickup truck scores ~0.28 as "truck" (its top label is "car", 0.52), so look a bit lower
    dets = centernet.detect(image, min_score=0.25)
    _check_well_formed(dets, width, height)
    assert {"dog", "bicycle", "truck"} <= {d.label for d in dets}
    bx, by = _centre(_best(dets, "bicycle").box, width, height)
    assert 0.35 < bx < 0.65 and 0.35 < by < 0.65  # the bicycle fills the middle
    dx, dy = _centre(_best(dets, "dog").box, width, height)
    assert dx < 0.4 and dy > 0.55  # the dog sits lower left
    tx, ty = _centre(_best(dets, "truck").box, width, height)
    assert tx > 0.6 and ty < 0.3  # the truck is parked upper right
    dog = _best(dets, "dog").box
    assert dog[3] - dog[1] > 0.45 * height and dog[2] - dog[0] < 0.35 * width

    only_dogs = centernet.detect(image, min_score=0.25, labels=["dog"])
    assert only_dogs and {d.label for d in only_dogs} == {"dog"}
    with pytest.raises(ValueError):
        centernet.detect(image, labels=["puppy"])


# CenterNet on examples/dog.jpg (min_score 0.2), recorded when the convolutions still ran through torch
CENTERNET_DOG = [
    ("bicycle", 0.5440, (115.85, 134.65, 562.45, 475.22)),
    ("car", 0.5220, (468.29, 77.32, 681.12, 165.61)),
    ("dog", 0.3792, (126.08, 211.18, 310.11, 537.07)),
    ("truck", 0.2768, (468.29, 77.32, 681.12, 165.61)),
    ("potted plant", 0.2210, (58.86, 80.01, 104.70, 126.27)),
    ("car", 0.2196, (688.72, 115.96, 719.60, 156.17)),
    ("car", 0.2185, (708.50, 10.37, 761.44, 266.65)),
    ("parking meter", 0.2137, (419.93, 96.01, 454.01, 136.95)),
]


@pytest.mark.assets
def test_centernet_dog_detections_unchanged(centernet):
    from cielr_agent.imaging import load_image

    dets = centernet.detect(load_image(Path(__file__).resolve().parents[1] / "examples" / "dog.jpg"), min_score=0.2)
    assert [d.label for d in dets] == [label for label, _, _ in CENTERNET_DOG]
    np.testing.assert_allclose([d.score for d in dets], [score for _, score, _ in CENTERNET_DOG], atol=1e-3)
    np.testing.assert_allclose([d.box for d in dets], [box for _, _, box in CENTERNET_DOG], atol=0.5)


@pytest.mark.assets
def test_centernet_boxes_map_back_to_original_pixels(centernet):
    image = _photo("dog.jpg")
    big = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)  # same picture at twice the size
    small = _best(centernet.detect(image), "bicycle").box
    large = _best(centernet.detect(big), "bicycle").box
    np.testing.assert_allclose(np.array(large) / 2, small, atol=6)


@pytest.mark.assets
def test_centernet_horses_and_person_photos(centernet):
    horses = centernet.detect(_photo("horses.jpg"))
    assert horses[0].label == "horse" and sum(d.label == "horse" for d in horses) >= 2
    image = _photo("person.jpg")
    dets = centernet.detect(image, min_score=0.25)  # the horse is also read as cow / sheep at ~0.35
    _check_well_formed(dets, image.shape[1], image.shape[0])
    assert {"person", "dog", "horse"} <= {d.label for d in dets}
    assert dets[0].label == "person"
    hx, _ = _centre(_best(dets, "horse").box, image.shape[1], image.shape[0])
    assert hx > 0.6  # the horse stands on the right


@pytest.mark.assets
def test_nanodet_dog_photo(nanodet):
    image = _photo("dog.jpg")
    height, width = image.shape[:2]
    dets = nanodet.detect(image)
    _check_well_formed(dets, width, height)
    assert {"dog", "bicycle"} <= {d.label for d in dets}
    bx, by = _centre(_best(dets, "bicycle").box, width, height)
    assert 0.35 < bx < 0.65 and 0.35 < by < 0.65
    dx, dy = _centre(_best(dets, "dog").box, width, height)
    assert dx < 0.45 and dy > 0.55


def test_make_detector_rejects_unknown_names():
    from cielr_agent.tools.embedded.coco_detection import COCO_LABELS, make_detector

    assert len(COCO_LABELS) == 80 and len(set(COCO_LABELS)) == 80
    with pytest.raises(ValueError):
        make_detector("yolo")


# ------------------------------------------------------------------------------- free text -> COCO


@pytest.fixture(scope="module")
def mapper():
    from cielr_agent.assets import is_ready

    if not is_ready("minilm"):
        pytest.skip("MiniLM not set up: run `cielr setup`")
    from cielr_agent.tools.embedded.label_mapping import CocoLabelMapper

    return CocoLabelMapper()


def test_minilm_build_needs_no_torch_and_is_deterministic(mapper, tmp_path):
    """`cielr setup` builds minilm.onnx with torch and transformers unimportable, byte-identical to the set-up one."""
    import shutil
    import subprocess
    import sys

    from cielr_agent.assets import asset_dir

    folder = asset_dir("minilm")
    shutil.copy(folder / "model.safetensors", tmp_path)
    code = ("import sys; sys.modules['torch'] = sys.modules['transformers'] = None\n"
            "from pathlib import Path; from cielr_agent.tools.embedded.minilm import build_asset\n"
            f"build_asset(Path({str(tmp_path)!r}))")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "minilm.onnx").read_bytes() == (folder / "minilm.onnx").read_bytes()


@pytest.mark.parametrize(("text", "label", "similarity"), [
    ("poodle", "dog", 0.70), ("wall clock", "clock", 0.84), ("speedboat", "boat", 0.77), ("labrador", "dog", 0.60),
    ("golden retriever", "dog", 0.587), ("unicorn", "horse", 0.54), ("tree", "chair", 0.43)])
def test_minilm_on_onnxruntime_reproduces_the_sentence_transformers_calibration(mapper, text, label, similarity):
    """The threshold was calibrated with sentence-transformers; the ONNX graph gives the same similarities."""
    (best, sim), = mapper.map(text, top_k=1)
    assert best == label and abs(sim - similarity) < 0.006


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("bike", "bicycle"), ("Bikes", "bicycle"), ("pickup truck", "truck"), ("puppy", "dog"),
        ("the dogs", "dog"), ("people", "person"), ("a man", "person"), ("woman", "person"),
        ("motorbike", "motorcycle"), ("sofa", "couch"), ("tv", "tv"), ("television", "tv"),
        ("plant", "potted plant"), ("table", "dining table"), ("phone", "cell phone"),
        ("hot dogs", "hot dog"), ("a brown teddy bear", "teddy bear"), ("a man riding a horse", "person"),
        ("cup of coffee", "cup"), ("Traffic-Lights", "traffic light"), ("two horses", "horse"),
    ],
)  # fmt: skip
def test_resolve_synonyms_and_plurals(mapper, text, label):
    assert mapper.resolve(text) == label


@pytest.mark.parametrize(("text", "label"), [("poodle", "dog"), ("wall clock", "clock"), ("speedboat", "boat")])
def test_resolve_by_embedding(mapper, text, label):
    assert mapper.resolve(text) == label


@pytest.mark.parametrize("text", ["a unicorn", "the sky", "tree", "hair", "snow", "road", ""])
def test_resolve_rejects_undetectable_things(mapper, text):
    assert mapper.resolve(text) is None


def test_map_ranks_labels_by_similarity(mapper):
    ranked = mapper.map("kitten", top_k=3)
    assert len(ranked) == 3 and ranked[0][0] == "cat"
    assert ranked[0][1] >= ranked[1][1] >= ranked[2][1]
    assert 0.6 < ranked[0][1] <= 1.0
