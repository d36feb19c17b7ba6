"""A headless Chromium driven over the Chrome DevTools Protocol, for tests of pages people use.

:func:`launch` starts Debian's ``chromium`` headless, on 127.0.0.1 with a
throwaway profile, and yields a :class:`Browser`; :meth:`Browser.new_page`
opens a tab as a :class:`Page` (navigate, evaluate JavaScript, type, wait
for a condition, take a screenshot). The client is trio and wsproto over one
WebSocket to the browser, with one flat CDP session per tab
(``Target.attachToTarget`` with ``flatten``), so no other dependency is
needed. Chromium always dies with the context, killed with its whole process
group.

Tests that need a browser call :func:`require_chromium` first: it skips
when Chromium is missing, unless ``LOCKGATE_REQUIRE_BROWSER`` is set (``make
test`` sets it), in which case the test fails.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

__all__ = ["Browser", "CDPError", "Page", "chromium_path", "launch", "require_chromium"]

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)

JSONObject = dict[str, Any]


class CDPError(Exception):
    """The browser answered a command with an error, or the page threw while evaluating."""


def chromium_path() -> str | None:
    """Where Chromium is, or ``None`` when it is not installed."""
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found is not None:
            return found
    return None


def require_chromium() -> str:
    """Chromium's path; skips the calling test when it is missing, or fails it under ``LOCKGATE_REQUIRE_BROWSER``."""
    found = chromium_path()
    if found is not None:
        return found
    if os.environ.get("LOCKGATE_REQUIRE_BROWSER"):
        pytest.fail("Chromium is not installed and LOCKGATE_REQUIRE_BROWSER is set (run `make chromium`)")
    pytest.skip("Chromium is not installed (`make chromium` installs Debian's package)")


