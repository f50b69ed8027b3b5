"""The model manager (load once, unload least recently used over a budget) and device/dtype resolution."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the full extra is not installed (pip install -e '.[full]')")

from cielr_agent.config import AgentConfig
from cielr_agent.tools.backends import BackendContext, get_backend, register_backend
from cielr_agent.tools.model_manager import ModelManager, model_bytes, resolve_device, resolve_dtype


def linear(n: int) -> torch.nn.Module:
    return torch.nn.Linear(n, n, bias=False)  # n*n float32 parameters


def test_loads_once_and_counts_bytes():
    mm = ModelManager()
    calls = []
    load = lambda: calls.append(1) or linear(16)  # noqa: E731
    a, b = mm.get("m", load), mm.get("m", load)
    assert a is b and len(calls) == 1
    assert mm.loaded() == {"m": 16 * 16 * 4} == {"m": model_bytes(a)}


def test_budget_unloads_least_recently_used():
    mm = ModelManager(budget_gb=(2 * 64 * 64 * 4 + 10) / 2**30)  # room for two 64×64 layers
    mm.get("a", lambda: linear(64))
    mm.get("b", lambda: linear(64))
    mm.get("a", lambda: linear(64))  # touch a: b is now the oldest
    mm.get("c", lambda: linear(64))
    assert list(mm.loaded()) == ["a", "c"]
    mm.unload("a")
    assert list(mm.loaded()) == ["c"]
    mm.unload()
    assert mm.loaded() == {}


def test_a_single_model_over_budget_still_loads():
    mm = ModelManager(budget_gb=1e-9)
    mm.get("big", lambda: linear(8))
    assert list(mm.loaded()) == ["big"]


def test_device_and_dtype_resolution():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("auto", "cuda") is torch.float16
    assert resolve_dtype("bf16", "cuda") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int3", "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


def test_backend_context_carries_options_and_instances_are_shared_per_options():
    made = []
    register_backend("detector", "ctx-probe", lambda ctx: made.append(ctx) or object())
    config = AgentConfig(detector="ctx-probe", device="cpu", backend_options={"ctx-probe": {"model": "/m"}})
    ctx = BackendContext.from_config(config, "ctx-probe")
    assert ctx.option("model") == "/m" and ctx.option("missing", 5) == 5 and ctx.device == "cpu"
    first = get_backend("detector", "ctx-probe", ctx)
    assert get_backend("detector", "ctx-probe", ctx) is first
    other = get_backend("detector", "ctx-probe", BackendContext(name="ctx-probe", options={"model": "/n"}))
    assert other is not first and len(made) == 2
    with pytest.raises(ValueError, match="unknown detector backend"):
        get_backend("detector", "nope")
