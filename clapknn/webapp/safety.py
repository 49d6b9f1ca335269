"""What the web app may touch: files inside the library (or named by the index), and state changes
only with the session's token from the app's own page.

- :func:`inside` resolves a path given relative to a root (symlinks included) and refuses anything
  whose real path is not under the root's real path: ``..`` segments, absolute paths, and links that
  point out of the library.
- :class:`GuardMiddleware` requires, on every request that is not ``GET``/``HEAD``, the per-session
  token in the ``X-Clapknn-Token`` header (a page of another site cannot read it, and a cross-site
  form cannot send a header), and refuses a request whose ``Origin`` or ``Sec-Fetch-Site`` says it
  comes from another site. Reads (the table, the audio) from another site's page are refused too,
  where the browser says so (``Sec-Fetch-Site``); only the page itself may be opened from a link.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

__all__ = ["inside", "regular_file", "new_token", "GuardMiddleware", "TOKEN_HEADER"]

TOKEN_HEADER = "x-clapknn-token"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def new_token() -> str:
    """A fresh per-session token."""
    return secrets.token_urlsafe(32)


def regular_file(path: str | os.PathLike) -> Path:
    """``path`` resolved, refused (``PermissionError``/``FileNotFoundError``) unless it is a regular file."""
    real = Path(os.path.realpath(path))
    try:
        st = real.stat()
    except OSError as exc:
        raise FileNotFoundError(f"{path}: no such file") from exc
    if not stat.S_ISREG(st.st_mode):
        raise PermissionError(f"{path}: not a regular file")
    return real


def inside(root: str | os.PathLike, relative: str) -> Path:
    """The real path of ``relative`` under ``root``; ``PermissionError`` unless it stays inside."""
    if not relative or "\x00" in relative or os.path.isabs(relative):
        raise PermissionError(f"{relative!r}: not a path inside the library")
    base = os.path.realpath(root)
    real = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([base, real]) != base or real == base:
        raise PermissionError(f"{relative!r}: outside the library")
    return regular_file(real)


class GuardMiddleware:
    """ASGI middleware: state-changing requests need the token and must come from the app's own page."""

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if scope["method"] not in _SAFE_METHODS:
                reason = self._refusal(headers)
            elif scope.get("path", "") != "/" and headers.get("sec-fetch-site") in ("cross-site", "same-site"):
                # another site's page may link to the app, but not read its data or play its files
                reason = "refused: another site cannot read the library"
            else:
                reason = ""
            if reason:
                from starlette.responses import JSONResponse

                await JSONResponse({"error": reason}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: dict[str, str]) -> str:
        site = headers.get("sec-fetch-site")
        if site and site not in ("same-origin", "none"):
            return "refused: a request from another site cannot change the index"
        origin = headers.get("origin")
        host = headers.get("host", "")
        if origin and origin != "null" and origin.split("://", 1)[-1] != host:
            return "refused: a request from another site cannot change the index"
        if origin == "null":
            return "refused: a request from another site cannot change the index"
        given = headers.get(TOKEN_HEADER, "")
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            return "refused: this request lacks the session's token (reload the page)"
        return ""
