"""Agent configuration: which LLM and backends to use, loop bounds, prompt set. Loadable from TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class AgentConfig(BaseModel):
    """Every knob of an edit. Backends are chosen here by name, never by editing the graph."""

    model_config = ConfigDict(extra="forbid")

    llm: str = Field("embedded", description="LLM spec: embedded, embedded-tiny, openai:<model>, ollama:<model>, "
                     "llamacpp:<path.gguf>, or anything init_chat_model accepts")
    llm_options: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for the chat model")
    detector: str = Field("embedded", description="embedded (COCO-80 detector + MobileSAM regions named "
                          "with 1,000 ImageNet classes), centernet, nanodet, grounding-dino, owlv2, ...")
    segmenter: str = "mobilesam"
    describer: str = "embedded"
    remover: str = "patchmatch"
    recolorer: str = "oklab"
    generator: str | None = Field(None, description="generative inpainting backend for replace/add (e.g. sd-inpaint)")
    depth: str | None = Field(None, description="depth backend (e.g. depth-anything): per-object depth, front/behind")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps: where foundation models run")
    dtype: str = Field("auto", description="auto (fp16 on cuda, fp32 elsewhere), float32, float16 or bfloat16")
    allow_download: bool = Field(False, description="let foundation backends fetch missing weights from their hub")
    memory_budget_gb: float | None = Field(None, gt=0, description="unload least recently used models above this")
    backend_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="options per backend name, e.g. {'grounding-dino': {'model': '<path>'}}")
    min_score: float = Field(0.3, ge=0.0, le=1.0, description="detection confidence for the initial scene")
    refine_min_score: float = Field(0.15, ge=0.0, le=1.0, description="confidence when the LLM asks for labels")
    max_iterations: int = Field(3, ge=0, le=12, description="bound on perception tool calls in the reasoning loop")
    planner: str = Field("structured", pattern="^(structured|tools)$", description="structured: one "
                         "schema-constrained decision per round (portable, works with small local models); tools: "
                         "the model calls the typed tools itself (create_agent), for models that call tools well")
    prompt_set: str = "v4"
    confirm: bool = False
    verify: bool = True
    mask_dilation: int = Field(7, ge=0, description="pixels the edit mask grows before removal")
    feather: int = Field(2, ge=0, description="soft edge of recolour masks, pixels")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> AgentConfig:
        """Read a TOML profile (keys as above, optionally under [agent]) and apply non-None overrides.

        Backend options sit in tables named after the backend, e.g. ``[backend_options.sd-inpaint]``.
        """
        data: dict[str, Any] = {}
        where = f"profile {path}" if path is not None else "settings"
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"profile not found: {p}" if not p.exists() else f"profile {p} is not a file")
            try:
                raw = tomllib.loads(p.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(f"profile {p} is not valid TOML ({exc}); fix it or leave it out") from None
            agent = raw.get("agent", raw)
            data = dict(agent) if isinstance(agent, dict) else {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:5])
            raise ValueError(f"{where}: {problems}") from None
