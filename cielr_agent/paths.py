"""The folders a server may read and write (MCP tools, the web page, the LangGraph server's graphs).

Every path a client sends is resolved (links followed, `..` collapsed) and must lie inside one of the allowed
folders; nothing an LLM emits is ever used as a path (plans name objects by id, outputs are given by the caller).
"""

from __future__ import annotations

import os
from pathlib import Path


class OutsideFoldersError(PermissionError):
    """A path outside the folders a server may use."""


class PathPolicy:
    """Paths inside one of the allowed folders; `hint` says how to allow another folder."""

    def __init__(self, allowed: list[str | Path], hint: str = "start the server with --allow FOLDER to add one"):
        self.allowed = [Path(a).expanduser().resolve() for a in allowed]
        self.hint = hint

    @classmethod
    def from_env(cls, variable: str = "CIELR_ALLOW") -> PathPolicy:
        """Folders from an environment variable (separated by the OS path separator), else the current folder."""
        folders = [f for f in os.environ.get(variable, "").split(os.pathsep) if f.strip()]
        return cls(folders or [Path.cwd()], hint=f"add the folder to ${variable} (separated by {os.pathsep!r})")

    def check(self, path: str | Path, *, must_exist: bool = False, base: Path | None = None) -> Path:
        """The resolved path (relative ones against `base`); OutsideFoldersError when it lies outside."""
        p = Path(path).expanduser()
        resolved = ((base / p) if base is not None and not p.is_absolute() else p).resolve()
        if not any(resolved == root or root in resolved.parents for root in self.allowed):
            roots = ", ".join(str(r) for r in self.allowed)
            raise OutsideFoldersError(f"{path} is outside the folders this server may use ({roots}); {self.hint}")
        if must_exist and not resolved.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        return resolved
