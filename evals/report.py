"""Reports of a run: `summary.json` (machine-readable, compact), `report.md` and `gallery.html`.

All three are written from `results.jsonl` alone, so they can be regenerated (`--report-only`). When a
committed baseline exists (`evals/baselines/<suite>/summary.json`), report.md compares the headline numbers.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

from cielr_agent.imaging import write_text_atomic

BASELINES = Path(__file__).parent / "baselines"


def jsonable(value: Any) -> Any:
    """Infinite/NaN floats as strings ("inf"), so summary.json is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded, None as "–"."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "∞" if value > 0 else str(value)
        return f"{value:.2e}" if 0 < abs(value) < 10 ** -digits * 10 else f"{value:.{digits}f}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _first_line(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _gpu() -> str | None:
    """The CUDA device torch sees, if any (None without torch or CUDA)."""
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - no torch, or a broken CUDA setup: no GPU to report
        return None


def git_state() -> tuple[str | None, bool | None]:
    """(short commit, uncommitted changes?) of this checkout; (None, None) outside git."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True,
                                    text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def environment() -> dict[str, Any]:
    """The machine and software a run was measured on."""
    from importlib import metadata

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    mem = _first_line("/proc/meminfo", "MemTotal")
    commit, dirty = git_state()
    return {
        "date": dt.date.today().isoformat(),
        "cpu": _first_line("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(int(mem.split()[0]) / 2**20, 1) if mem else None,
        "gpu": _gpu(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: version(p) for p in ("cielr-agent", "torch", "llama_cpp_python", "onnxruntime", "langgraph")},
        "git_commit": commit,
        "git_dirty": dirty,
    }


def write_report(suite: str, module: ModuleType, ctx, cases: list[dict], rows: dict[str, dict]) -> dict:
    """Write summary.json, report.md and gallery.html for the cases of this run; return the summary."""
    from .runner import SETTINGS

    ordered = [rows[c["id"]] for c in cases if c["id"] in rows]
    ok = [r for r in ordered if "error" not in r]
    errors = [r for r in ordered if "error" in r]
    settings_path = ctx.out / SETTINGS
    settings = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.exists() else {}
    sessions = settings.pop("sessions", [])
    summary = {
        "suite": suite,
        "settings": {**settings, "limit": ctx.limit},
        "environment": environment(),
        "sessions": sessions,
        "cases": len(cases),
        "finished": len(ordered),
        "errors": len(errors),
        "error_types": _count(r["error"].split(":", 1)[0] for r in errors),
        **module.summarize(ok, ctx),
    }
    write_text_atomic(ctx.out / "summary.json", json.dumps(jsonable(summary), indent=2) + "\n")
    write_text_atomic(ctx.out / "report.md", markdown(summary, module, errors))
    write_text_atomic(ctx.out / "gallery.html", gallery(summary, ordered, module))
    return summary


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def markdown(summary: dict, module: ModuleType, errors: list[dict]) -> str:
    env, s = summary["environment"], summary["settings"]
    pkgs = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    parts = [
        f"# {summary['suite']}: evaluation report\n",
        f"{(module.__doc__ or '').strip().splitlines()[0]}\n",
        f"- date: {env['date']}; machine: {env['cpu']}, {env['cores']} cores, {env['memory_gb']} GB RAM, "
        f"GPU: {env['gpu'] or 'none'}",
        f"- software: Python {env['python']}, {pkgs}",
        f"- measured: {_sessions_text(summary.get('sessions'), env)}",
        f"- settings: llm `{s.get('llm')}`, profile `{s.get('profile')}`, prompt set `{s.get('prompt_set')}`, "
        f"limit {s.get('limit')}, data `{s.get('data')}`",
        f"- cases: {summary['finished']}/{summary['cases']} finished, {summary['errors']} with harness errors "
        f"(excluded from the metrics below){': ' + json.dumps(summary['error_types']) if errors else ''}\n",
        module.markdown(summary),
    ]
    parts.append(_baseline_section(summary))
    if errors:
        parts.append("## Errors\n\n" + table(["case", "error"], [[r["id"], r["error"][:200]] for r in errors]))
    return "\n".join(p for p in parts if p)


def _commit_text(commit: str | None, dirty: bool | None) -> str:
    return f"git {commit}{' (uncommitted changes)' if dirty else ''}"


def _sessions_text(sessions: list[dict] | None, env: dict) -> str:
    """Which commit(s) produced the results; runs older than session records show the report-time commit."""
    if not sessions:
        return f"results of an earlier run; report written at {_commit_text(env['git_commit'], env['git_dirty'])}"
    return "; ".join(f"{s['cases']} cases from {s['started']} at {_commit_text(s['git_commit'], s['git_dirty'])}"
                     for s in sessions)


def _baseline_section(summary: dict) -> str:
    path = BASELINES / summary["suite"] / "summary.json"
    if not path.exists() or "headline" not in summary:
        return ""
    base = json.loads(path.read_text(encoding="utf-8"))
    if base.get("sessions") and base.get("sessions") == summary.get("sessions"):
        return ""  # this run is the committed baseline
    head = base.get("headline", {})
    rows = []
    for key, value in summary["headline"].items():
        old = head.get(key)
        delta = value - old if isinstance(value, (int, float)) and isinstance(old, (int, float)) else None
        rows.append([key, value, old, delta])
    return (f"## Against the committed baseline ({base['environment']['date']}, {base['settings'].get('llm')}, "
            f"{base['finished']} cases)\n\n" + table(["metric", "this run", "baseline", "Δ"], rows))


# -------------------------------------------------------------------------------------------------- gallery

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
.case{background:#fff;border:1px solid #ddd;border-radius:6px;margin:0 0 1.2em;padding:.8em}
.case.err{border-color:#d33}.imgs{display:flex;gap:.6em;flex-wrap:wrap}
figure{margin:0;max-width:320px}figcaption{font-size:.8em;color:#666;text-align:center}img{max-width:320px;display:block}
.meta{font-size:.9em;margin:.4em 0}code{background:#f0f0f0;padding:0 .2em}.bad{color:#c22}.good{color:#282}.na{color:#888}
"""


