"""A stand-in for the user's web browser, for tests of logins that Lockgate starts with ``webbrowser.open``.

Set ``BROWSER="python /path/to/stub_browser.py %s"``: Python's webbrowser module runs that command
with the URL in place of ``%s`` (and waits for it to exit; end the command with `` &`` not to wait).
Given the authorization URL, this script:

1. GETs it as the user ``STUB_BROWSER_USER`` (default ``alice``), passed to the test authorization
   server (``oauth_as.py``) as the ``test_user`` query parameter; that server approves at once and
   redirects to the client's redirect_uri with a code;
2. GETs that Location, which is Lockgate's loopback callback;
3. appends ``{"url": URL, "callback_status": N}`` as one JSON line to ``STUB_BROWSER_LOG``, if set
   (``callback_status`` is null and ``error`` says why when a step failed).

It always exits 0, as a browser that opened does, and each request gives up after 10 seconds.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx

TIMEOUT = 10.0


def visit(url: str, user: str) -> int:
    """Approve at the authorization server as ``user`` and follow the redirect; the callback's status."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "test_user"]
    authorize = urlunsplit(parts._replace(query=urlencode([*query, ("test_user", user)])))
    with httpx.Client(timeout=TIMEOUT) as http:
        approved = http.get(authorize)
        location = approved.headers.get("location")
        if not approved.is_redirect or location is None:
            raise RuntimeError(f"authorize answered {approved.status_code}, not a redirect: {approved.text[:300]}")
        return http.get(urljoin(authorize, location)).status_code


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: stub_browser.py URL", file=sys.stderr)
        return 2
    url = argv[1]
    line: dict[str, Any] = {"url": url, "callback_status": None}
    try:
        line["callback_status"] = visit(url, os.environ.get("STUB_BROWSER_USER", "alice"))
    except (httpx.HTTPError, RuntimeError) as e:
        line["error"] = f"{type(e).__name__}: {e}"
        print(f"stub browser: {line['error']}", file=sys.stderr)
    log = os.environ.get("STUB_BROWSER_LOG")
    if log:
        with open(log, "a") as file:
            file.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
