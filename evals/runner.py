"""The benchmark runner: `cielr eval SUITE` / `python -m cielr_agent.evals SUITE`.

A run lives in one folder (`--out`, default `runs/eval/<suite>`): `run.json` (its settings and the sessions
that ran its cases: start time, git commit, case count), `results.jsonl`
(one row per case, appended and flushed as each case finishes), and at the end `report.md`, `summary.json`
and `gallery.html` (+ `images/`, `outputs/`). Running again with the same settings resumes: finished cases are
skipped. An exception in one case is recorded in its row (`error`) and the run goes on.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import shutil
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from .harness import DEFAULT_DATA, EvalContext

SUITES = {
    "reason-edit": "reason_edit",
    "complexbench-plan": "complexbench",
    "magicbrush": "magicbrush",
    "reasoning-local": "reasoning_local",
    "speed": "speed",
    "robustness": "robustness",
}
RESULTS, SETTINGS = "results.jsonl", "run.json"


class EvalSetupError(ValueError):
    """The run cannot start as asked (unknown suite, missing data, settings differ from the folder's run)."""


def load_suite(name: str) -> ModuleType:
    """The suite module: `cases(ctx)` (dicts with a unique "id"), `run_case(case, ctx)` -> row fields,
    `summarize(rows, ctx)` -> dict, `markdown(summary)` -> str; optionally `NEEDS_LLM`, `prepare(ctx)` (run before
    the first pending case), `GALLERY_FIELDS` and `gallery_detail(row)`."""
    if name not in SUITES:
        raise EvalSetupError(f"unknown suite {name!r}; suites: {', '.join(SUITES)}")
    return importlib.import_module(f"{__package__}.{SUITES[name]}")


def read_rows(path: Path) -> dict[str, dict]:
    """The last row per case id in a results file (a retried case appends a newer row)."""
    rows: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["id"]] = row
    return rows


def _settings(suite: str, ctx: EvalContext) -> dict[str, Any]:
    return {"suite": suite, "llm": ctx.llm, "profile": ctx.profile, "prompt_set": ctx.config().prompt_set,
            "data": str(Path(ctx.data).resolve()), "overrides": ctx.overrides}


def _check_settings(suite: str, ctx: EvalContext, fresh: bool) -> None:
    path = ctx.out / SETTINGS
    wanted = _settings(suite, ctx)
    if fresh:
        for name in (RESULTS, SETTINGS, "images", "outputs", "inputs"):
            target = ctx.out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    elif path.exists():
        had = json.loads(path.read_text(encoding="utf-8"))
        differ = {k: (had.get(k), v) for k, v in wanted.items() if had.get(k) != v}
        if differ:
            raise EvalSetupError(f"{ctx.out} holds a run with other settings ({differ}); use another --out or --fresh")
        wanted["sessions"] = had.get("sessions", [])
    ctx.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")


