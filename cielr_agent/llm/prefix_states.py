"""Evaluated prompt prefixes of a llama.cpp model, kept in memory and on disk.

Every LLM call of the edit graph starts with the same system prompt (the action catalogue, the rules, the
examples): several hundred tokens that cost seconds to evaluate on a CPU. llama.cpp reuses the longest
common token prefix with what it evaluated last, so within a process a prefix is evaluated once. Across
processes (a fresh `cielr edit`) and after another prompt was evaluated in between (the search prompt), the
KV state of the prefix is restored from here instead: `llama_state_get_data` of the prefix alone (≈ 30 MB for
900 tokens of the 1.5B model), stored under the cache folder keyed by the model file, the llama.cpp build,
the context size and the prefix tokens, with its sha256 checked before use.

llama-cpp-python's own `LlamaRAMCache` is not used: each state it saves also copies the logits of up to 512
positions (311 MB for a 152k-token vocabulary) while counting only the KV bytes against its capacity, which
let a long evaluation grow to many GB.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

MIN_PREFIX_TOKENS = 64  # shorter prefixes are cheaper to evaluate than to restore
MEMORY_STATES = 4  # prefixes kept in memory per model (the decide and search prompts of one or two sets)


def common_prefix(a, b) -> int:
    """Length of the common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixStates:
    """The KV states of prompt prefixes of one `llama_cpp.Llama`; `restore` makes a prefix evaluated."""

    def __init__(self, llama: Any, model_path: str, folder: Path | None):
        self.llama = llama
        self.folder = folder
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        stat = Path(model_path).stat()
        import llama_cpp

        self._identity = json.dumps([Path(model_path).name, stat.st_size, int(stat.st_mtime),
                                     llama_cpp.__version__, llama.n_ctx()])

    def key(self, tokens: list[int]) -> str:
        digest = hashlib.sha256(self._identity.encode())
        digest.update(json.dumps(tokens).encode())
        return digest.hexdigest()[:32]

    def restore(self, prefix: list[int]) -> str:
        """Make `prefix` the evaluated start of the model's context: 'live' (already there), 'memory' or 'disk'
        (restored) or 'evaluated' (computed now and stored). The caller holds the model's run lock."""
        llama = self.llama
        n = len(prefix)
        if n < MIN_PREFIX_TOKENS or common_prefix(llama._input_ids.tolist(), prefix) == n:
            return "live"
        key = self.key(prefix)
        with self._lock:
            data, where = self._memory.get(key), "memory"
            if data is None:
                data, where = self._read(key), "disk"
            if data is not None and self._load(data, prefix):
                self._remember(key, data)
                return where
            llama.reset()
            llama.eval(prefix)
            data = self._dump()
            self._remember(key, data)
            self._write(key, data, n)
            return "evaluated"

    def _remember(self, key: str, data: bytes) -> None:
        self._memory[key] = data
        self._memory.move_to_end(key)
        while len(self._memory) > MEMORY_STATES:
            self._memory.popitem(last=False)

    def _dump(self) -> bytes:
        import llama_cpp

        ctx = self.llama._ctx.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buffer = (ctypes.c_uint8 * int(size))()
        written = llama_cpp.llama_state_get_data(ctx, buffer, size)
        return bytes(buffer[: int(written)])

    def _load(self, data: bytes, prefix: list[int]) -> bool:
        import llama_cpp

        llama = self.llama
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_set_data(llama._ctx.ctx, buffer, len(data)) != len(data):
            llama.reset()
            return False
        llama.input_ids[: len(prefix)] = prefix
        llama.n_tokens = len(prefix)
        llama._requires_eval = True  # restored logits: the next call decodes at least one token
        return True

    def _paths(self, key: str) -> tuple[Path, Path]:
        assert self.folder is not None
        return self.folder / f"{key}.state", self.folder / f"{key}.json"

    def _read(self, key: str) -> bytes | None:
        if self.folder is None:
            return None
        state, meta = self._paths(key)
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            data = state.read_bytes()
        except (OSError, ValueError):
            return None
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            return None  # damaged or half-written: evaluate again and overwrite
        return data

    def _write(self, key: str, data: bytes, n_tokens: int) -> None:
        if self.folder is None:
            return
        from cielr_agent.imaging import write_bytes_atomic, write_text_atomic

        state, meta = self._paths(key)
        try:
            write_bytes_atomic(state, data)
            write_text_atomic(meta, json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                                                "tokens": n_tokens, "model": json.loads(self._identity)}))
        except OSError:
            pass  # a read-only cache only costs the next process the evaluation
