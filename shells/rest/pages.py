"""The documentation pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), and the files they load.

Everything comes from the package (``assets/docs/``, see its README.md for
versions and licences): the pages must work on a machine with no internet
access, so they name no CDN and no web font, only ``/openapi.json`` and
``/docs/assets/<file>``. They hold no inline script either (each viewer is
started by a small packaged ``*-init.js``), so a Content-Security-Policy of
``script-src 'self'`` does not break them.

:func:`asset` serves a file of that folder by its plain name, and only the
names in :data:`ASSETS`: a path is never joined onto the folder, so no
request can reach another file.
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["ASSETS", "ASSETS_PATH", "asset", "docs_html", "redoc_html"]

#: Where the pages load their files from (the handler serves :func:`asset` there).
ASSETS_PATH = "/docs/assets/"

_TEXT = "text/plain; charset=utf-8"
_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"

#: Each file ``GET /docs/assets/<file>`` serves, and its content type.
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": _JS,
    "swagger-ui.css": _CSS,
    "swagger-init.js": _JS,
    "redoc.standalone.js": _JS,
    "redoc-init.js": _JS,
    # The licences travel with the code they cover.
    "swagger-ui-LICENSE.txt": _TEXT,
    "swagger-ui-NOTICE.txt": _TEXT,
    "swagger-ui-bundle.js.LICENSE.txt": _TEXT,
    "redoc-LICENSE.txt": _TEXT,
    "redoc.standalone.js.LICENSE.txt": _TEXT,
}

# Both pages: no favicon request (the data: URL), nothing from elsewhere.
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
{head}</head>
<body>
{body}
</body>
</html>
"""


def docs_html() -> bytes:
    """The Swagger UI page of ``GET /docs``: the packaged bundle on ``/openapi.json``."""
    return _PAGE.format(
        title="Lockgate REST API",
        head=f'<link rel="stylesheet" href="{ASSETS_PATH}swagger-ui.css">\n',
        body=(
            '<div id="swagger-ui"></div>\n'
            f'<script src="{ASSETS_PATH}swagger-ui-bundle.js"></script>\n'
            f'<script src="{ASSETS_PATH}swagger-init.js"></script>'
        ),
    ).encode("utf-8")


def redoc_html() -> bytes:
    """The ReDoc page of ``GET /redoc``: the packaged bundle on ``/openapi.json``, in system fonts."""
    return _PAGE.format(
        title="Lockgate REST API",
        # ReDoc styles itself; the margin is the only thing the page adds.
        head="<style>body { margin: 0; }</style>\n",
        body=(
            '<div id="redoc"></div>\n'
            f'<script src="{ASSETS_PATH}redoc.standalone.js"></script>\n'
            f'<script src="{ASSETS_PATH}redoc-init.js"></script>'
        ),
    ).encode("utf-8")


def asset(path: str) -> tuple[str, bytes] | None:
    """The content type and bytes of the packaged file ``path``, or ``None`` (a 404) for anything else.

    ``path`` is what follows ``/docs/assets/`` in the URL. Only a name listed
    in :data:`ASSETS` is served; any other string, ``../x``, ``/etc/passwd``
    or a name with a folder included, is refused before the file system is
    touched.
    """
    content_type = ASSETS.get(path)
    if content_type is None:
        return None
    return content_type, _read(path)


@functools.cache
def _read(name: str) -> bytes:
    # Read once: the bundles are a few MB and never change while running.
    # Only names from ASSETS reach here, so the cache is bounded by it.
    return resources.files(__package__).joinpath("assets", "docs", name).read_bytes()
