"""``clapknn serve``: the curator's loop in a browser.

Listen to a library's tracks and the snippets that voted, see which examples voted, confirm or
correct a tag with one click (the track becomes an example; the whole library is retagged from its
stored vectors at once), undo, work through the "label next" queue, and export. See docs/webapp.md.

>>> from clapknn.webapp import serve
>>> serve("index/moods", "~/Music")                  # doctest: +SKIP
"""

from __future__ import annotations

__all__ = ["serve", "create_app", "Curator", "DEFAULT_HOST", "DEFAULT_PORT"]

from ..options import DEFAULT_BATCH_SIZE, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKERS  # where the app listens by default
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def __getattr__(name):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Curator":
        from .session import Curator

        return Curator
    raise AttributeError(name)


def serve(index, library, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, k: int | None = None, cache=True,
          workers: int = DEFAULT_WORKERS, batch_size: int = DEFAULT_BATCH_SIZE, quiet: bool = False) -> None:
    """Tag ``library`` with ``index`` and serve the page at ``http://host:port/`` until interrupted.

    A missing index or library does not stop the server: the page says what is missing.
    """
    import socket
    import sys

    import uvicorn

    from ..errors import ClapknnError
    from .app import create_app
    from .session import Curator

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:  # a clear line, not a traceback
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ClapknnError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or --host") from None

    curator = Curator(index, library, k=k, cache=cache, workers=workers, batch_size=batch_size)
    hosts = ["127.0.0.1", "localhost", "[::1]", "::1"] + ([host] if host not in _LOOPBACK else [])
    if host in ("0.0.0.0", "::"):
        hosts = ["*"]
    app = create_app(curator, allowed_hosts=hosts)
    if host not in _LOOPBACK:
        print(f"note: serving on {host}: anyone who can reach this address can listen to the library", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"clapknn serve: http://{shown}:{port}/  (index {curator.index_path}, library {curator.library}; Ctrl-C stops)",
          file=sys.stderr)
    curator.start()
    uvicorn.run(app, host=host, port=port, log_level="warning" if quiet else "info", access_log=False)
