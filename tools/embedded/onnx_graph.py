"""A small ONNX graph builder for writing a pretrained network's forward pass from its weights (numpy arrays).

Why hand-written: the embedded models ship as checkpoints (torch, safetensors), and the usual way to ONNX —
exporting from the model code — needs torch, a 5 GB CUDA build on PyPI, which the CPU install should not pay for
to run one step at `cielr setup`. `onnx.helper` makes single nodes; this adds the layer helpers the embedded
networks need (linear, layer norms, convolutions with BatchNorm folded in, exact GELU) and checks that every
checkpoint tensor of the network is used exactly once, so a weight cannot silently land in the wrong place or be
left out. The graphs run on onnxruntime at edit time.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def tensor_info(name: str, shape, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph input/output declaration; `shape` entries are ints or names of dynamic axes."""
    return helper.make_tensor_value_info(name, elem_type, shape)


class GraphBuilder:
    """Collects nodes and initializers; `w(name)` takes the checkpoint tensor `prefix + name` and marks it used."""

    def __init__(self, weights: dict[str, np.ndarray], prefix: str = ""):
        self.weights, self.prefix = weights, prefix
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = itertools.count()

    def raw(self, name: str) -> np.ndarray:
        """The checkpoint tensor `prefix + name`, marked used (a second use is an error)."""
        key = self.prefix + name
        if key in self.used:
            raise ValueError(f"{key} used twice")
        self.used.add(key)
        return self.weights[key]

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of a checkpoint tensor, without using it."""
        return self.weights[self.prefix + name].shape

    def const(self, value, dtype=np.float32) -> str:
        name = f"c{next(self._count)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def w(self, name: str) -> str:
        return self.const(self.raw(name))

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs) -> str | list[str]:
        """Append a node; returns its output name (or the list of names when `outputs` > 1)."""
        base = f"{op_type.lower()}{next(self._count)}"
        names = [base] if outputs == 1 else [f"{base}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def name_output(self, name: str) -> None:
        """Rename the last node's output (to a graph output name)."""
        self.nodes[-1].output[0] = name

    # layers
    def linear(self, x: str, name: str) -> str:
        return self.op("Add", self.op("MatMul", x, self.const(self.raw(f"{name}.weight").T)), self.w(f"{name}.bias"))

    def layer_norm(self, x: str, name: str, eps: float = 1e-5) -> str:
        return self.op("LayerNormalization", x, self.w(f"{name}.weight"), self.w(f"{name}.bias"), axis=-1,
                       epsilon=eps)

    def layer_norm_2d(self, x: str, name: str, eps: float = 1e-6) -> str:
        """Normalises over the channels of N×C×H×W (SAM's LayerNorm2d)."""
        mean = self.op("ReduceMean", x, axes=[1], keepdims=1)
        centred = self.op("Sub", x, mean)
        var = self.op("ReduceMean", self.op("Mul", centred, centred), axes=[1], keepdims=1)
        normed = self.op("Div", centred, self.op("Sqrt", self.op("Add", var, self.const(eps))))
        scale = self.const(self.raw(f"{name}.weight")[:, None, None])
        return self.op("Add", self.op("Mul", normed, scale), self.const(self.raw(f"{name}.bias")[:, None, None]))

    def gelu(self, x: str) -> str:
        """Exact (erf) GELU, spelled as onnxruntime's GELU fusion expects it."""
        erf = self.op("Erf", self.op("Div", x, self.const(math.sqrt(2))))
        return self.op("Mul", self.op("Mul", x, self.op("Add", erf, self.const(1.0))), self.const(0.5))

    def conv(self, x: str, name: str, stride: int = 1, pad: int = 0, groups: int = 1, bias: bool = True) -> str:
        k = self.shape(f"{name}.weight")[-1]
        inputs = (x, self.w(f"{name}.weight"), self.w(f"{name}.bias")) if bias else (x, self.w(f"{name}.weight"))
        return self.op("Conv", *inputs, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=groups)

    def conv_bn(self, x: str, name: str, stride: int = 1, pad: int = 0, groups: int = 1) -> str:
        """Conv2d without bias (`name.c`) + BatchNorm2d in eval mode (`name.bn`), folded into one Conv."""
        w = self.raw(f"{name}.c.weight")
        gamma, beta = self.raw(f"{name}.bn.weight"), self.raw(f"{name}.bn.bias")
        mean, var = self.raw(f"{name}.bn.running_mean"), self.raw(f"{name}.bn.running_var")
        self.raw(f"{name}.bn.num_batches_tracked")
        scale = gamma / np.sqrt(var + 1e-5)
        k = w.shape[-1]
        return self.op("Conv", x, self.const(w * scale[:, None, None, None]), self.const(beta - mean * scale),
                       kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=groups)

    def conv_transpose(self, x: str, name: str, k: int = 2) -> str:
        return self.op("ConvTranspose", x, self.w(f"{name}.weight"), self.w(f"{name}.bias"), kernel_shape=[k, k],
                       strides=[k, k])

    def reshape(self, x: str, shape) -> str:
        return self.op("Reshape", x, self.const(shape, np.int64))

    def transpose(self, x: str, perm) -> str:
        return self.op("Transpose", x, perm=list(perm))

    def model(self, inputs, outputs, name: str, scope: tuple[str, ...]) -> onnx.ModelProto:
        """The finished, checked model; every checkpoint tensor whose name starts with `scope` must be used."""
        unused = sorted(k for k in self.weights if k.startswith(scope) and k not in self.used)
        if unused:
            raise ValueError(f"checkpoint tensors the graph does not use: {unused[:5]}")
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cielr-agent")
        onnx.checker.check_model(model)
        return model
