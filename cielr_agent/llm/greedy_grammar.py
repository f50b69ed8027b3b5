"""Greedy grammar-constrained sampling that checks the grammar against the best token first.

llama-cpp-python samples a grammar-constrained reply with a chain (grammar, then greedy) that runs the grammar
over the whole vocabulary at every token: for Qwen's 152k tokens that costs about as much as the forward pass
itself on a CPU (≈ 20 ms of ≈ 60 ms per generated token on 2 cores). llama.cpp's own `common_sampler` avoids
this by testing the unconstrained choice first and constraining the whole vocabulary only when the grammar
rejects it; llama-cpp-python does not expose that, so it is written here as one llama.cpp sampler. At
temperature 0 the result is identical: the argmax is kept only when the grammar allows it, and otherwise the
argmax over the allowed tokens is taken, exactly what the grammar-then-greedy chain picks.

`GreedyGrammarLlama` is a `llama_cpp.Llama` whose sampler uses it for greedy, grammar-constrained calls
without logits processors; every other call samples as llama-cpp-python does.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np
from llama_cpp import Llama, llama_cpp
from llama_cpp._internals import LlamaSampler

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class GreedyGrammarSampler:
    """A llama.cpp sampler (apply + accept) selecting the highest-logit token the grammar allows."""

    def __init__(self, vocab: Any, grammar: Any):
        self.grammar = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        if not self.grammar:
            raise ValueError("llama.cpp could not parse the grammar")
        self.full_passes = 0  # tokens for which the grammar rejected the argmax and constrained the vocabulary
        self._one = llama_cpp.llama_token_data()
        self._one_array = llama_cpp.llama_token_data_array(
            data=ctypes.pointer(self._one), size=1, selected=-1, sorted=False)
        iface = llama_cpp.llama_sampler_i()
        # the callbacks must stay referenced as long as llama.cpp may call them
        self._callbacks = (llama_cpp.llama_sampler_i_apply(self._apply),
                           llama_cpp.llama_sampler_i_accept(self._accept),
                           llama_cpp.llama_sampler_i_reset(self._reset))
        iface.apply, iface.accept, iface.reset = self._callbacks
        iface.name = llama_cpp.llama_sampler_i_name(0)
        iface.clone = llama_cpp.llama_sampler_i_clone(0)
        iface.free = llama_cpp.llama_sampler_i_free(0)
        self._iface = iface
        self.sampler = llama_cpp.llama_sampler()
        self.sampler.iface = ctypes.pointer(iface)
        self.sampler.ctx = None

    def _apply(self, _sampler: Any, cur_p: Any) -> None:
        array = cur_p.contents
        address = ctypes.addressof(array.data.contents)
        data = np.frombuffer((ctypes.c_char * (array.size * _TOKEN_DATA.itemsize)).from_address(address),
                             dtype=_TOKEN_DATA)
        best = int(np.argmax(data["logit"]))
        self._one.id, self._one.logit, self._one.p = int(data["id"][best]), float(data["logit"][best]), 0.0
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self._one_array))
        if not math.isinf(self._one.logit):
            array.selected = best
            return
        self.full_passes += 1  # the grammar rejects the argmax: constrain the whole vocabulary
        llama_cpp.llama_sampler_apply(self.grammar, cur_p)
        array.selected = int(np.argmax(data["logit"]))

    def _accept(self, _sampler: Any, token: int) -> None:
        llama_cpp.llama_sampler_accept(self.grammar, token)

    def _reset(self, _sampler: Any) -> None:
        llama_cpp.llama_sampler_reset(self.grammar)

    def close(self) -> None:
        if self.grammar:
            llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None

    def __del__(self) -> None:
        self.close()


class GreedyGrammarLlama(Llama):
    """`llama_cpp.Llama` that samples greedy grammar-constrained replies with `GreedyGrammarSampler`."""

    def _init_sampler(self, *args: Any, **kwargs: Any) -> LlamaSampler:
        grammar = kwargs.get("grammar")
        if (grammar is None or kwargs.get("temp", 0.8) != 0.0 or kwargs.get("logits_processor") is not None
                or kwargs.get("repeat_penalty", 1.0) != 1.0 or kwargs.get("frequency_penalty", 0.0) != 0.0
                or kwargs.get("presence_penalty", 0.0) != 0.0 or kwargs.get("mirostat_mode", 0) != 0 or args):
            return super()._init_sampler(*args, **kwargs)
        chain = LlamaSampler()
        sampler = GreedyGrammarSampler(self._model.vocab, grammar)
        llama_cpp.llama_sampler_chain_add(chain.sampler, ctypes.pointer(sampler.sampler))
        # LlamaSampler removes its custom samplers from the chain before freeing it (llama.cpp must not free
        # a Python-owned sampler); the grammar sampler inside is freed with this object
        chain.custom_samplers.append((llama_cpp.llama_sampler_chain_n(chain.sampler) - 1, sampler))
        return chain
