"""`cielr serve`: a page for editing by hand, over the same sessions as the CLI, MCP and LangGraph servers.

A Starlette app (the `server` extra) serving one static page (`cielr_agent/web/`, no build step, no CDN) and a
small JSON API:

    GET  /api/images                      images in the allowed folders
    GET  /api/file?path=P                 an image of the allowed folders
    POST /api/upload?name=N               raw bytes → <first folder>/uploads/N
    POST /api/sessions {"image": P}       a new session → its history
    GET  /api/sessions/{name}             history (versions, head)
    GET  /api/sessions/{name}/image/{n}   a version's PNG (?download=1 as an attachment)
    POST /api/sessions/{name}/{undo|redo|checkout}
    POST /api/sessions/{name}/edit {"instruction"}  → a job
    GET  /api/jobs/{id}?since=K           progress lines, the plan awaiting approval, the outcome
    GET  /api/jobs/{id}/overlay           the planned SSR drawn over the image, targets in red
    POST /api/jobs/{id}/decision {"answer": "approve" | "reject" | {"point": [x, y]} | {"object_id": N}}

An edit runs in a worker thread as `Session.edit(..., confirm=True, approver=...)`: the approver publishes the plan
and the planned SSR and waits for the page's decision (a click on an object retargets the plan; a click beside
every known object segments one from the point). Files outside the allowed folders and the sessions folder are
never read or written.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EditError
from .paths import PathPolicy
from .sessions import Session

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
WEB_ROOT = Path(__file__).with_name("web")
DECISION_TIMEOUT_S = 1800  # an unanswered plan is rejected after half an hour


@dataclass
class EditJob:
    """One edit of a session as the page follows it."""

    id: str
    session: str
    instruction: str
    status: str = "running"  # running | awaiting_approval | done | rejected | failed
    events: list[str] = field(default_factory=list)
    approval: dict | None = None  # plan, objects, targets (while awaiting approval)
    overlay: bytes | None = None  # PNG
    outcome: dict | None = None  # the edit's summary when done
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)
    _answer: Any = None
    _answered: threading.Event = field(default_factory=threading.Event)

    def log(self, node: str, message: str) -> None:
        self.events.append(f"[{time.perf_counter() - self.started:5.1f}s] {node}: {message}")

    def view(self, since: int = 0) -> dict:
        return {"id": self.id, "session": self.session, "instruction": self.instruction, "status": self.status,
                "events": self.events[since:], "next": len(self.events), "approval": self.approval,
                "outcome": self.outcome, "error": self.error}


class WebEditor:
    """The page's state: allowed folders, the sessions folder, running jobs; one edit per session at a time."""

    def __init__(self, folders: list[str | Path], sessions: str | Path, edit_options: dict | None = None):
        if not folders:
            raise EditError("give at least one folder the page may read images from")
        self.policy = PathPolicy(folders, hint="start `cielr serve` with --folder FOLDER to add one")
        self.folders = self.policy.allowed
        self.sessions = Path(sessions).expanduser().resolve()
        self.sessions.mkdir(parents=True, exist_ok=True)
        self.edit_options = dict(edit_options or {})
        self.jobs: dict[str, EditJob] = {}
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    # -- paths -----------------------------------------------------------------------------------------------

    def allowed(self, path: str | Path) -> Path:
        """`path` resolved (a relative one against the first folder), if it lies in an allowed folder."""
        return self.policy.check(path, base=self.folders[0])

    def images(self) -> list[dict]:
        found = []
        for folder in self.folders:
            for p in sorted(folder.rglob("*")):
                hidden = any(part.startswith(".") for part in p.relative_to(folder).parts)  # .git, .cielr-batch
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not hidden:
                    found.append({"path": str(p), "name": str(p.relative_to(folder))})
        return found[:2000]

    def upload(self, name: str, data: bytes) -> Path:
        from .imaging import load_image, write_bytes_atomic

        safe = "".join(c for c in Path(name).name if c.isalnum() or c in "._-").lstrip(".") or "upload"
        if Path(safe).suffix.lower() not in IMAGE_SUFFIXES:
            raise EditError(f"{name}: not an image file name (use {', '.join(IMAGE_SUFFIXES)})")
        target = self.folders[0] / "uploads" / f"{uuid.uuid4().hex[:8]}-{safe}"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)
        try:
            load_image(target)  # decodable, or removed with a clear error
        except Exception:
            target.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                target.parent.rmdir()  # only when it is empty: nothing of a failed upload is left
            raise
        return target

    # -- sessions --------------------------------------------------------------------------------------------

    def session_folder(self, name: str) -> Path:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise EditError(f"invalid session name {name!r}")
        return self.sessions / name

    def new_session(self, image: str) -> dict:
        source = self.allowed(image)
        name = f"{''.join(c for c in source.stem if c.isalnum())[:24] or 'image'}-{uuid.uuid4().hex[:6]}"
        with Session.create(self.session_folder(name), source):
            pass
        return self.history(name)

    def history(self, name: str) -> dict:
        with Session(self.session_folder(name)) as s:
            return {"session": name, "head": s.head.number, "versions": s.history(),
                    "last": s.state.get("last", ""), "busy": name in self._busy}

    def image_of(self, name: str, number: int) -> Path:
        with Session(self.session_folder(name)) as s:
            return s.image_of(number)

    def step(self, name: str, op: str, version: int | None = None) -> dict:
        with self._claim(name), Session(self.session_folder(name)) as s:
            if op == "checkout":
                s.checkout(int(version if version is not None else -1))
            elif op in ("undo", "redo"):
                getattr(s, op)()
            else:
                raise EditError(f"unknown session request {op!r}")
        return self.history(name)

    def _acquire(self, name: str) -> None:
        with self._lock:
            if name in self._busy:
                raise BusyError(f"session {name} is busy with an edit; wait for it or answer its plan")
            self._busy.add(name)

    def _release(self, name: str) -> None:
        with self._lock:
            self._busy.discard(name)

    @contextlib.contextmanager
    def _claim(self, name: str):
        """The session for one request: refused while another request holds it."""
        self._acquire(name)
        try:
            yield
        finally:
            self._release(name)

    # -- edits -------------------------------------------------------------------------------------------------

    def start_edit(self, name: str, instruction: str) -> EditJob:
        if not instruction or not instruction.strip():
            raise EditError("the instruction is empty; say what to change, e.g. \"remove the bicycle\"")
        folder = self.session_folder(name)
        if not (folder / "session.sqlite").exists():
            raise EditError(f"no session {name}")
        self._acquire(name)  # released by the worker thread when the edit ends
        job = EditJob(id=uuid.uuid4().hex[:12], session=name, instruction=instruction.strip())
        self.jobs[job.id] = job

        def run() -> None:
            try:
                with Session(folder) as s:
                    result = s.edit(job.instruction, progress=job.log, approver=lambda p: self._await(job, s, p),
                                    confirm=True, **self.edit_options)
                job.outcome = {**result.summary_json(), "head": self.history(name)["head"]}
                job.status = "done" if result.image_array is not None else "rejected"
                job.log(job.status, f"version {job.outcome['head']}" if job.status == "done" else "nothing changed")
            except Exception as exc:  # noqa: BLE001 - shown on the page
                job.error = f"{type(exc).__name__}: {exc}"
                job.log("failed", job.error)
                job.status = "failed"
            finally:
                job.approval = None
                self._release(name)

        threading.Thread(target=run, name=f"cielr-edit-{job.id}", daemon=True).start()
        return job

    def _await(self, job: EditJob, session: Session, payload: dict) -> Any:
        """The approver: publish the plan, the objects and an overlay, then wait for the page's answer."""
        from .imaging import load_image
        from .overlay import draw_overlay

        scene = payload["scene_graph"]
        plan = payload["plan"]
        targets = [a["target"] for a in plan["actions"] if isinstance(a.get("target"), int)]
        image = load_image(session.head_image)
        masks = [o.mask.to_array() for o in scene.objects if o.id in targets and o.mask is not None]
        job.overlay = _png(draw_overlay(image, scene, targets, masks))
        job.approval = {"plan": plan, "targets": targets, "width": scene.width, "height": scene.height,
                        "objects": [{"id": o.id, "label": o.label, "box": [round(v, 1) for v in o.box]}
                                    for o in scene.objects]}
        job.status = "awaiting_approval"
        job.log("approve", "waiting for your decision")
        if not job._answered.wait(DECISION_TIMEOUT_S):
            job.log("approve", "no answer: rejected")
            return False
        job.status = "running"
        job.approval = None
        return job._answer

    def decide(self, job_id: str, answer: Any) -> EditJob:
        job = self.job(job_id)
        if job.status != "awaiting_approval":
            raise EditError(f"job {job_id} is not waiting for a decision (it is {job.status})")
        if answer in ("approve", True):
            answer = True
        elif answer in ("reject", False):
            answer = False
        elif not (isinstance(answer, dict) and ("point" in answer or "object_id" in answer)):
            raise EditError('answer with "approve", "reject", {"point": [x, y]} or {"object_id": N}')
        job.log("approve", f"your answer: {answer}")
        job._answer = answer
        job._answered.set()
        return job

    def job(self, job_id: str) -> EditJob:
        if job_id not in self.jobs:
            raise KeyError(f"no job {job_id}")
        return self.jobs[job_id]


