"""Loaded foundation models: each loads lazily, once, onto its device; least recently used ones are unloaded
when a memory budget would be exceeded."""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable


def resolve_device(device: str = "auto") -> str:
    """'auto' → cuda if present, else mps, else cpu; anything else is checked and returned."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but torch sees no CUDA GPU; use device = \"cpu\" or \"auto\"")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but this torch has no MPS support; use \"cpu\" or \"auto\"")
    if device != "cpu" and not device.startswith(("cuda", "mps")):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(dtype: str, device: str):
    """'auto' → float16 on cuda, float32 elsewhere (half precision is slow or unsupported on CPUs)."""
    import torch

    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    try:
        return names[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16") from None


def model_bytes(model: Any) -> int:
    """Bytes held by a torch module's (or diffusers pipeline's) parameters and buffers; 0 when unknown."""
    import torch

    modules = []
    if isinstance(model, torch.nn.Module):
        modules = [model]
    elif hasattr(model, "components"):  # diffusers pipelines
        modules = [m for m in model.components.values() if isinstance(m, torch.nn.Module)]
    total = 0
    for m in modules:
        total += sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))
    return total


@dataclass
class _Entry:
    model: Any
    nbytes: int


class ModelManager:
    """A cache of loaded models keyed by a string (model id/path + device + dtype).

    `get(key, loader)` calls `loader()` only the first time; with a budget, least recently used models are
    dropped (and the CUDA cache emptied) before a new one would exceed it.
    """

    def __init__(self, budget_gb: float | None = None):
        self.budget_bytes = None if budget_gb is None else int(budget_gb * 2**30)
        self._models: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, key: str, loader: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key].model
            model = loader()
            nbytes = model_bytes(model)
            self._models[key] = _Entry(model, nbytes)
            self._fit(keep=key)
            return model

    def _fit(self, keep: str) -> None:
        if self.budget_bytes is None:
            return
        while self.loaded_bytes() > self.budget_bytes and len(self._models) > 1:
            oldest = next(k for k in self._models if k != keep)
            self.unload(oldest)

    def loaded(self) -> dict[str, int]:
        """Loaded model keys → bytes, least recently used first."""
        return {k: e.nbytes for k, e in self._models.items()}

    def loaded_bytes(self) -> int:
        return sum(e.nbytes for e in self._models.values())

    def unload(self, key: str | None = None) -> None:
        """Drop one model (or all with None) and give its memory back."""
        with self._lock:
            for k in [key] if key is not None else list(self._models):
                self._models.pop(k, None)
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


MODELS = ModelManager()
"""The process-wide manager that foundation backends load into (its budget follows `memory_budget_gb`)."""
