"""What every suite shares: the run context (data, output folder, the one chat model, agent settings), running
one edit with its failures captured, and the gallery's images."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cielr_agent.config import AgentConfig
from cielr_agent.errors import EditError
from cielr_agent.imaging import load_image, save_image_atomic
from cielr_agent.errors import LLMOutputError
from cielr_agent.overlay import draw_overlay
from cielr_agent.results import EditResult

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
THUMB = 320  # longest side of gallery images, px

# the agent could not carry out the instruction (unsupported action, no such object, no valid plan): a result
# of the agent, not of the harness; the output is then the unchanged source
AGENT_FAILURES = (EditError, LLMOutputError)


def safe_name(case_id: str) -> str:
    """A file-name form of a case id ("6-Reasoning/001" -> "6-Reasoning__001")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case_id.replace("/", "__"))


@dataclass
class EvalContext:
    """One evaluation run: where the data and outputs are, and how the agent is configured.

    `model` is built once per run (by the runner) and passed to every edit. `overrides` are extra
    `AgentConfig` keys (e.g. backend names).
    """

    data: Path
    out: Path
    llm: str = "embedded"
    model: Any = None
    profile: str | None = None
    prompt_set: str | None = None
    limit: int | None = None
    only: str | None = None  # fnmatch pattern of case ids to run now (the others stay as they are)
    cold: bool = False  # speed: also time the README edit as a fresh `cielr edit` process
    overrides: dict[str, Any] = field(default_factory=dict)

    def config(self) -> AgentConfig:
        return AgentConfig.load(self.profile, prompt_set=self.prompt_set, **self.overrides)

    def edit(self, image: str | Path, instruction: str, progress=None) -> EditResult:
        """`cielr_agent.edit` with this run's model, profile, prompt set and overrides (executed, no output file)."""
        from cielr_agent import edit

        return edit(image, instruction, llm=self.model if self.model is not None else self.llm,
                    profile=self.profile, progress=progress, prompt_set=self.prompt_set, **self.overrides)

    def save_gallery(self, case_id: str, **images: np.ndarray | None) -> dict[str, str]:
        """Small JPEGs of the given images under `<out>/images/`; returns {name: path relative to out}."""
        paths = {}
        for name, image in images.items():
            if image is None:
                continue
            rel = Path("images") / f"{safe_name(case_id)}_{name}.jpg"
            thumb = Image.fromarray(image)
            thumb.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            thumb.save(self.out / rel, quality=85)
            paths[name] = rel.as_posix()
        return paths

    def save_output(self, case_id: str, image: np.ndarray) -> str:
        """The full-resolution output as PNG under `<out>/outputs/`; returns its path relative to out."""
        rel = Path("outputs") / f"{safe_name(case_id)}.png"
        save_image_atomic(image, self.out / rel)
        return rel.as_posix()


@dataclass
class EditOutcome:
    """One executed (or attempted) edit. `output` is the unchanged source when the agent failed."""

    source: np.ndarray
    output: np.ndarray
    result: EditResult | None
    failure: str | None = None
    log: list[tuple[str, str]] = field(default_factory=list)  # the graph's progress messages

    @property
    def edited(self) -> bool:
        return self.failure is None and self.result is not None and bool(self.result.executed)

    def plan_summary(self) -> dict[str, Any]:
        """The plan as `cielr edit --json` shows it; for a failed edit, what the progress log says."""
        if self.result is not None:
            return self.result.summary_json()["plan"]
        rationale = next((m.removeprefix("plan: ") for n, m in self.log if n == "plan" and m.startswith("plan: ")),
                         None)
        return {"rationale": rationale, "actions": [], "attempted": [m for n, m in self.log if n == "execute"]}

    def edited_region(self) -> np.ndarray:
        """The pixels the executed actions changed (bool H×W)."""
        region = np.zeros(self.source.shape[:2], bool)
        for action in self.result.executed if self.result else []:
            if action.region is not None:
                region |= action.region.to_array()
        return region

    def overlay(self) -> np.ndarray | None:
        """The input with the planned scene's objects, plan targets in red and the changed pixels tinted red."""
        if self.result is None or not self.result.scenes:
            return None
        scene = self.result.scenes[1] if len(self.result.scenes) > 1 else self.result.scenes[0]
        targets = self.result.plan.targets() if self.result.plan else []
        region = self.edited_region()
        return draw_overlay(self.source, scene, targets, [region] if region.any() else [])

    def target(self):
        """The first planned action's target object as planned (None for add or no plan)."""
        if self.result is None or not self.result.plan or not self.result.plan.actions:
            return None
        oid = getattr(self.result.plan.actions[0], "target", None)
        scene = self.result.scenes[1] if len(self.result.scenes) > 1 else self.result.scenes[0]
        return scene.get(oid) if oid is not None and scene.has(oid) else None

    def target_mask(self, ctx: EvalContext) -> np.ndarray | None:
        """The planned target's mask on the input image as the agent's segmenter gives it (occluders excluded,
        not grown): segmented again in a fresh workspace holding the scene as planned (same backends, same
        input, so the same mask the edit used before growing it)."""
        from cielr_agent.tools import Workspace

        target = self.target()
        if target is None:
            return None
        ws = Workspace(self.source, ctx.config())
        ws.scene = self.result.scenes[1] if len(self.result.scenes) > 1 else self.result.scenes[0]
        return ws.mask(target.id)


def run_edit(ctx: EvalContext, image: str | Path, instruction: str) -> EditOutcome:
    """Execute one edit; an agent failure (see AGENT_FAILURES) gives the unchanged source as output."""
    source = load_image(image)
    log: list[tuple[str, str]] = []
    try:
        result = ctx.edit(image, instruction, progress=lambda node, msg: log.append((node, msg)))
    except AGENT_FAILURES as exc:
        return EditOutcome(source, source, None, f"{type(exc).__name__}: {exc}", log)
    output = result.image_array if result.image_array is not None else source
    return EditOutcome(source, output, result, None, log)


def draw_mask_outline(image: np.ndarray, mask: np.ndarray, colour=(40, 220, 40), width: int = 2) -> np.ndarray:
    """The image with the outline of a (ground-truth) mask drawn on it."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, colour, width)
    return out
