"""A minimal MCP server over Streamable HTTP with no SDK: one ``echo`` tool.

It serves ``POST /mcp`` with plain JSON answers (never SSE), mints one
session id at ``initialize``, answers notifications with 202, a GET with 405
(no notification stream) and a DELETE with 200. No validation beyond what
the benchmark needs: it shows the gateway's own cost without an SDK server's
cost on top. It serves on the listening socket inherited as file descriptor
``--http-fd N``.
"""

from __future__ import annotations

import json
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from raw_echo_server import _answer

SESSION = "raw-echo-session"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            message = json.loads(body)
        except ValueError:
            self._reply(400, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}')
            return
        if not isinstance(message, dict) or "method" not in message or "id" not in message:
            self._reply(202, b"")
            return
        result, error = _answer(str(message["method"]), message.get("params") or {})
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        if error is None:
            reply["result"] = result
        else:
            reply["error"] = error
        session = SESSION if message["method"] == "initialize" else None
        self._reply(200, json.dumps(reply, separators=(",", ":")).encode(), session=session)

    def do_GET(self) -> None:
        self._reply(405, b"")

    def do_DELETE(self) -> None:
        self._reply(200, b"")

    def _reply(self, status: int, body: bytes, session: str | None = None) -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        if session is not None:
            self.send_header("Mcp-Session-Id", session)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    fd = int(sys.argv[sys.argv.index("--http-fd") + 1])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=fd)
    server.serve_forever()


if __name__ == "__main__":
    main()
