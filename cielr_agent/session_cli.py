"""`cielr session ...`: multi-turn editing of one image with history, undo, redo and checkout (see sessions.py)."""

from __future__ import annotations

import argparse
import json


def _print_version(version: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(version))
        return
    what = "; ".join(version["done"]) or "original"
    print(f"version {version['number']}: {what}")


def _history(args: argparse.Namespace) -> int:
    from .sessions import Session

    with Session.open(args.name) as s:
        rows = s.history()
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        mark = "*" if row["head"] else ("r" if row["redo"] else " ")
        parent = "" if row["parent"] is None else f" (from {row['parent']})"
        what = f"\"{row['instruction']}\": " + ("; ".join(row["done"]) or "nothing") if row["instruction"] else "original"
        print(f"{mark} {row['number']}{parent} {what}  [{row['image']}]")
    return 0


def _new(args: argparse.Namespace) -> int:
    from .sessions import Session

    with Session.create(args.name, args.image) as s:
        print(f"session {args.name} in {s.folder}: version 0 = {args.image}")
    return 0


def _edit(args: argparse.Namespace) -> int:
    from .cli import _approve_on_terminal, _Progress
    from .sessions import Session

    overrides = {"confirm": True if args.confirm else None, "prompt_set": args.prompt_set}
    with Session.open(args.name) as s:
        result = s.edit(args.instruction, llm=args.llm, profile=args.profile, dry_run=args.dry_run,
                        progress=_Progress(quiet=args.quiet), approver=_approve_on_terminal, **overrides)
        head = s.head
        image = s.head_image
    if args.json:
        print(json.dumps({**result.summary_json(), "version": head.number, "image": str(image)}))
    else:
        if result.plan:
            print(f"plan: {result.plan.rationale}")
        print(f"head: version {head.number} ({image})" if result.image_array is not None
              else f"{result.status}: no new version; head stays at {head.number}")
    return 0 if result.status != "rejected" else 1


def _move(args: argparse.Namespace) -> int:
    from .sessions import run_request

    out = run_request(args.name, args.session_command, version=getattr(args, "version", None))
    _print_version(out["versions"][out["head"]], args.json)
    return 0


def _export(args: argparse.Namespace) -> int:
    from .sessions import Session

    with Session.open(args.name) as s:
        path = s.export(args.output, args.version)
    print(f"wrote {path}")
    return 0


def add_session_parser(sub) -> None:
    """The `session` command and its subcommands."""
    p = sub.add_parser("session", help="edit one image over several instructions: history, undo, redo, checkout",
                       description="Sessions live in $CIELR_SESSIONS (default ~/.local/share/cielr-agent/sessions); "
                                   "NAME may also be a folder path.")
    ss = p.add_subparsers(dest="session_command", required=True)
    n = ss.add_parser("new", help="start a session from an image (version 0)")
    n.add_argument("name")
    n.add_argument("image")
    n.set_defaults(func=_new)
    e = ss.add_parser("edit", help="edit the head version; the result becomes the new head")
    e.add_argument("name")
    e.add_argument("instruction")
    e.add_argument("--llm")
    e.add_argument("--profile")
    e.add_argument("--prompt-set")
    e.add_argument("--dry-run", action="store_true")
    e.add_argument("--confirm", action="store_true", help="show the plan and ask before executing it")
    e.add_argument("--json", action="store_true")
    e.add_argument("-q", "--quiet", action="store_true")
    e.set_defaults(func=_edit)
    for name, text in (("undo", "move the head to the version it was made from"),
                       ("redo", "move the head back to the version last undone")):
        u = ss.add_parser(name, help=text)
        u.add_argument("name")
        u.add_argument("--json", action="store_true")
        u.set_defaults(func=_move)
    c = ss.add_parser("checkout", help="make any version the head")
    c.add_argument("name")
    c.add_argument("version", type=int)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_move)
    h = ss.add_parser("history", help="list the versions (* head, r redo-able)")
    h.add_argument("name")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=_history)
    x = ss.add_parser("export", help="write a version's image (default: the head)")
    x.add_argument("name")
    x.add_argument("output")
    x.add_argument("--version", type=int)
    x.set_defaults(func=_export)
