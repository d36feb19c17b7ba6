"""The status page for people: its HTML and assets, read from the installed package.

The HTTP front serves :func:`status_html` at ``/`` and ``/status`` and
:func:`status_asset` at ``/status/assets/<name>``. The page is static: its
script polls the JSON endpoints (``/gateway/health``, ``/gateway/stats``,
``/gateway/registry``, ``/gateway/audit``, ``/ready``) every 2 seconds and
renders them with DOM calls only, so it needs no template and no data from
the server here. It loads nothing from other origins and has no inline script
or style, so ``Content-Security-Policy: default-src 'self'`` suits it.
"""

from __future__ import annotations

from importlib.resources import files

__all__ = ["status_asset", "status_html"]

# The package these files ship in (``lockgate.shells.rest``); importlib.resources
# in Python 3.11 takes a package, not this module.
_PACKAGE = __name__.rpartition(".")[0]

# Only these names are served: a request names a key of this table, never a
# path, so no ``..`` or absolute path can reach another file.
_ASSETS: dict[str, str] = {
    "status.js": "text/javascript; charset=utf-8",
    "status.css": "text/css; charset=utf-8",
}


def status_html() -> bytes:
    """The page itself (``index.html``), for ``GET /`` and ``GET /status``, as ``text/html; charset=utf-8``."""
    return _read("index.html")


def status_asset(name: str) -> tuple[str, bytes] | None:
    """The content type and bytes of the asset ``name`` (``status.js``, ``status.css``), for ``/status/assets/<name>``.

    ``None`` for any other name, so the caller answers 404.
    """
    content_type = _ASSETS.get(name)
    if content_type is None:
        return None
    return content_type, _read(name)


def _read(name: str) -> bytes:
    return files(_PACKAGE).joinpath("assets", "status", name).read_bytes()
