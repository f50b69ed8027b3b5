"""Sessions: one image edited over several instructions, with history, undo, redo and checkout.

A session is a folder and a LangGraph thread. The folder holds every image version once, named by the sha256 of
its file (`images/<sha>.png`), the SSR each version was planned or left with (`scenes/<sha>.json`), and the
thread's checkpoints (`session.sqlite`, langgraph-checkpoint-sqlite). The graph's state holds only version
records — numbers, relative paths, the instruction and what was done — never pixels or masks, so a checkpoint
stays a few kB however large the photo is.

Each edit starts from the head version: its image, its SSR (object ids stay the same from turn to turn, so
"now make it smaller" can mean the object edited last) and notes on what earlier edits on the way to it did.
`undo` moves the head to the parent version, `redo` back again, `checkout N` to any version; an edit made after
an undo starts a new branch and clears the redo list. The CLI (`cielr session ...`), the Python API, the
servers and the MCP tools all use this class.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, TypedDict

from pydantic import BaseModel

from .errors import EditError

SESSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_THREAD = {"configurable": {"thread_id": "session"}}


def sessions_root() -> Path:
    """Where named sessions live: $CIELR_SESSIONS, else ~/.local/share/cielr-agent/sessions."""
    env = os.environ.get("CIELR_SESSIONS")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "cielr-agent" / "sessions"


class Version(BaseModel):
    """One image of a session. Paths are relative to the session folder."""

    number: int
    image: str
    scene: str | None = None  # the SSR of this image (after its edit), once known
    parent: int | None = None
    instruction: str | None = None
    done: list[str] = []  # what the edit did, one line per action ("remove #1 bicycle box [116,135,562,475]")
    rationale: str | None = None
    created: str = ""


class SessionRequest(BaseModel):
    """What one invocation of the session graph does."""

    op: Literal["start", "edit", "undo", "redo", "checkout"]
    image: str | None = None  # start: the original image file
    instruction: str | None = None  # edit
    version: int | None = None  # checkout


class SessionState(TypedDict, total=False):
    """Checkpointed: version records, the head, the redo stack and the last request's outcome."""

    versions: list[Version]  # every version ever made, numbered by position
    head: int
    redo: list[int]
    request: SessionRequest
    last: str  # one line on what the last request did


@dataclass
class SessionContext:
    """Runtime context of the session graph (not checkpointed)."""

    folder: Path
    edit_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments for cielr_agent.api.edit
    results: list[Any] = field(default_factory=list)  # the EditResult of an edit request lands here


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def store_file(folder: Path, kind: str, data: bytes, suffix: str) -> str:
    """Write `data` once under folder/kind/<sha256><suffix> (atomically); returns the relative path."""
    from .imaging import write_bytes_atomic

    rel = f"{kind}/{hashlib.sha256(data).hexdigest()}{suffix}"
    path = folder / rel
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)
    return rel


def _png_bytes(image) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ graph nodes


def _route(state: SessionState) -> str:
    return state["request"].op


def _start(state: SessionState, runtime) -> dict:
    if state.get("versions"):
        raise EditError("this session already has an original image")
    from .imaging import load_image

    image = load_image(state["request"].image)  # decoded and checked, then stored as PNG (the input is untouched)
    rel = store_file(runtime.context.folder, "images", _png_bytes(image), ".png")
    return {"versions": [Version(number=0, image=rel, created=_now())], "head": 0, "redo": [],
            "last": f"started from {Path(state['request'].image).name}"}


def _edit(state: SessionState, runtime) -> dict:
    from .api import edit
    from .ssr import SceneGraph

    ctx: SessionContext = runtime.context
    versions, head = state["versions"], state["head"]
    current = versions[head]
    scene = None
    if current.scene is not None:
        scene = SceneGraph.model_validate_json((ctx.folder / current.scene).read_text(encoding="utf-8"))
    instruction = state["request"].instruction or ""
    result = edit(ctx.folder / current.image, instruction, None, scene=scene, notes=_notes(versions, head),
                  **ctx.edit_options)
    ctx.results.append(result)
    versions = list(versions)
    if current.scene is None and result.scenes:  # the SSR perceived now is kept for later edits of this version
        versions[head] = current.model_copy(update={"scene": _store_scene(ctx.folder, result.scenes[0])})
    if result.image_array is None:  # dry run or rejected plan: no new version
        return {"versions": versions, "last": f"{result.status}: nothing changed"}
    summary = result.summary_json()
    done = [_action_line(a) for a in summary["plan"]["actions"]]
    new = Version(number=len(versions), image=store_file(ctx.folder, "images", _png_bytes(result.image_array), ".png"),
                  scene=_store_scene(ctx.folder, result.scenes[-1]) if result.scenes else None, parent=head,
                  instruction=instruction, done=done, rationale=summary["plan"]["rationale"], created=_now())
    return {"versions": [*versions, new], "head": new.number, "redo": [],
            "last": f"version {new.number}: " + ("; ".join(done) or "nothing")}