class _Connection:
    """One CDP WebSocket: commands matched to answers by id, events handed to per-session listeners."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self._stream = stream
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[JSONObject]] = {}
        self._listeners: dict[str, list[trio.MemorySendChannel[JSONObject]]] = {}
        self._send_lock = trio.Lock()
        self.closed = False

    async def send(self, method: str, params: JSONObject | None = None, *, session: str | None = None) -> JSONObject:
        """Send one command and return its ``result``; raises :class:`CDPError` on an ``error`` answer."""
        if self.closed:
            raise CDPError(f"{method}: the browser connection is closed")
        command: JSONObject = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            command["sessionId"] = session
        send_answer, receive_answer = trio.open_memory_channel[JSONObject](1)
        self._waiting[command["id"]] = send_answer
        try:
            await self._write(self._ws.send(TextMessage(data=json.dumps(command))))
            answer = await receive_answer.receive()
        except trio.EndOfChannel:
            raise CDPError(f"{method}: the browser connection closed before the answer") from None
        finally:
            self._waiting.pop(command["id"], None)
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error'].get('message')} ({answer['error'].get('code')})")
        result: JSONObject = answer.get("result", {})
        return result

    def listen(self, session: str) -> trio.MemoryReceiveChannel[JSONObject]:
        """A channel of every event for ``session`` from now on (unbounded: a test reads what it wants)."""
        send_events, receive_events = trio.open_memory_channel[JSONObject](float("inf"))
        self._listeners.setdefault(session, []).append(send_events)
        return receive_events

    async def _write(self, data: bytes) -> None:
        async with self._send_lock:
            await self._stream.send_all(data)

    async def read_forever(self) -> None:
        """Dispatch every message until the socket closes; then wake every waiter."""
        message_parts: list[str] = []
        try:
            while True:
                data = await self._stream.receive_some(65536)
                if not data:
                    return
                self._ws.receive_data(data)
                for event in self._ws.events():
                    if isinstance(event, TextMessage):
                        message_parts.append(event.data)
                        if event.message_finished:
                            self._dispatch(json.loads("".join(message_parts)))
                            message_parts.clear()
                    elif isinstance(event, Ping):
                        await self._write(self._ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self.closed = True
            for waiter in list(self._waiting.values()):
                waiter.close()
            for listeners in self._listeners.values():
                for listener in listeners:
                    listener.close()

    def _dispatch(self, message: JSONObject) -> None:
        if "id" in message:
            waiter = self._waiting.get(message["id"])
            if waiter is not None:
                waiter.send_nowait(message)
            return
        for listener in self._listeners.get(message.get("sessionId", ""), []):
            try:
                listener.send_nowait(message)
            except trio.BrokenResourceError:
                pass  # that listener's reader is gone; the others still want the event


class Page:
    """One browser tab, reached through its flat CDP session."""

    def __init__(self, connection: _Connection, target: str, session: str) -> None:
        self._connection = connection
        self.target = target
        self.session = session
        self.console: list[str] = []
        """Console messages and uncaught exceptions, as ``"<type>: <text>"``, for failure reports."""
        self._events = connection.listen(session)

    async def send(self, method: str, params: JSONObject | None = None) -> JSONObject:
        """Any CDP command in this tab's session."""
        return await self._connection.send(method, params, session=self.session)

    async def collect_console(self) -> None:
        """Record console messages and exceptions into :attr:`console` until the session ends."""
        async for event in self._events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.consoleAPICalled":
                text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
                self.console.append(f"{params.get('type')}: {text}")
            elif event.get("method") == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                description = details.get("exception", {}).get("description") or details.get("text")
                self.console.append(f"exception: {description}")

    async def navigate(self, url: str) -> None:
        """Load ``url`` and wait until its document has loaded (``readyState`` complete)."""
        answer = await self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise CDPError(f"navigating to {url}: {answer['errorText']}")
        await self.wait_for("document.readyState === 'complete'", timeout=20)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (promises awaited); raises :class:`CDPError` if it throws."""
        answer = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise CDPError(details.get("exception", {}).get("description") or details.get("text"))
        return answer.get("result", {}).get("value")

    async def type_into(self, selector: str, text: str) -> None:
        """Focus the element ``selector`` and type ``text`` into it, as a keyboard would (input events fire)."""
        found = await self.evaluate(f"(e => e ? (e.focus(), true) : false)(document.querySelector({json.dumps(selector)}))")
        if not found:
            raise CDPError(f"nothing matches {selector}")
        await self.send("Input.insertText", {"text": text})

    async def press_enter(self) -> None:
        """Press and release Enter in the focused element (in a form's field, that submits the form)."""
        key: JSONObject = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}
        await self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": "\r", **key})
        await self.send("Input.dispatchKeyEvent", {"type": "keyUp", **key})

    async def wait_for(self, expression: str, *, timeout: float, every: float = 0.1) -> Any:
        """Evaluate ``expression`` until it is truthy and return that value; :class:`TimeoutError` after ``timeout`` s.

        The last value seen is in the error, so a failure says what the page
        showed instead.
        """
        last: Any = None
        try:
            with trio.fail_after(timeout):
                while True:
                    last = await self.evaluate(expression)
                    if last:
                        return last
                    await trio.sleep(every)
        except trio.TooSlowError:
            raise TimeoutError(f"after {timeout} s, {expression} was still {last!r}") from None

    async def screenshot(self, path: Path) -> Path:
        """Save the page, full length, as a PNG at ``path``."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
        params: JSONObject = {"format": "png", "captureBeyondViewport": True}
        if size.get("width") and size.get("height"):
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        answer = await self.send("Page.captureScreenshot", params)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(answer["data"]))
        return path


class Browser:
    """A running headless Chromium and its DevTools connection."""

    def __init__(self, process: subprocess.Popen[bytes], connection: _Connection, nursery: trio.Nursery) -> None:
        self.process = process
        self._connection = connection
        self._nursery = nursery

    async def new_page(self, *, width: int = 1280, height: int = 900) -> Page:
        """A new blank tab of ``width`` by ``height`` CSS pixels, with page and runtime events on."""
        # The size is emulated below: createTarget takes one only for new windows.
        created = await self._connection.send("Target.createTarget", {"url": "about:blank"})
        target = created["targetId"]
        attached = await self._connection.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self._connection, target, attached["sessionId"])
        self._nursery.start_soon(page.collect_console)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page


async def _devtools_address(profile: Path, process: subprocess.Popen[bytes], timeout: float) -> tuple[int, str]:
    """Port and browser WebSocket path from ``DevToolsActivePort``, which Chromium writes into its profile."""
    port_file = profile / "DevToolsActivePort"
    with trio.fail_after(timeout):
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Chromium exited with {process.returncode} before listening")
            try:
                lines = port_file.read_text().split()
            except FileNotFoundError:
                lines = []
            # Chromium writes the file in one go, but the test may read it halfway.
            if len(lines) >= 2:
                return int(lines[0]), lines[1]
            await trio.sleep(0.05)


async def _open_websocket(port: int, path: str) -> tuple[trio.SocketStream, WSConnection]:
    """A client WebSocket handshake to 127.0.0.1:``port`` (bytes after the handshake stay buffered in wsproto)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=f"127.0.0.1:{port}", target=path)))
    while True:
        data = await stream.receive_some(65536)
        if not data:
            raise RuntimeError("Chromium closed the DevTools connection during the handshake")
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return stream, ws
            if isinstance(event, RejectConnection):
                raise RuntimeError(f"Chromium refused the DevTools connection: {event.status_code}")
            if isinstance(event, Message):
                raise RuntimeError("a message before the handshake ended")


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL Chromium's whole process group (renderers, GPU and zygote processes included) and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@asynccontextmanager
async def launch(workdir: Path, *, timeout: float = 30) -> AsyncIterator[Browser]:
    """A headless Chromium with its profile and log in ``workdir``; killed on exit, whatever happens.

    Args:
        workdir: a folder of the test's own (its ``chromium-profile/`` and
            ``chromium.log`` go there).
        timeout: how long Chromium may take to start listening.

    Raises:
        RuntimeError: Chromium exited or refused the connection at start.
        trio.TooSlowError: it did not listen within ``timeout``.
    """
    executable = require_chromium()
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    # A file left by an earlier browser on this profile would name its dead port.
    (profile / "DevToolsActivePort").unlink(missing_ok=True)
    with open(workdir / "chromium.log", "wb") as log:
        # A session of its own, so that killing the group reaches every
        # process Chromium forks and nothing else.
        process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        port, path = await _devtools_address(profile, process, timeout)
        stream, ws = await _open_websocket(port, path)
        connection = _Connection(stream, ws)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.read_forever)
            try:
                yield Browser(process, connection, nursery)
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await stream.aclose()
    finally:
        _kill(process)
