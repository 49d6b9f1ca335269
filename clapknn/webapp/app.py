"""The HTTP side of ``clapknn serve``: a Starlette app over a :class:`~clapknn.webapp.session.Curator`.

Pages and files: ``GET /`` (the page, with the session's token in it), ``/static/*`` (the page's
script and style, from this package), ``GET /audio/track/<path in the library>`` and
``GET /audio/example/<id>`` (the audio, with HTTP range requests so seeking works).

JSON API (every error is ``{"error": "..."}`` with a 4xx/5xx status; every ``POST`` needs the token,
:class:`~clapknn.webapp.safety.GuardMiddleware`):

=======================  ======  ===================================================================
``/api/status``          GET     state (tagging progress, error), tags, counts, undo depth
``/api/tracks``          GET     one page of the table: ``tag, min, max, q, low, changed, sort, desc, page, per_page``
``/api/tracks/<id>``     GET     one track, "why" (the examples that voted) and its snippets
``/api/queue``           GET     the label-next queue (``n``; ``fresh=1``: a new round now)
``/api/skipped``         GET     files that could not be tagged, with the reason
``/api/label``           POST    ``{"id": ID, "tags": [TAG]}``: the track becomes an example; all retagged
``/api/undo``            POST    take back the last label
``/api/export/filetags`` POST    ``{"dry_run": true|false, "field": "mood", "replace": false}``
``/api/export/csv``      GET     the tag table as CSV
``/api/export/playlists`` POST   ``{"folder": "Playlists"}``: one .m3u8 per tag inside the library
=======================  ======  ===================================================================
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

from ..errors import ClapknnError
from .safety import TOKEN_HEADER, GuardMiddleware, new_token
from .session import Curator

__all__ = ["create_app", "STATIC"]

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
_MAX_BODY = 64 * 1024
#: Content types browsers play, by extension (the system's table lacks some or names them oddly).
AUDIO_TYPES = {
    ".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".oga": "audio/ogg",
    ".opus": "audio/ogg", ".m4a": "audio/mp4", ".mp4": "audio/mp4", ".aac": "audio/aac", ".webm": "audio/webm",
    ".aif": "audio/aiff", ".aiff": "audio/aiff", ".wma": "audio/x-ms-wma", ".wv": "audio/x-wavpack",
}


def _audio(path: Path):
    from starlette.responses import FileResponse

    return FileResponse(path, media_type=AUDIO_TYPES.get(path.suffix.lower()), headers={"Cache-Control": "no-cache"})


def create_app(curator: Curator, *, token: str | None = None, allowed_hosts: list[str] | None = None):
    """The ASGI app for ``curator`` (its tagging is started by :func:`clapknn.webapp.serve` or the caller).

    Parameters
    ----------
    curator : Curator
    token : str, optional
        The session's token (default: a fresh random one, in ``app.state.token``).
    allowed_hosts : list of str, optional
        ``Host`` headers accepted (guards against DNS rebinding); default: the loopback names.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    token = token or new_token()
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    async def body(request: Request) -> dict[str, Any]:
        import json

        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise ClapknnError("send the request as application/json")
        raw = await request.body()
        if len(raw) > _MAX_BODY:
            raise ClapknnError("request too large")
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise ClapknnError("the request is not valid JSON") from None
        if not isinstance(data, dict):
            raise ClapknnError("the request must be a JSON object")
        return data

    def integer(value, what: str) -> int:
        if isinstance(value, bool):
            raise ClapknnError(f"{what} must be a whole number")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ClapknnError(f"{what} must be a whole number, got {value!r}") from None

    async def index_page(request: Request):
        return HTMLResponse(page.replace("{{TOKEN}}", html.escape(token, quote=True)),
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'self'; media-src 'self'; img-src 'self' data:; frame-ancestors 'none'"})

    async def status(request: Request):
        return JSONResponse(curator.status())

    def tracks(request: Request):
        from .table import query

        curator.require_ready()
        with curator.lock:
            return JSONResponse(query(curator.tracks, curator.tagger.tags, request.query_params))

    def track(request: Request):
        return JSONResponse(curator.track(integer(request.path_params["id"], "the track id")))

    def queue(request: Request):
        n = integer(request.query_params.get("n", 10), "n")
        if not 1 <= n <= 100:
            raise ClapknnError("n must lie between 1 and 100")
        fresh = request.query_params.get("fresh", "0") not in ("", "0")
        return JSONResponse({"rows": curator.queue(n, fresh=fresh)})

    def skipped(request: Request):
        curator.require_ready()
        return JSONResponse({"skipped": [{"path": p, "reason": r} for p, r in curator.lib.skipped]})

    async def label(request: Request):
        from starlette.concurrency import run_in_threadpool

        data = await body(request)
        tags = data.get("tags", data.get("tag"))
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ClapknnError("tags must be a list of strings")
        return JSONResponse(await run_in_threadpool(curator.label, integer(data.get("id"), "the track id"), tags))

    async def undo(request: Request):
        from starlette.concurrency import run_in_threadpool

        await body(request)
        return JSONResponse(await run_in_threadpool(curator.undo))

    async def export_filetags(request: Request):
        from starlette.concurrency import run_in_threadpool

        from .export import file_tags

        data = await body(request)
        dry_run = data.get("dry_run", True) is not False
        curator.require_ready()

        def run():
            with curator.lock:
                return file_tags(curator.tracks, curator.tagger.tags, dry_run=dry_run,
                                 field=str(data.get("field") or "mood"), replace=bool(data.get("replace")))

        return JSONResponse(await run_in_threadpool(run))

    def export_csv(request: Request):
        from .export import csv_text

        curator.require_ready()
        with curator.lock:
            text = csv_text(curator.tracks, curator.tagger.tags)
        return Response(text, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="tags.csv"'})

    async def export_playlists(request: Request):
        from starlette.concurrency import run_in_threadpool

        from .export import playlists

        data = await body(request)
        curator.require_ready()

        def run():
            with curator.lock:
                return playlists(curator.tracks, curator.tagger.tags, curator.library, str(data.get("folder") or "Playlists"))

        return JSONResponse(await run_in_threadpool(run))

    def audio_track(request: Request):
        return _audio(curator.track_file(request.path_params["path"]))

    def audio_example(request: Request):
        return _audio(curator.example_file(integer(request.path_params["id"], "the example id")))

    async def clapknn_error(request: Request, exc: Exception):
        return JSONResponse({"error": str(exc)}, status_code=400)

    async def refused(request: Request, exc: Exception):
        return JSONResponse({"error": f"refused: {exc}"}, status_code=403)

    async def not_found(request: Request, exc: Exception):
        return JSONResponse({"error": str(exc)}, status_code=404)

    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    async def crash(request: Request, exc: Exception):
        logger.exception("request %s failed", request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    routes = [
        Route("/", index_page),
        Route("/api/status", status),
        Route("/api/tracks", tracks),
        Route("/api/tracks/{id}", track),
        Route("/api/queue", queue),
        Route("/api/skipped", skipped),
        Route("/api/label", label, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/api/export/filetags", export_filetags, methods=["POST"]),
        Route("/api/export/csv", export_csv),
        Route("/api/export/playlists", export_playlists, methods=["POST"]),
        Route("/audio/track/{path:path}", audio_track),
        Route("/audio/example/{id}", audio_example),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    hosts = allowed_hosts or ["127.0.0.1", "localhost", "[::1]", "::1"]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts), Middleware(GuardMiddleware, token=token)],
        exception_handlers={
            ClapknnError: clapknn_error, PermissionError: refused, FileNotFoundError: not_found,
            HTTPException: http_error, Exception: crash,
        },
    )
    app.state.token = token
    app.state.curator = curator
    app.state.token_header = TOKEN_HEADER
    return app