def _undo(state: SessionState, runtime) -> dict:
    current = state["versions"][state["head"]]
    if current.parent is None:
        raise EditError("nothing to undo: the session is at its original image")
    return {"head": current.parent, "redo": [*state.get("redo", []), current.number],
            "last": f"undid version {current.number} ({current.instruction!r})"}


def _redo(state: SessionState, runtime) -> dict:
    redo = list(state.get("redo", []))
    if not redo:
        raise EditError("nothing to redo")
    number = redo.pop()
    return {"head": number, "redo": redo, "last": f"redid version {number}"}


def _checkout(state: SessionState, runtime) -> dict:
    number = state["request"].version
    if number is None or not 0 <= number < len(state["versions"]):
        raise EditError(f"no version {number}; this session has versions 0-{len(state['versions']) - 1}")
    return {"head": number, "redo": [], "last": f"checked out version {number}"}


def _store_scene(folder: Path, scene) -> str:
    return store_file(folder, "scenes", scene.model_dump_json(exclude={"history"}).encode(), ".json")


def _action_line(action: dict) -> str:
    target = action.get("target")
    what = f" #{target['id']} {target['label']} box [{', '.join(str(round(v)) for v in target['box'])}]" if target else ""
    extra = ", ".join(f"{k} {v}" for k, v in action.items() if k not in ("type", "target") and v not in (None, [], ""))
    return f"{action['type']}{what}" + (f" ({extra})" if extra else "")


def _notes(versions: list[Version], head: int) -> list[str]:
    """What the edits on the way from the original to the head did, oldest first (the planner reads them)."""
    chain, number = [], head
    while number is not None and versions[number].parent is not None:
        chain.append(versions[number])
        number = versions[number].parent
    return [f"earlier edit {i}: \"{v.instruction}\" -> " + ("; ".join(v.done) or "nothing")
            for i, v in enumerate(reversed(chain), 1)]


def build_session_graph(checkpointer: Any):
    """The session state machine: START routes each request to one small node."""
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(SessionState, context_schema=SessionContext)
    for name, node in (("start", _start), ("edit", _edit), ("undo", _undo), ("redo", _redo),
                       ("checkout", _checkout)):
        graph.add_node(name, node)
        graph.add_edge(name, END)
    graph.add_conditional_edges(START, _route, ["start", "edit", "undo", "redo", "checkout"])
    return graph.compile(checkpointer=checkpointer)


# ------------------------------------------------------------------------------------------ public class


