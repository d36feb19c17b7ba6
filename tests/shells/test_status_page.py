"""The status page's files as the HTTP front gets them: known names only, nothing built from untrusted text."""

from __future__ import annotations

import re

import pytest

from lockgate.shells.rest.status_page import status_asset, status_html


def test_the_page_links_only_its_own_assets() -> None:
    html = status_html().decode("utf-8")
    linked = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(linked) == ["status/assets/status.css", "status/assets/status.js"]
    # No inline script or style, so a strict Content-Security-Policy fits.
    assert "<style" not in html and re.search(r"<script(?![^>]*\bsrc=)", html) is None and " style=" not in html


def test_each_asset_has_its_content_type() -> None:
    script = status_asset("status.js")
    style = status_asset("status.css")
    assert script is not None and script[0] == "text/javascript; charset=utf-8" and b"setTimeout" in script[1]
    assert style is not None and style[0] == "text/css; charset=utf-8"


@pytest.mark.parametrize(
    "name",
    ["index.html", "../status_page.py", "..%2Fstatus_page.py", "/etc/passwd", "status.js/", "./status.js", "STATUS.JS", "", "assets/status/status.js"],
)
def test_any_other_name_is_not_found(name: str) -> None:
    assert status_asset(name) is None


def test_the_script_never_parses_markup_or_code_from_strings() -> None:
    asset = status_asset("status.js")
    assert asset is not None
    script = asset[1].decode("utf-8")
    # Names come from configuration and downstream servers: text nodes only.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert "http://" not in script and "https://" not in script  # no external URL
