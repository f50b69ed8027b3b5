"""`cielr mcp`: the editing capabilities as Model Context Protocol tools (official `mcp` SDK, FastMCP).

stdio by default (what desktop clients and `langchain-mcp-adapters` start), streamable HTTP with `--http PORT`.
Every tool result is structured JSON (with an output schema) plus, for image results, a small JPEG preview
content block. Models are loaded once per server process and reused by every call.

Paths are checked against the allowed folders (`--allow`, default: the folder the server was started in); a
session name refers to a session under $CIELR_SESSIONS. Blocking work runs in a worker thread, so the HTTP
transport keeps answering while an edit runs; progress lines go to the client as MCP progress notifications.

Versions: mcp 1.x (1.30) — `langchain-mcp-adapters` 0.3.2 requires mcp<2, and mcp 2.x renamed FastMCP.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, TextContent
from pydantic import BaseModel

from .paths import PathPolicy

PREVIEW_SIDE = 384  # px, longest side of the preview image block


class ObjectInfo(BaseModel):
    id: int
    label: str
    box: list[float]
    attributes: dict[str, str | float] = {}
    depth_rank: int | None = None


class SceneOutput(BaseModel):
    """The structured semantic representation of an image (masks left out)."""

    width: int
    height: int
    objects: list[ObjectInfo]
    text: str  # the SSR as the planner reads it


class EditOutput(BaseModel):
    """What an edit did."""

    status: str
    rationale: str | None
    actions: list[dict]
    output: str | None
    timings: dict[str, float]


class SessionOutput(BaseModel):
    """A session after a request: its head version and history."""

    session: str
    head: int
    image: str
    last: str
    versions: list[dict]
    edit: EditOutput | None = None


def _preview(path: str | Path) -> ImageContent:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        buffer = io.BytesIO()
        im.save(buffer, format="JPEG", quality=85)
    return ImageContent(type="image", data=base64.b64encode(buffer.getvalue()).decode(), mimeType="image/jpeg")


def _result(model: BaseModel, image: str | Path | None, preview: bool) -> CallToolResult:
    content: list[Any] = [TextContent(type="text", text=model.model_dump_json())]
    if preview and image is not None and Path(image).is_file():
        content.append(_preview(image))
    return CallToolResult(content=content, structuredContent=model.model_dump())


def _edit_output(result) -> EditOutput:
    summary = result.summary_json()
    return EditOutput(status=summary["status"], rationale=summary["plan"]["rationale"],
                      actions=summary["plan"]["actions"], output=summary["output"], timings=summary["timings"])


async def _in_thread(ctx: Context | None, work) -> Any:
    """Run blocking `work(progress)` in a worker thread; its progress lines become MCP progress notifications."""
    lines = 0

    def progress(node: str, message: str) -> None:
        nonlocal lines
        lines += 1
        if ctx is not None:
            try:
                anyio.from_thread.run(ctx.report_progress, lines, None, f"{node}: {message}")
            except Exception:  # noqa: BLE001 - progress is best effort (the client may not ask for it)
                pass

    from .cli import user_errors
    from .errors import one_line

    try:
        return await anyio.to_thread.run_sync(lambda: work(progress))
    except user_errors() as exc:  # the client gets one line that says what to change
        raise ToolError(one_line(exc)) from None


def build_server(allowed: list[str | Path] | None = None, *, llm: str | None = None, profile: str | None = None,
                 host: str = "127.0.0.1", port: int = 8000) -> FastMCP:
    """The MCP server; `llm` and `profile` are the defaults of every edit (a call may name another llm)."""
    policy = PathPolicy(allowed or [Path.cwd()])
    llm_default = llm
    server = FastMCP("cielr-agent", host=host, port=port, instructions=(
        "Reasoning-driven image editing. perceive_image lists what is in a photo; edit_image carries out an "
        "instruction, even an implicit one (\"remove what a toddler could get hurt with\"), and writes the result "
        "to a new file; session_* tools edit one image over several turns with undo."))

    @server.tool()
    async def perceive_image(image: str, preview: bool = False) -> Annotated[CallToolResult, SceneOutput]:
        """Detect the objects in an image: ids, labels, boxes [x0,y0,x1,y1] in pixels, colours, position, size,
        depth order and relations, as the editing planner sees them. `image` is a file path on the server."""
        path = policy.check(image, must_exist=True)

        def work(progress):
            from .api import perceive

            return perceive(path, profile=profile)

        scene = await _in_thread(None, work)
        from .prompts import load_knowledge

        objects = [ObjectInfo(id=o.id, label=o.label, box=[round(v, 1) for v in o.box], attributes=o.attributes,
                              depth_rank=o.depth_rank) for o in scene.objects]
        out = SceneOutput(width=scene.width, height=scene.height, objects=objects,
                          text=scene.render(load_knowledge()))
        return _result(out, path, preview)

    @server.tool()
    async def edit_image(image: str, instruction: str, output: str, ctx: Context, dry_run: bool = False,
                         llm: str | None = None, preview: bool = True) -> Annotated[CallToolResult, EditOutput]:
        """Carry out an editing instruction on an image file and write the result to `output` (a new path; the
        input is never changed). The instruction may be implicit: "remove the vehicle that has no engine",
        "what could make the TV sound better? remove it". Actions: remove, recolor, move, resize, flip,
        duplicate (replace/add need a generative backend). `dry_run` plans without writing."""
        source = policy.check(image, must_exist=True)
        target = policy.check(output)

        def work(progress):
            from .api import edit

            return edit(source, instruction, None if dry_run else target, llm=llm or llm_default, profile=profile,
                        dry_run=dry_run, progress=progress)

        result = await _in_thread(ctx, work)
        return _result(_edit_output(result), result.output, preview)

    def _session(session: str, op: str, ctx: Context | None = None, **kwargs: Any):
        """Run one session request in a worker thread; its result as SessionOutput."""
        from .sessions import run_request

        def work(progress):
            return run_request(session, op, progress=progress, **kwargs)

        async def run() -> SessionOutput:
            data = await _in_thread(ctx, work)
            edit = data.pop("edit")
            return SessionOutput(**data, edit=None if edit is None else EditOutput(
                status=edit["status"], rationale=edit["plan"]["rationale"], actions=edit["plan"]["actions"],
                output=edit["output"], timings=edit["timings"]))

        return run()

    @server.tool()
    async def session_new(session: str, image: str, preview: bool = False) -> Annotated[CallToolResult, SessionOutput]:
        """Start an editing session (a name: letters, digits, . _ -) from an image file: version 0."""
        out = await _session(session, "new", image=policy.check(image, must_exist=True))
        return _result(out, out.image, preview)

    @server.tool()
    async def session_edit(session: str, instruction: str, ctx: Context, llm: str | None = None,
                           preview: bool = True) -> Annotated[CallToolResult, SessionOutput]:
        """Edit the session's current image; the result becomes the new current version. Follow-ups may refer
        to earlier turns ("now make it smaller", "put it back")."""
        out = await _session(session, "edit", ctx, instruction=instruction, llm=llm or llm_default, profile=profile)
        return _result(out, out.image, preview)

    @server.tool()
    async def session_undo(session: str, preview: bool = False) -> Annotated[CallToolResult, SessionOutput]:
        """Go back to the version the current one was made from."""
        out = await _session(session, "undo")
        return _result(out, out.image, preview)

    @server.tool()
    async def session_redo(session: str, preview: bool = False) -> Annotated[CallToolResult, SessionOutput]:
        """Re-apply the version last undone."""
        out = await _session(session, "redo")
        return _result(out, out.image, preview)

    @server.tool()
    async def session_checkout(session: str, version: int, preview: bool = False
                               ) -> Annotated[CallToolResult, SessionOutput]:
        """Make any earlier version the current one."""
        out = await _session(session, "checkout", version=version)
        return _result(out, out.image, preview)

    @server.tool()
    async def session_history(session: str) -> SessionOutput:
        """The session's versions: number, parent, instruction, what was done, which one is current."""
        return await _session(session, "history")

    @server.tool()
    async def session_export(session: str, output: str, version: int | None = None) -> str:
        """Write the session's current image (or `version`) to `output`; returns the path written."""
        from .sessions import Session

        target = policy.check(output)

        def work(progress):
            with Session.open(session) as s:
                return str(s.export(target, version))

        return await _in_thread(None, work)

    return server


def serve(allowed: list[str] | None, *, http: int | None = None, host: str = "127.0.0.1", llm: str | None = None,
          profile: str | None = None) -> None:
    """Run the server: stdio, or streamable HTTP on host:http (path /mcp)."""
    server = build_server(allowed, llm=llm, profile=profile, host=host, port=http or 8000)
    server.run(transport="streamable-http" if http else "stdio")
