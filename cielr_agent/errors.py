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


class LLMCallError(EditError):
    """The LLM could not be called (a timeout, a server that is down, a provider error)."""


class LLMOutputError(RuntimeError):
    """The model did not produce a valid structured reply after all attempts.

    `raw` is the text of the last reply, `errors` the error of each attempt, `attempts` their count, `usage` and
    `seconds` what all attempts cost."""

    def __init__(self, message: str, *, raw: str = "", errors: list[str] | None = None, attempts: int = 0,
                 schema: str = "", usage: tuple[int, int, int] = (0, 0, 0), seconds: float = 0.0):
        super().__init__(message)
        self.raw = raw
        self.errors = list(errors or [])
        self.attempts = attempts
        self.schema = schema
        self.usage = usage  # (prompt, of those reused, generated) tokens over all attempts
        self.seconds = seconds


def one_line(error: BaseException) -> str:
    """The error's message on one line (what the CLI prints after `error:`, what a tool returns)."""
    return " ".join(str(error).split()) or type(error).__name__
