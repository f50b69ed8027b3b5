"""Prompt templates as files, versioned by folder (a "prompt set"), loaded by name.

A prompt set is a folder of this package (e.g. "v1") or any directory path holding the same file names,
so experiments swap prompts by config (`prompt_set=...`) without touching code.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

_HERE = Path(__file__).parent


def prompt_dir(prompt_set: str) -> Path:
    """The folder of a prompt set: a bundled name or a directory path."""
    bundled = _HERE / prompt_set
    if bundled.is_dir():
        return bundled
    custom = Path(prompt_set).expanduser()
    if custom.is_dir():
        return custom
    sets = sorted(p.name for p in _HERE.iterdir() if p.is_dir() and not p.name.startswith("_"))
    raise FileNotFoundError(f"prompt set {prompt_set!r} not found; bundled sets: {', '.join(sets)}, or pass a folder path")


@lru_cache(maxsize=64)
def load_prompt(name: str, prompt_set: str = "v1") -> str:
    """The text of template `name` (without .txt) in `prompt_set`."""
    path = prompt_dir(prompt_set) / f"{name}.txt"
    if not path.exists():
        raise FileNotFoundError(f"prompt {name!r} missing from prompt set {prompt_set!r} ({path})")
    return path.read_text(encoding="utf-8").strip()


@lru_cache(maxsize=8)
def load_knowledge(prompt_set: str = "v1") -> dict[str, str]:
    """Short knowledge cards per detector label (empty when the set has none)."""
    path = prompt_dir(prompt_set) / "knowledge_cards.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def render(name: str, prompt_set: str = "v1", **values: str) -> str:
    """Load template `name` and fill its {placeholders} (other braces, e.g. JSON examples, stay as they are)."""
    text = load_prompt(name, prompt_set)
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text