class BusyError(EditError):
    """The session is in the middle of another request."""


def _png(array) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def build_app(editor: WebEditor):
    """The Starlette application over `editor`."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    def errors(handler):
        async def wrapped(request: Request):
            try:
                return await handler(request)
            except PermissionError as exc:
                return JSONResponse({"error": str(exc)}, status_code=403)
            except BusyError as exc:
                return JSONResponse({"error": str(exc)}, status_code=409)
            except KeyError as exc:
                return JSONResponse({"error": str(exc).strip("'\"")}, status_code=404)
            except (EditError, ValueError, OSError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return wrapped

    async def body(request: Request) -> dict:
        try:
            data = await request.json()
        except ValueError:
            raise EditError("the request body is not JSON") from None
        if not isinstance(data, dict):
            raise EditError("the request body must be a JSON object")
        return data

    async def index(request: Request):
        return FileResponse(WEB_ROOT / "index.html")

    async def images(request: Request):
        return JSONResponse({"images": await run_in_threadpool(editor.images)})

    async def file(request: Request):
        path = editor.allowed(request.query_params.get("path", ""))
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            raise KeyError(f"no image {path.name}")
        return FileResponse(path)

    async def upload(request: Request):
        path = await run_in_threadpool(editor.upload, request.query_params.get("name", "upload.png"),
                                       await request.body())
        return JSONResponse({"path": str(path)})

    async def new_session(request: Request):
        return JSONResponse(await run_in_threadpool(editor.new_session, str((await body(request)).get("image", ""))))

    async def session(request: Request):
        return JSONResponse(await run_in_threadpool(editor.history, request.path_params["name"]))

    async def version_image(request: Request):
        name, number = request.path_params["name"], request.path_params["number"]
        path = await run_in_threadpool(editor.image_of, name, number)
        if request.query_params.get("download"):
            return FileResponse(path, filename=f"{name}-v{number}.png")
        return FileResponse(path, headers={"Cache-Control": "max-age=31536000, immutable"})  # content-addressed

    async def step(request: Request):
        op = request.path_params["op"]
        version = (await body(request)).get("version") if op == "checkout" else None
        return JSONResponse(await run_in_threadpool(editor.step, request.path_params["name"], op, version))

    async def edit(request: Request):
        job = editor.start_edit(request.path_params["name"], str((await body(request)).get("instruction", "")))
        return JSONResponse(job.view(), status_code=202)

    async def job(request: Request):
        return JSONResponse(editor.job(request.path_params["id"]).view(int(request.query_params.get("since", 0))))

    async def overlay(request: Request):
        j = editor.job(request.path_params["id"])
        if j.overlay is None:
            raise KeyError("this job has no plan to show yet")
        return Response(j.overlay, media_type="image/png")

    async def decision(request: Request):
        return JSONResponse(editor.decide(request.path_params["id"], (await body(request)).get("answer")).view())

    routes = [
        Route("/", index),
        Route("/api/images", errors(images)),
        Route("/api/file", errors(file)),
        Route("/api/upload", errors(upload), methods=["POST"]),
        Route("/api/sessions", errors(new_session), methods=["POST"]),
        Route("/api/sessions/{name}", errors(session)),
        Route("/api/sessions/{name}/image/{number:int}", errors(version_image)),
        Route("/api/sessions/{name}/edit", errors(edit), methods=["POST"]),
        Route("/api/sessions/{name}/{op:str}", errors(step), methods=["POST"]),
        Route("/api/jobs/{id}", errors(job)),
        Route("/api/jobs/{id}/overlay", errors(overlay)),
        Route("/api/jobs/{id}/decision", errors(decision), methods=["POST"]),
        Mount("/static", StaticFiles(directory=WEB_ROOT)),
    ]
    return Starlette(routes=routes)


def serve(folders: list[str], *, sessions: str | Path | None = None, host: str = "127.0.0.1", port: int = 8765,
          llm: str | None = None, profile: str | None = None) -> None:
    """Run the page until interrupted."""
    import uvicorn

    from .sessions import sessions_root

    options = {k: v for k, v in (("llm", llm), ("profile", profile)) if v}
    editor = WebEditor(folders or ["."], sessions or sessions_root(), options)
    print(f"cielr serve: http://{host}:{port}/  (folders: {', '.join(map(str, editor.folders))})", flush=True)
    uvicorn.run(build_app(editor), host=host, port=port, log_level="warning")
