"""The status page in a real headless Chromium, against a real `lockgate serve --transport http`.

The gateway serves a pool of two instances of ``servers/raw_server.py`` and a
third server whose name is HTML. Chromium (tests/browser.py) loads
``/status`` and the test reads what the page shows through the DOM: every
instance ready, then one instance down after its process is killed (its
restarts fail, so it stays down), without reloading the page, and finally the
gateway gone. With authentication on, the page asks for an API key, says so
when the gateway refuses one, and shows everything once given a good one. Screenshots go to ``build/test-artefacts/status-page/`` (git
ignores ``build/``). Everything listens on 127.0.0.1; Chromium is killed at
the end whatever happens.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from lockgate.shells.store import Store

from ..browser import Page, launch, require_chromium
from .conftest import Setup, processes_mentioning
from .test_http import serve_http

RAW = str(Path(__file__).parent / "servers" / "raw_server.py")
ARTEFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artefacts" / "status-page"

# A server name from configuration that a page building HTML from strings
# would run: the page must show it as text.
HTML_NAME = "<img src=x onerror=window.__pwned=1>"

RULES: dict[str, Any] = {"agents": {"dev": {"allow": {"servers": ["*"]}}}, "defaults": {"deny_on_missing_agent": True}}

# Generous bounds: the page polls every 2 s and instances start in well under one.
SHOWN_WITHIN = 30.0


def raw_instance(setup: Setup, name: str) -> dict[str, Any]:
    return {"command": sys.executable, "args": [RAW, "--name", name, "--marker", str(setup.tmp)]}


def fragile_instance(setup: Setup, name: str, down: Path) -> dict[str, Any]:
    """A raw server that will not start again once ``down`` exists: killed, it stays down."""
    script = (
        f"test -e {shlex.quote(str(down))} && exit 3; "
        f"exec {shlex.quote(sys.executable)} {shlex.quote(RAW)} --name {name} --marker {shlex.quote(str(setup.tmp))}"
    )
    return {"command": "/bin/sh", "args": ["-c", script]}


def instance_rows_js() -> str:
    """JS: every instance row the page shows, as [server, instance, state, healthy]."""
    return (
        "[...document.querySelectorAll('tr[data-instance]')]"
        ".map(r => [r.dataset.server, r.dataset.instance, r.dataset.state, r.dataset.healthy])"
    )


def row_js(server: str, instance: str) -> str:
    """JS: the row of one instance (or null)."""
    return (
        f"document.querySelector('tr[data-server=\"' + CSS.escape({json.dumps(server)}) + '\"]"
        f"[data-instance=\"' + CSS.escape({json.dumps(instance)}) + '\"]')"
    )


async def rows(page: Page) -> list[list[str]]:
    found = await page.evaluate(instance_rows_js())
    assert isinstance(found, list)
    return found


async def test_the_status_page_shows_instances_going_down_live_and_names_as_text(setup: Setup, tmp_path: Path) -> None:
    require_chromium()
    down = tmp_path / "pool-1.down"
    setup.servers.clear()
    setup.servers["pool"] = {
        "instances": [raw_instance(setup, "pool-0"), fragile_instance(setup, "pool-1", down)],
        "description": "two instances",
    }
    setup.servers[HTML_NAME] = {**raw_instance(setup, "html"), "description": f"described as {HTML_NAME}"}
    setup.env["GATEWAY_INIT_STRATEGY"] = "eager"  # every instance starts without a call
    setup.write(RULES)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)

    async with launch(tmp_path) as browser:
        page = await browser.new_page()
        with serve_http(setup) as served:
            # The same page at / and /status, and its assets beside it.
            async with httpx.AsyncClient(base_url=served.base, timeout=10) as http:
                at_root, at_status = await http.get("/"), await http.get("/status")
                assert at_root.status_code == at_status.status_code == 200
                assert at_root.headers["content-type"].startswith("text/html")
                assert at_root.content == at_status.content
                script = await http.get("/status/assets/status.js")
                assert script.status_code == 200 and "javascript" in script.headers["content-type"]
                assert (await http.get("/status/assets/..%2F..%2Fstatus_page.py")).status_code == 404
                # One allowed and audited call, for the decisions table.
                call = await http.post("/mcp/pool/tools/call", json={"name": "whoami", "arguments": {}, "agent_id": "dev"})
                assert call.status_code == 200, call.text

            await page.navigate(f"{served.base}/status")
            expected = [["pool", "0", "ready", "true"], ["pool", "1", "ready", "true"], [HTML_NAME, "0", "ready", "true"]]
            await page.wait_for(f"JSON.stringify({instance_rows_js()}) === {json.dumps(json.dumps(expected, separators=(',', ':')))}", timeout=SHOWN_WITHIN)

            # The HTML name is text: shown verbatim, no element made of it, its handler never ran.
            card = f"document.querySelector('article[data-server=\"' + CSS.escape({json.dumps(HTML_NAME)}) + '\"]')"
            assert await page.evaluate(f"{card}.querySelector('.server-name').textContent") == HTML_NAME
            assert await page.evaluate("document.querySelectorAll('img').length") == 0
            assert await page.evaluate("typeof window.__pwned") == "undefined"

            # The decisions table has the call, and never its arguments.
            await page.wait_for(
                "[...document.querySelectorAll('#audit tbody tr')].some(r => r.textContent.includes('whoami'))",
                timeout=SHOWN_WITHIN,
            )
            await page.screenshot(ARTEFACTS / "all-ready.png")

            # Instance 1 goes down for good: its restarts exit at once.
            [pid] = processes_mentioning(f"--name\0pool-1\0--marker\0{setup.tmp}")
            down.touch()
            polls_before = int(await page.evaluate("document.body.dataset.polls"))
            os.kill(pid, signal.SIGKILL)
            row = row_js("pool", "1")
            await page.wait_for(
                f"{row} && {row}.dataset.state !== 'ready' && {row}.dataset.healthy === 'false'", timeout=SHOWN_WITHIN
            )
            # Shown by polling, not by a new page load: the poll counter kept counting.
            assert int(await page.evaluate("document.body.dataset.polls")) > polls_before
            assert (await page.evaluate(f"{row_js('pool', '0')}.dataset.state")) == "ready"
            assert await page.evaluate(f"{row}.classList.contains('down')")
            await page.screenshot(ARTEFACTS / "instance-down.png")

        # The gateway has stopped: the page says so and keeps trying.
        said = await page.wait_for(
            "document.body.dataset.connection === 'unreachable' && document.getElementById('connection').textContent",
            timeout=SHOWN_WITHIN,
        )
        assert "does not answer" in said
        await page.screenshot(ARTEFACTS / "unreachable.png")
        assert [line for line in page.console if line.startswith(("exception", "error"))] == []
        print(f"screenshots in {ARTEFACTS}")
    # Chromium's profile is in tmp_path, so the autouse fixture checks that none of its processes is left.


async def test_with_authentication_on_the_page_asks_for_an_api_key_and_uses_it(setup: Setup, tmp_path: Path) -> None:
    require_chromium()
    database = f"sqlite:///{tmp_path / 'state' / 'lockgate.db'}"
    with Store.open(database) as store:
        store.upgrade()
        secret = store.create_key("viewer", role="user", agents=["dev"])[1]
    setup.servers.clear()
    setup.servers["solo"] = raw_instance(setup, "solo")
    setup.env.update(
        GATEWAY_INIT_STRATEGY="eager",
        GATEWAY_DATABASE_URL=database,
        GATEWAY_STATE_DIR=str(tmp_path / "state"),
        GATEWAY_JWT_SECRET="a test signing secret of at least thirty-two bytes",
    )
    setup.write(RULES)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)

    async with launch(tmp_path) as browser:
        page = await browser.new_page()
        with serve_http(setup, "--auth") as served:
            await page.navigate(f"{served.base}/")
            await page.wait_for("document.body.dataset.connection === 'unauthorized' && !document.getElementById('auth').hidden", timeout=SHOWN_WITHIN)
            assert await rows(page) == []  # nothing is shown without a credential
            await page.screenshot(ARTEFACTS / "asks-for-a-key.png")

            await page.type_into("#auth-key", secret[:-4] + "xxxx")
            await page.press_enter()
            refused = await page.wait_for(
                "document.getElementById('auth-message').textContent.includes('refused') && document.getElementById('auth-message').textContent",
                timeout=SHOWN_WITHIN,
            )
            assert "refused" in refused

            await page.type_into("#auth-key", secret)
            await page.press_enter()
            await page.wait_for(
                f"JSON.stringify({instance_rows_js()}) === {json.dumps(json.dumps([['solo', '0', 'ready', 'true']], separators=(',', ':')))}",
                timeout=SHOWN_WITHIN,
            )
            assert await page.evaluate("document.getElementById('auth').hidden")
            assert await page.evaluate("document.body.dataset.connection") == "ok"
            # Kept for this tab only, and not left in the field.
            assert await page.evaluate("sessionStorage.getItem('lockgate.status.apiKey')") == secret
            assert await page.evaluate("document.getElementById('auth-key').value") == ""
            await page.screenshot(ARTEFACTS / "with-a-key.png")
        assert [line for line in page.console if line.startswith(("exception", "error"))] == []