def gallery(summary: dict, rows: list[dict], module: ModuleType | None = None) -> str:
    """One card per case: input | overlay | output (when the suite has images), instruction, plan, the suite's
    `GALLERY_FIELDS` and its `gallery_detail(row)` HTML."""
    fields = getattr(module, "GALLERY_FIELDS", ())
    detail = getattr(module, "gallery_detail", None)
    cards = []
    captions = {"input": "input", "overlay": "detected objects, plan target (red box), changed pixels (red)"
                + ("; ground-truth mask (green outline)" if summary["suite"] == "reason-edit" else ""),
                "output": "output", "ground_truth": "ground truth"}
    for row in rows:
        e = html.escape
        imgs = "".join(f'<figure><img src="{e(p)}" loading="lazy"><figcaption>{e(captions.get(k, k))}</figcaption>'
                       f"</figure>" for k, p in row.get("gallery", {}).items())
        plan = row.get("plan") or {}
        actions = "".join(f"<li><code>{e(json.dumps(a))}</code></li>" for a in plan.get("actions", []))
        metrics = ", ".join(f"{k}: <b>{e(fmt(row.get(k)))}</b>" for k in fields if k in row)
        problem = row.get("error") or row.get("failure")
        cards.append(
            f'<div class="case{" err" if "error" in row else ""}"><h3>{e(row["id"])}</h3>'
            f'<div class="meta">instruction: <b>{e(str(row.get("instruction", "")))}</b></div>'
            f'<div class="imgs">{imgs}</div>'
            f'<div class="meta">rationale: {e(str(plan.get("rationale")))}</div><ul>{actions}</ul>'
            + (f'<div class="meta">{metrics}</div>' if metrics else "")
            + (f'<div class="meta">{detail(row)}</div>' if detail and "error" not in row else "")
            + (f'<div class="meta bad">{e(problem)}</div>' if problem else "")
            + "</div>")
    title = f"{summary['suite']} gallery"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{_CSS}</style></head>"
            f"<body><h1>{title}</h1><p>{summary['finished']}/{summary['cases']} cases, "
            f"llm {html.escape(str(summary['settings'].get('llm')))}, {summary['environment']['date']}. "
            f"See report.md for the numbers.</p>{''.join(cards)}</body></html>\n")
