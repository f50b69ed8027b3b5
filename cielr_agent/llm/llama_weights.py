"""The weights of local GGUF models: one `llama_cpp.Llama` per (path, n_ctx, threads), loaded once per process.

Kept apart from the LangChain chat model (`llamacpp_chat`) so that a command can start loading the weights
in the background before LangChain and the rest of the graph are imported (`preload`): in a fresh
`cielr edit` the ~1.5 s load then overlaps the imports and the perception instead of delaying the first LLM call.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path
from typing import Any

from .prefix_states import PrefixStates

DEFAULT_N_CTX = 6144  # a crowded scene with its knowledge cards and one repair round fits
# spec -> asset name (see cielr_agent.assets)
EMBEDDED_MODELS = {
    "embedded": "qwen2.5-coder-1.5b",
    "embedded-tiny": "smollm2-135m",
}

_CACHE_LOCK = threading.Lock()
_LLAMAS: dict[tuple[str, int, int], Any] = {}
_RUN_LOCKS: dict[tuple[str, int, int], threading.Lock] = {}
_PREFIXES: dict[tuple[str, int, int], PrefixStates] = {}
LOAD_SECONDS: dict[tuple[str, int, int], float] = {}


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def load_llama(model_path: str, n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = None, *, seed: int = 0,
               verbose: bool = False) -> tuple[Any, threading.Lock]:
    """Return the cached `llama_cpp.Llama` for (path, n_ctx, threads) and its run lock, loading it once."""
    path = str(Path(model_path).expanduser().resolve())
    threads = n_threads or default_threads()
    key = (path, int(n_ctx), int(threads))
    with _CACHE_LOCK:
        llama = _LLAMAS.get(key)
        if llama is not None:
            return llama, _RUN_LOCKS[key]
        if not Path(path).is_file():
            raise FileNotFoundError(f"GGUF model file not found: {path}")
        try:
            from .greedy_grammar import GreedyGrammarLlama as Llama
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(
                "ChatLlamaCpp needs llama-cpp-python: pip install 'cielr-agent[embedded]'"
            ) from e
        _leave_streams_alone(verbose)
        t0 = time.perf_counter()
        llama = Llama(
            model_path=path,
            n_ctx=int(n_ctx),
            n_threads=int(threads),
            n_threads_batch=int(threads),
            seed=seed,
            verbose=verbose,
            # mapped, not read: the load skips copying the file (1.05 vs 1.56 s for the 1.1 GB model). llama.cpp
            # repacks most weights into its own buffers, so the touched file pages stay resident as clean page
            # cache (counted in RSS: the README edit peaks at 2.6 instead of 2.0 GB; the kernel can drop them)
            use_mmap=True,
        )
        # Prompt-prefix reuse: llama.cpp re-evaluates only the tokens after the longest common prefix with what
        # it holds; the fixed system prompts' KV states are kept in memory and on disk (see prefix_states).
        from cielr_agent.assets import cache_dir

        _PREFIXES[key] = PrefixStates(llama, path, cache_dir() / "llm-prefix")
        LOAD_SECONDS[key] = time.perf_counter() - t0
        if not _LLAMAS:
            atexit.register(close_all)
        _LLAMAS[key] = llama
        _RUN_LOCKS[key] = threading.Lock()
        return llama, _RUN_LOCKS[key]


_LOG_STATE = {"verbose": False, "last": 0}
_LOG_ERROR, _LOG_CONT = 4, 5  # ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT
_log_callback: Any = None


def _leave_streams_alone(verbose: bool) -> None:
    """Make model loading print only llama.cpp's errors (everything when `verbose`), without touching stdout/stderr.

    With verbose=False llama-cpp-python silences a load by pointing the process's stdout and stderr (the file
    descriptors and sys.stdout/sys.stderr) at /dev/null for its duration. That is not thread-safe: while the
    weights load in the background (`preload`) the progress lines and errors that the command prints are lost.
    Its log callback also filters by a level table that this llama.cpp no longer matches. So loads here run
    unsilenced and one log callback does the filtering."""
    global _log_callback
    import ctypes
    import sys

    import llama_cpp
    from llama_cpp import _internals, llama

    _LOG_STATE["verbose"] = _LOG_STATE["verbose"] or verbose
    if _log_callback is not None:
        return

    @llama_cpp.llama_log_callback
    def log(level: int, text: bytes, _user: Any) -> None:
        level = _LOG_STATE["last"] if level == _LOG_CONT else level
        _LOG_STATE["last"] = level
        if _LOG_STATE["verbose"] or level >= _LOG_ERROR:
            print(text.decode("utf-8", "replace"), end="", file=sys.stderr, flush=True)

    _log_callback = log
    llama_cpp.llama_log_set(log, ctypes.c_void_p(0))

    class _Unsilenced:
        def __init__(self, disable: bool = True):
            pass

        def __enter__(self) -> _Unsilenced:
            return self

        def __exit__(self, *exc: Any) -> None:
            return None

    _internals.suppress_stdout_stderr = _Unsilenced
    llama.suppress_stdout_stderr = _Unsilenced


def close_all() -> None:
    """Free every loaded model (at exit, while llama_cpp is still importable: its own finalizers fail later)."""
    with _CACHE_LOCK:
        for llama in _LLAMAS.values():
            llama._sampler = None
            llama.close()
        _LLAMAS.clear()
        _RUN_LOCKS.clear()
        _PREFIXES.clear()


def local_model_path(spec: str) -> Path | None:
    """The GGUF file an LLM spec runs in-process, if it names one that is on disk ("embedded" once set up,
    "llamacpp:<path>"); None for remote providers and for models not fetched yet."""
    if spec in EMBEDDED_MODELS:
        from cielr_agent.assets import asset_path, is_ready

        return asset_path(EMBEDDED_MODELS[spec]) if is_ready(EMBEDDED_MODELS[spec]) else None
    prefix, sep, rest = spec.partition(":")
    if sep and prefix == "llamacpp" and rest and Path(rest).expanduser().is_file():
        return Path(rest).expanduser()
    return None


def preload(spec: str, options: dict[str, Any] | None = None) -> threading.Thread | None:
    """Start loading the weights of a local LLM spec in a daemon thread (the chat model built later from the
    same spec and options finds them loaded, or waits for the load to finish); None when there is nothing
    local to load."""
    path = local_model_path(spec.strip()) if isinstance(spec, str) else None
    if path is None:
        return None
    options = options or {}
    return in_background(lambda: load_llama(str(path), int(options.get("n_ctx", DEFAULT_N_CTX)),
                                            options.get("n_threads"), seed=int(options.get("seed", 0)),
                                            verbose=bool(options.get("verbose", False))))


def in_background(load: Any) -> threading.Thread:
    """Run `load()` in a daemon thread. A failure is not reported there: the first call that needs the weights
    loads again and raises the actionable error."""

    def run() -> None:
        try:
            load()
        except Exception:  # noqa: BLE001 - reported by the first call, which retries the load
            pass

    thread = threading.Thread(target=run, name="cielr-llm-preload", daemon=True)
    thread.start()
    return thread
