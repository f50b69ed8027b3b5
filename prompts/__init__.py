"""Prompt templates as files, versioned by folder (a "prompt set"), loaded by name.

A prompt set is a folder of this package (e.g. "v1") or any directory path holding the same file names,
so experiments swap prompts by config (`prompt_set=...`) without touching code. A set may hold only the files
it changes: a file named `extends` names the set it falls back to for the others (e.g. "v1").
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


def _find(file_name: str, prompt_set: str) -> Path | None:
    """The file in the set or, through `extends`, in the set it builds on."""
    seen: set[Path] = set()
    folder = prompt_dir(prompt_set)
    while folder not in seen:
        seen.add(folder)
        if (folder / file_name).exists():
            return folder / file_name
        parent = folder / "extends"
        if not parent.exists():
            return None
        base = parent.read_text(encoding="utf-8").strip()
        folder = _HERE / base if (_HERE / base).is_dir() else prompt_dir(str((folder / base).resolve()))
    raise ValueError(f"prompt set {prompt_set!r}: its `extends` files form a cycle")


@lru_cache(maxsize=64)
def load_prompt(name: str, prompt_set: str = "v4") -> str:
    """The text of template `name` (without .txt) in `prompt_set`."""
    path = _find(f"{name}.txt", prompt_set)
    if path is None:
        raise FileNotFoundError(f"prompt {name!r} missing from prompt set {prompt_set!r} ({prompt_dir(prompt_set)})")
    return path.read_text(encoding="utf-8").strip()


@lru_cache(maxsize=8)
def load_knowledge(prompt_set: str = "v4") -> dict[str, str]:
    """Short knowledge cards per label: the COCO detector labels (`knowledge_cards.json`) first, then the
    ImageNet classifier's display labels (`imagenet_cards.json`, built by scripts/build_imagenet_vocabulary.py);
    a COCO card wins where both have a label. Each file comes from the set or, through `extends`, its base;
    empty when the set has neither."""
    cards: dict[str, str] = {}
    for file_name in ("knowledge_cards.json", "imagenet_cards.json"):
        path = _find(file_name, prompt_set)
        if path is not None:
            for label, card in json.loads(path.read_text(encoding="utf-8")).items():
                cards.setdefault(label, card)
    return cards


def render(name: str, prompt_set: str = "v4", **values: str) -> str:
    """Load template `name` and fill its {placeholders} (other braces, e.g. JSON examples, stay as they are)."""
    text = load_prompt(name, prompt_set)
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text
