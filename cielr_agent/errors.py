"""Errors a user can act on. Every message says what went wrong and what to do."""

from __future__ import annotations


class EditError(RuntimeError):
    """An edit could not be carried out (bad plan, unavailable action, failed tool)."""


class TargetNotFoundError(EditError):
    """The instruction refers to something that is not in the image."""


class InstructionError(ValueError):
    """The instruction is empty or unusable."""


class MissingWeightsError(RuntimeError):
    """Model weights are not on this machine (a local folder or the local hub cache)."""


class MissingDependencyError(RuntimeError):
    """An optional package a backend needs is not installed, or cannot run next to this environment."""