def _record_session(ctx: EvalContext, pending: int) -> None:
    """Append when, at which git commit and how many cases this invocation runs to run.json's "sessions"."""
    from .report import git_state

    path = ctx.out / SETTINGS
    settings = json.loads(path.read_text(encoding="utf-8"))
    commit, dirty = git_state()
    settings.setdefault("sessions", []).append({
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": commit, "git_dirty": dirty, "cases": pending})
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def _case_fields(case: dict) -> dict:
    """The case's own JSON-able fields (private keys starting with "_" stay out of the results)."""
    return {k: v for k, v in case.items() if not k.startswith("_")}


def run_suite(suite: str, ctx: EvalContext, *, fresh: bool = False, retry_errors: bool = False,
              progress: bool = True, report_only: bool = False) -> dict:
    """Run (or resume) a suite into `ctx.out`, then write its report; returns the summary."""
    from .report import write_report

    module = load_suite(suite)
    cases = module.cases(ctx)
    ids = [c["id"] for c in cases]
    if len(set(ids)) != len(ids):
        raise EvalSetupError(f"suite {suite} has duplicate case ids")
    if not report_only:
        _check_settings(suite, ctx, fresh)
        rows = read_rows(ctx.out / RESULTS)
        pending = [c for c in cases if c["id"] not in rows or (retry_errors and "error" in rows[c["id"]])]
        if ctx.only:
            pending = [c for c in pending if fnmatch.fnmatch(c["id"], ctx.only)]
        if pending:
            _record_session(ctx, len(pending))
            _run_cases(module, ctx, pending, done=len(cases) - len(pending), total=len(cases), progress=progress)
    return write_report(suite, module, ctx, cases, read_rows(ctx.out / RESULTS))


def _run_cases(module: ModuleType, ctx: EvalContext, pending: list[dict], *, done: int, total: int,
               progress: bool) -> None:
    from tqdm import tqdm

    if ctx.model is None and getattr(module, "NEEDS_LLM", True):
        from cielr_agent.llm import make_chat_model

        ctx.model = make_chat_model(ctx.llm, **ctx.config().llm_options)  # once per run
    if hasattr(module, "prepare"):
        module.prepare(ctx)
    errors = 0
    with open(ctx.out / RESULTS, "a", encoding="utf-8") as out, \
            tqdm(total=total, initial=done, desc=ctx.out.name, unit="case", disable=not progress,
                 file=sys.stderr, dynamic_ncols=True) as bar:
        for case in pending:
            t0 = time.perf_counter()
            try:
                row = {**_case_fields(case), **module.run_case(case, ctx)}
            except Exception as exc:  # one failing case never stops the run
                errors += 1
                row = {**_case_fields(case), "error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc(limit=-4)}
            row["seconds"] = round(time.perf_counter() - t0, 2)
            out.write(json.dumps(row, default=str) + "\n")
            out.flush()
            bar.set_postfix_str(f"{case['id']}: {'ERROR' if 'error' in row else row.get('status', 'ok')}"
                                f"{f' ({errors} errors)' if errors else ''}", refresh=False)
            bar.update()


# ------------------------------------------------------------------------------------------------------ CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `eval` options (shared by `cielr eval` and `python -m cielr_agent.evals`)."""
    p.add_argument("suite", choices=list(SUITES), help="which benchmark to run")
    p.add_argument("--llm", default="embedded", help="LLM spec, as for `cielr edit` (default: embedded)")
    p.add_argument("--profile", help="TOML profile (backends, thresholds)")
    p.add_argument("--prompt-set", help="bundled prompt set name or a folder of prompt files")
    p.add_argument("--limit", type=int, help="only the first N cases (complexbench-plan: N per split, evenly spaced)")
    p.add_argument("--out", help="run folder (default: runs/eval/<suite>); an existing run there is resumed")
    p.add_argument("--data", help=f"data folder (default: {DEFAULT_DATA}; reason-edit: a Reason-Edit folder)")
    p.add_argument("--only", metavar="PATTERN", help="run only the pending cases whose id matches (e.g. 'open-*'); "
                   "the report covers every case run so far")
    p.add_argument("--cold", action="store_true", help="speed: also time the README edit as a fresh `cielr edit` "
                   "process (wall time, peak RSS)")
    p.add_argument("--fresh", action="store_true", help="discard the results already in --out and start over")
    p.add_argument("--retry-errors", action="store_true", help="run again the cases whose row has an error")
    p.add_argument("--report-only", action="store_true", help="only rewrite report.md/summary.json/gallery.html")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the suite the parsed arguments name; print where the report is. Exit status 2 on setup errors."""
    out = Path(args.out or Path("runs") / "eval" / args.suite)
    ctx = EvalContext(data=Path(args.data or DEFAULT_DATA), out=out, llm=args.llm, profile=args.profile,
                      prompt_set=args.prompt_set, limit=args.limit, only=args.only, cold=args.cold)
    try:
        summary = run_suite(args.suite, ctx, fresh=args.fresh, retry_errors=args.retry_errors,
                            progress=not args.quiet, report_only=args.report_only)
    except (EvalSetupError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{summary['finished']}/{summary['cases']} cases finished, {summary['errors']} with errors; "
          f"report: {out / 'report.md'}, gallery: {out / 'gallery.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cielr_agent.evals", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run_from_args(p.parse_args(argv))
