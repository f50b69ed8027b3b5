"""A small executor for TensorFlow.js graph models (model.json + .bin weight shards), without TensorFlow.

It evaluates only the nodes the requested outputs depend on, in topological order, with numpy alone (no
torch: importing it would cost every fresh process more time and memory than the models' inference). Tensors
are numpy arrays in TF layout (NHWC). Convolutions and pools walk the kernel positions: each position sees a
strided view of the padded input, which is matmul'd with that position's weights (BLAS does the work),
multiplied elementwise (depthwise) or folded in with max / sum (pools). Only the ops the embedded detectors
need (plus a few trivial ones) are implemented; any other op raises `NotImplementedError` naming it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

_DTYPES = {  # TF DataType -> numpy (TFJS stores int64 weights as int32)
    "DT_FLOAT": np.float32,
    "DT_HALF": np.float16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_BOOL": np.bool_,
    "DT_UINT8": np.uint8,
}
_MANIFEST_DTYPES = {"float32": "<f4", "int32": "<i4", "bool": "|b1", "float16": "<f2", "uint8": "|u1", "uint16": "<u2"}


def load_weights(model_json: Path, manifest: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Decode every weight of a TFJS weights manifest (float32/int32/bool, float16 or uint8/uint16 quantized)."""
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        buf = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = [int(d) for d in spec["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            stored = quant["dtype"] if quant else spec["dtype"]
            if stored not in _MANIFEST_DTYPES:
                raise NotImplementedError(f"TFJS weight dtype {stored!r} ({spec['name']}) is not supported")
            raw = np.frombuffer(buf, dtype=_MANIFEST_DTYPES[stored], count=count, offset=offset)
            offset += raw.nbytes
            target = _MANIFEST_DTYPES[spec["dtype"]]
            if quant and stored in ("uint8", "uint16"):
                value = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
                if spec["dtype"] == "int32":
                    value = np.round(value)
            else:
                value = raw
            weights[spec["name"]] = np.array(value, dtype=target).reshape(shape)  # owned, writable copy
    return weights


def _attr(node: dict[str, Any], key: str, default: Any = None) -> Any:
    """A node attribute as a plain Python value (bytes are decoded from base64 to str)."""
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "f" in lst:
            return [float(v) for v in lst["f"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        return []
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    if "b" in a:
        return bool(a["b"])
    if "type" in a:
        return a["type"]
    return default


# ---------------------------------------------------------------------------------------------- helpers


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TF 'SAME' padding (the extra pixel goes after)."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _spatial_pads(node: dict, x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int) -> list[int]:
    """[top, bottom, left, right] padding for an NHWC op."""
    padding = _attr(node, "padding", "VALID")
    if padding == "SAME":
        return [*_same_pads(x.shape[1], kh, sh, dh), *_same_pads(x.shape[2], kw, sw, dw)]
    if padding == "EXPLICIT":
        p = _attr(node, "explicit_paddings", [0] * 8)
        return [p[2], p[3], p[4], p[5]]
    if padding == "VALID":
        return [0, 0, 0, 0]
    raise NotImplementedError(f"TFJS padding {padding!r} is not supported")


def _check_nhwc(node: dict) -> None:
    if _attr(node, "data_format", "NHWC") != "NHWC":
        fmt = _attr(node, "data_format")
        raise NotImplementedError(f"TFJS op {node['op']} with data_format {fmt} is not supported")


def _pad(x: np.ndarray, pads: list[int], value: float) -> np.ndarray:
    """NHWC `x` as float32, padded by [top, bottom, left, right] with `value`."""
    top, bottom, left, right = pads
    n, h, w, c = x.shape
    out = np.full((n, h + top + bottom, w + left + right, c), value, np.float32)
    out[:, top : top + h, left : left + w] = x
    return out


def _taps(x: np.ndarray, pads: list[int], kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, value: float = 0.0):
    """Yield (i, j, view) per kernel position: the (N, OH, OW, C) part of the padded input that tap (i, j) sees.

    With strides > 1 the padded input is first split into its phases x[:, a::sh, b::sw] (each copied once), so
    every view has contiguous rows: numpy and BLAS then run over long inner loops.
    """
    xp = _pad(x, pads, value) if any(pads) else np.ascontiguousarray(x, dtype=np.float32)
    oh = (xp.shape[1] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[2] - (kw - 1) * dw - 1) // sw + 1
    phases: dict[tuple[int, int], np.ndarray] = {}
    for i in range(kh):
        for j in range(kw):
            (r, a), (q, b) = divmod(i * dh, sh), divmod(j * dw, sw)
            if (a, b) not in phases:
                phases[a, b] = xp if sh == sw == 1 else np.ascontiguousarray(xp[:, a::sh, b::sw])
            yield i, j, phases[a, b][:, r : r + oh, q : q + ow]


def _conv2d(x: np.ndarray, w: np.ndarray, pads: list[int], strides, dilations) -> np.ndarray:
    """NHWC convolution with a [KH, KW, C, O] filter: the sum over kernel positions of input view @ w[i, j]."""
    kh, kw, c, o = w.shape
    if kh == kw == 1 and strides == (1, 1) and not any(pads):
        return (x.reshape(-1, c) @ w[0, 0]).reshape(*x.shape[:3], o)
    out = None
    for i, j, view in _taps(x, pads, kh, kw, *strides, *dilations):
        if out is None:
            out = view @ w[i, j]
        else:
            out += view @ w[i, j]
    return out


def _depthwise_conv2d(x: np.ndarray, w: np.ndarray, pads: list[int], strides, dilations) -> np.ndarray:
    """NHWC depthwise convolution with a [KH, KW, C, M] filter (output channel c*M + m): the sum over kernel
    positions of input view * w[i, j]."""
    kh, kw, c, m = w.shape
    if m > 1:
        x = np.repeat(x, m, axis=3)  # output channel c*M + m reads input channel c
    out = tmp = wt = None
    for i, j, view in _taps(x, pads, kh, kw, *strides, *dilations):
        if out is None:
            # one weight per (column, channel), so each multiply runs over whole rows (OW*C), not C at a time
            wt = np.tile(w.reshape(kh, kw, 1, c * m), (1, 1, view.shape[2], 1))
            out = view * wt[i, j]
            tmp = np.empty_like(out)
        else:
            out += np.multiply(view, wt[i, j], out=tmp)
    return out


def _conv(node: dict, x: np.ndarray, w: np.ndarray, depthwise: bool) -> np.ndarray:
    _check_nhwc(node)
    _, sh, sw, _ = _attr(node, "strides", [1, 1, 1, 1])
    _, dh, dw, _ = _attr(node, "dilations", [1, 1, 1, 1])
    kh, kw = w.shape[:2]
    pads = _spatial_pads(node, x, kh, kw, sh, sw, dh, dw)
    x, w = np.asarray(x, dtype=np.float32), np.asarray(w, dtype=np.float32)
    return (_depthwise_conv2d if depthwise else _conv2d)(x, w, pads, (sh, sw), (dh, dw))


def _pool(node: dict, x: np.ndarray, kind: str) -> np.ndarray:
    """MaxPool (padding never wins) or AvgPool (averaging only the valid, unpadded part of each window, as TF)."""
    _check_nhwc(node)
    _, kh, kw, _ = _attr(node, "ksize")
    _, sh, sw, _ = _attr(node, "strides")
    pads = _spatial_pads(node, x, kh, kw, sh, sw, 1, 1)
    out = None
    for _, _, view in _taps(x, pads, kh, kw, sh, sw, 1, 1, -np.inf if kind == "max" else 0.0):
        if out is None:
            out = view.copy()
        elif kind == "max":
            np.maximum(out, view, out=out)
        else:
            out += view
    if kind == "avg":
        ones = np.ones((1, *x.shape[1:3], 1), np.float32)
        out /= sum(view for _, _, view in _taps(ones, pads, kh, kw, sh, sw, 1, 1))
    return out


def _activation(name: str, x: np.ndarray, node: dict, extra: Sequence[np.ndarray]) -> np.ndarray:
    if name == "Relu":
        return np.maximum(x, 0)
    if name == "Relu6":
        return np.clip(x, 0, 6)
    if name == "Elu":
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))
    if name == "Sigmoid":
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype, copy=False)
    if name == "LeakyRelu":
        return np.where(x >= 0, x, x * np.float32(_attr(node, "leakyrelu_alpha", 0.2)))
    if name == "Prelu":
        return np.where(x >= 0, x, x * extra[0])
    raise NotImplementedError(f"TFJS op {node['op']} with fused activation {name} is not supported")


def _fused_tail(node: dict, y: np.ndarray, args: Sequence[np.ndarray]) -> np.ndarray:
    """Apply a _Fused* node's `fused_ops` (BiasAdd / FusedBatchNorm, then an activation)."""
    ops = _attr(node, "fused_ops", [])
    i = 0
    for op in ops:
        if op == "BiasAdd":
            y = y + args[i]
            i += 1
        elif op == "FusedBatchNorm":
            scale, offset, mean, var = args[i : i + 4]
            i += 4
            y = (y - mean) * (scale / np.sqrt(var + np.float32(_attr(node, "epsilon", 1e-3)))) + offset
        else:
            y = _activation(op, y, node, args[i:])
            i += 1 if op == "Prelu" else 0
    return y.astype(np.float32, copy=False)


def _resize_axis(x: np.ndarray, axis: int, out: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """TF ResizeBilinear along one axis (same index/lerp arithmetic as TF's kernel)."""
    n = x.shape[axis]
    dst = np.arange(out, dtype=np.float64)
    if align_corners:
        src = dst * ((n - 1) / (out - 1) if out > 1 else 0.0)
    elif half_pixel:
        src = (dst + 0.5) * (n / out) - 0.5
    else:
        src = dst * (n / out)
    lo_f = np.floor(src)
    lo = np.clip(lo_f, 0, n - 1).astype(np.int64)
    hi = np.clip(np.ceil(src), 0, n - 1).astype(np.int64)
    shape = [1] * x.ndim
    shape[axis] = out
    frac = (src - lo_f).astype(np.float32).reshape(shape)
    a = np.take(x, lo, axis=axis)
    return a + (np.take(x, hi, axis=axis) - a) * frac


def _strided_slice(node: dict, x: np.ndarray, begin, end, strides) -> np.ndarray:
    begin_mask, end_mask = _attr(node, "begin_mask", 0), _attr(node, "end_mask", 0)
    ellipsis_mask, new_axis_mask = _attr(node, "ellipsis_mask", 0), _attr(node, "new_axis_mask", 0)
    shrink_mask = _attr(node, "shrink_axis_mask", 0)
    index: list[Any] = []
    for i in range(len(begin)):
        bit = 1 << i
        if ellipsis_mask & bit:
            index.append(Ellipsis)
        elif new_axis_mask & bit:
            index.append(None)
        elif shrink_mask & bit:
            index.append(int(begin[i]))
        else:
            b = None if begin_mask & bit else int(begin[i])
            e = None if end_mask & bit else int(end[i])
            index.append(slice(b, e, int(strides[i])))
    return x[tuple(index)]


def _top_k(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest k along the last axis, sorted descending; ties keep the lower index first (as TF)."""
    k = min(k, x.shape[-1])
    if k < x.shape[-1]:
        part = np.argpartition(-x, k - 1, axis=-1)[..., :k]
    else:
        part = np.broadcast_to(np.arange(x.shape[-1]), x.shape)
    order = np.lexsort((part, -np.take_along_axis(x, part, axis=-1)), axis=-1)
    idx = np.take_along_axis(part, order, axis=-1)
    return np.take_along_axis(x, idx, axis=-1), idx.astype(np.int32)


def _sparse_to_dense(indices, shape, values, default) -> np.ndarray:
    out = np.full([int(s) for s in np.atleast_1d(shape)], default, dtype=np.asarray(values).dtype)
    idx = np.asarray(indices)
    idx = idx.reshape(-1, 1) if idx.ndim < 2 else idx  # one row per value: [N, rank]
    if idx.size:
        out[tuple(idx.T)] = values
    return out


# -------------------------------------------------------------------------------------------- executor


class TfjsGraph:
    """A TFJS graph model (`format: graph-model`) evaluated with numpy."""

    def __init__(self, model_json: Path):
        model_json = Path(model_json)
        spec = json.loads(model_json.read_text())
        self.path = model_json
        self.signature: dict[str, Any] = spec.get("signature", {})
        self.nodes: dict[str, dict[str, Any]] = {n["name"]: n for n in spec["modelTopology"]["node"]}
        self.weights = load_weights(model_json, spec.get("weightsManifest", []))
        missing = [n for n, v in self.nodes.items() if v["op"] == "Const" and n not in self.weights]
        if missing:
            raise ValueError(f"{model_json}: Const nodes without weights: {missing[:5]}")
        self._plans: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
        self.input_names = [n for n, v in self.nodes.items() if v["op"] == "Placeholder"]
        self.output_names = list(self.signature.get("outputs", {}))

    # -- planning --------------------------------------------------------------------------------
    @staticmethod
    def _split(ref: str) -> tuple[str, int]:
        ref = ref.lstrip("^")
        name, _, idx = ref.partition(":")
        return name, int(idx) if idx.isdigit() else 0

    def _plan(self, outputs: tuple[str, ...], fed: tuple[str, ...]) -> list[str]:
        """Nodes needed for `outputs`, in dependency order (iterative DFS, fed nodes are leaves)."""
        key = (outputs, fed)
        if key not in self._plans:
            order: list[str] = []
            done: set[str] = set(fed)
            for out in outputs:
                stack = [(self._split(out)[0], False)]
                while stack:
                    name, expanded = stack.pop()
                    if name in done:
                        continue
                    if expanded:
                        done.add(name)
                        order.append(name)
                        continue
                    if name not in self.nodes:
                        raise KeyError(f"TFJS graph has no node {name!r}")
                    stack.append((name, True))
                    for ref in reversed(self.nodes[name].get("input", [])):
                        dep = self._split(ref)[0]
                        if dep not in done:
                            stack.append((dep, False))
            self._plans[key] = order
        return self._plans[key]

    # -- running ---------------------------------------------------------------------------------
    def run(self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Evaluate `outputs` (default: the signature outputs) given `inputs` (node or `node:0` names)."""
        outputs = list(outputs or self.output_names)
        values: dict[str, list[np.ndarray]] = {}
        for name, arr in inputs.items():
            node_name = self._split(name)[0]
            if node_name not in self.nodes:
                raise KeyError(f"TFJS graph has no input {name!r}")
            values[node_name] = [np.asarray(arr)]
        plan = self._plan(tuple(outputs), tuple(sorted(values)))
        # free intermediates after their last use
        last_use: dict[str, int] = {}
        for step, name in enumerate(plan):
            for ref in self.nodes[name].get("input", []):
                last_use[self._split(ref)[0]] = step
        keep = {self._split(o)[0] for o in outputs}
        for step, name in enumerate(plan):
            node = self.nodes[name]
            if node["op"] == "Placeholder":
                raise ValueError(f"TFJS graph input {name!r} was not fed")
            refs = [self._split(r) for r in node.get("input", []) if not r.startswith("^")]  # skip control edges
            args = [values[n][i] for n, i in refs]
            values[name] = self._eval(node, args)
            for ref in node.get("input", []):
                dep = self._split(ref)[0]
                if last_use.get(dep) == step and dep not in keep and self.nodes[dep]["op"] != "Const":
                    values.pop(dep, None)
        return {o: values[self._split(o)[0]][self._split(o)[1]] for o in outputs}

    def _eval(self, node: dict[str, Any], args: list[np.ndarray]) -> list[np.ndarray]:
        op = node["op"]
        if op == "Const":
            return [self.weights[node["name"]]]
        fn = _OPS.get(op)
        if fn is None:
            raise NotImplementedError(f"TFJS op {op} (node {node['name']!r}) is not supported by TfjsGraph")
        out = fn(node, *args)
        return [np.asarray(o) for o in out] if isinstance(out, tuple) else [np.asarray(out)]


def _resize_bilinear(node: dict, x: np.ndarray, size: np.ndarray) -> np.ndarray:
    h, w = (int(v) for v in size)
    ac, hp = bool(_attr(node, "align_corners", False)), bool(_attr(node, "half_pixel_centers", False))
    y = _resize_axis(x.astype(np.float32, copy=False), 1, h, ac, hp)
    return _resize_axis(y, 2, w, ac, hp)


def _split_v(node: dict, x: np.ndarray, sizes: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, ...]:
    axis = int(axis) % x.ndim
    sizes = [int(s) for s in sizes]
    if -1 in sizes:
        sizes[sizes.index(-1)] = x.shape[axis] - (sum(sizes) + 1)
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _reduce(fn: Callable[..., Any], node: dict, x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return fn(x, axis=tuple(np.atleast_1d(axes).tolist()), keepdims=bool(_attr(node, "keep_dims", False)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


_OPS: dict[str, Callable[..., Any]] = {
    "Identity": lambda n, x: x,
    "Add": lambda n, a, b: a + b,
    "AddV2": lambda n, a, b: a + b,
    "Sub": lambda n, a, b: a - b,
    "Mul": lambda n, a, b: a * b,
    "RealDiv": lambda n, a, b: a / b,
    "Maximum": lambda n, a, b: np.maximum(a, b),
    "Minimum": lambda n, a, b: np.minimum(a, b),
    "FloorDiv": lambda n, a, b: np.floor_divide(a, b),
    "FloorMod": lambda n, a, b: np.mod(a, b),
    "Equal": lambda n, a, b: np.equal(a, b),
    "Relu": lambda n, x: _activation("Relu", x, n, []),
    "Relu6": lambda n, x: _activation("Relu6", x, n, []),
    "Elu": lambda n, x: _activation("Elu", x, n, []),
    "Sigmoid": lambda n, x: _activation("Sigmoid", x, n, []),
    "LeakyRelu": lambda n, x: np.where(x >= 0, x, x * np.float32(_attr(n, "alpha", 0.2))),
    "Prelu": lambda n, x, a: _activation("Prelu", x, n, [a]),
    "Tanh": lambda n, x: np.tanh(x),
    "Exp": lambda n, x: np.exp(x),
    "Sqrt": lambda n, x: np.sqrt(x),
    "Rsqrt": lambda n, x: 1 / np.sqrt(x),
    "Softmax": lambda n, x: _softmax(x),
    "Cast": lambda n, x: x.astype(_DTYPES[_attr(n, "DstT")]),
    "Mean": lambda n, x, ax: _reduce(np.mean, n, x, ax).astype(x.dtype, copy=False),
    "Sum": lambda n, x, ax: _reduce(np.sum, n, x, ax),
    "Max": lambda n, x, ax: _reduce(np.max, n, x, ax),
    "Reshape": lambda n, x, shape: x.reshape([int(s) for s in np.atleast_1d(shape)]),
    "ExpandDims": lambda n, x, ax: np.expand_dims(x, int(ax)),
    "Squeeze": lambda n, x: np.squeeze(x, axis=tuple(_attr(n, "squeeze_dims", [])) or None),
    "Shape": lambda n, x: np.array(x.shape, dtype=np.int32),
    "Pack": lambda n, *xs: np.stack(xs, axis=_attr(n, "axis", 0)),
    "ConcatV2": lambda n, *xs: np.concatenate(xs[:-1], axis=int(xs[-1])),
    "Transpose": lambda n, x, perm: np.transpose(x, [int(p) for p in perm]),  # a view; convs make it contiguous
    "Pad": lambda n, x, p: np.pad(x, np.asarray(p, dtype=np.int64).tolist()),
    "PadV2": lambda n, x, p, c: np.pad(x, np.asarray(p, dtype=np.int64).tolist(), constant_values=c.item()),
    "SplitV": _split_v,
    "StridedSlice": _strided_slice,
    "GatherV2": lambda n, p, i, ax: np.take(p, i, axis=int(ax)),
    "TopKV2": lambda n, x, k: _top_k(x, int(k)),
    "SparseToDense": lambda n, i, s, v, d: _sparse_to_dense(i, s, v, d),
    "Conv2D": lambda n, x, w: _conv(n, x, w, depthwise=False),
    "DepthwiseConv2dNative": lambda n, x, w: _conv(n, x, w, depthwise=True),
    "_FusedConv2D": lambda n, x, w, *extra: _fused_tail(n, _conv(n, x, w, depthwise=False), extra),
    "FusedDepthwiseConv2dNative": lambda n, x, w, *extra: _fused_tail(n, _conv(n, x, w, depthwise=True), extra),
    "MaxPool": lambda n, x: _pool(n, x, "max"),
    "AvgPool": lambda n, x: _pool(n, x, "avg"),
    "ResizeBilinear": _resize_bilinear,
}