class Session:
    """A durable editing session in `folder` (see the module docstring).

        s = Session.create("porch", "photo.jpg")
        s.edit("remove the bicycle"); s.edit("make the dog blue"); s.undo()
        s.head_image  # path of the current version's PNG
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        db = self.folder / "session.sqlite"
        if not db.exists():
            raise EditError(f"no session in {self.folder}; create one with `cielr session new NAME IMAGE`")
        self._open(db)

    def _open(self, db: Path) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        from cielr_agent.graphs.state import checkpoint_serializer

        for stale in (*self.folder.glob("images/.*.part"), *self.folder.glob("scenes/.*.part")):
            stale.unlink(missing_ok=True)  # the temp file of a write a killed process never finished
        self._conn = sqlite3.connect(str(db), check_same_thread=False)
        self._lock = threading.Lock()
        serde = checkpoint_serializer(Version, SessionRequest)
        self._graph = build_session_graph(SqliteSaver(self._conn, serde=serde))

    @classmethod
    def create(cls, name_or_folder: str | Path, image: str | Path) -> Session:
        """A new session from an image: a name (a folder under `sessions_root()`) or a folder path."""
        folder = resolve_folder(name_or_folder)
        if (folder / "session.sqlite").exists():
            raise EditError(f"a session already exists in {folder}; open it, or choose another name")
        if not Path(image).is_file():
            raise EditError(f"image not found: {image}")
        folder.mkdir(parents=True, exist_ok=True)
        session = cls.__new__(cls)
        session.folder = folder
        session._open(folder / "session.sqlite")
        try:
            session._run(SessionRequest(op="start", image=str(Path(image).resolve())))
        except Exception:
            session.close()
            (folder / "session.sqlite").unlink(missing_ok=True)
            raise
        return session

    @classmethod
    def open(cls, name_or_folder: str | Path) -> Session:
        return cls(resolve_folder(name_or_folder))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._graph.get_state(_THREAD).values

    @property
    def versions(self) -> list[Version]:
        return list(self.state.get("versions", []))

    @property
    def head(self) -> Version:
        state = self.state
        return state["versions"][state["head"]]

    @property
    def head_image(self) -> Path:
        return self.folder / self.head.image

    def image_of(self, number: int) -> Path:
        versions = self.versions
        if not 0 <= number < len(versions):
            raise EditError(f"no version {number}; this session has versions 0-{len(versions) - 1}")
        return self.folder / versions[number].image

    def history(self) -> list[dict]:
        """Every version with its parent, instruction, what was done and whether it is the head."""
        state = self.state
        return [{**v.model_dump(), "head": v.number == state["head"], "redo": v.number in state.get("redo", [])}
                for v in state.get("versions", [])]

    # -- requests ----------------------------------------------------------------------------------------------

    def edit(self, instruction: str, *, progress: Callable[[str, str], None] | None = None,
             approver: Callable[[dict], Any] | None = None, **options: Any):
        """Edit the head version; returns the EditResult (its image becomes the new head unless nothing ran).
        `options` are cielr_agent.api.edit's keyword arguments (llm, profile, dry_run, confirm, ...)."""
        if not isinstance(instruction, str) or not instruction.strip():
            from .errors import InstructionError

            raise InstructionError("the instruction is empty; say what to change, e.g. \"remove the bicycle\"")
        context = SessionContext(folder=self.folder, edit_options={**options, "progress": progress,
                                                                    "approver": approver})
        self._run(SessionRequest(op="edit", instruction=instruction.strip()), context)
        return context.results[-1]

    def undo(self) -> Version:
        self._run(SessionRequest(op="undo"))
        return self.head

    def redo(self) -> Version:
        self._run(SessionRequest(op="redo"))
        return self.head

    def checkout(self, number: int) -> Version:
        self._run(SessionRequest(op="checkout", version=int(number)))
        return self.head

    def export(self, path: str | Path, number: int | None = None) -> Path:
        """Copy a version's image (default: the head) to `path` (atomically; format from the suffix)."""
        from .imaging import load_image, save_image_atomic

        source = self.head_image if number is None else self.image_of(number)
        return save_image_atomic(load_image(source), path)

    def _run(self, request: SessionRequest, context: SessionContext | None = None) -> None:
        with self._lock:
            self._graph.invoke({"request": request}, _THREAD, context=context or SessionContext(folder=self.folder))


def resolve_folder(name_or_folder: str | Path) -> Path:
    """A session name (letters, digits, . _ -) under sessions_root(), or a folder path (containing a slash)."""
    text = str(name_or_folder)
    if "/" in text or os.sep in text or text.startswith("~"):
        return Path(text).expanduser()
    if not SESSION_NAME.match(text):
        raise EditError(f"invalid session name {text!r}: use letters, digits, '.', '_' or '-' (or give a folder path)")
    return sessions_root() / text


def run_request(session: str | Path, op: str, *, image: str | Path | None = None, instruction: str | None = None,
                version: int | None = None, progress: Callable[[str, str], None] | None = None,
                **edit_options: Any) -> dict:
    """One request on a named session — new, edit, undo, redo, checkout or history — as the servers make it (the
    MCP tools, the LangGraph server's `cielr_session` graph); returns the session afterwards: head number and image,
    the versions, what the request did and, for an edit, the edit's summary."""
    if op == "new":
        if image is None:
            raise EditError("a new session needs an image")
        s = Session.create(session, image)
    else:
        s = Session.open(session)
    with s:
        result = None
        if op == "edit":
            result = s.edit(instruction or "", progress=progress, **edit_options)
        elif op in ("undo", "redo"):
            getattr(s, op)()
        elif op == "checkout":
            if version is None:
                raise EditError("checkout needs a version number")
            s.checkout(version)
        elif op not in ("new", "history"):
            raise EditError(f"unknown session request {op!r}: new, edit, undo, redo, checkout or history")
        return {"session": s.folder.name, "head": s.head.number, "image": str(s.head_image),
                "last": s.state.get("last", ""), "versions": s.history(),
                "edit": result.summary_json() if result is not None else None}
