"""A real nginx in front of Lockgate replicas, for tests and benchmarks: 127.0.0.1 only, its own folder, stopped at the end.

The binary is Debian's (``apt-get install -y nginx``, which ``make nginx``
runs when it is missing). Each :class:`Nginx` writes its own configuration,
pid file, logs and temporary folders into a new folder under /tmp, so nothing
of the system's nginx is read or written, and runs in the foreground
(``daemon off``) as a child of the test.

The configuration is the one a user would put in front of several Lockgate
replicas (the settings of ``deploy/nginx.conf``, with local addresses and paths):
round-robin with no stickiness, HTTP/1.1 to the replicas with keep-alive,
no buffering (SSE responses stream), long read timeouts. A replica that
refuses connections is passed over (``proxy_next_upstream error timeout``),
but a request already sent is never sent again elsewhere: MCP calls are not
idempotent, so a POST cut off by a dying replica is the client's to retry.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["INSTALL_HINT", "Nginx", "NginxUnavailable", "find_nginx", "free_port"]

INSTALL_HINT = "install nginx with `make nginx` (Debian's package: apt-get install -y nginx)"

_CONFIG = """\
daemon off;
master_process on;
worker_processes {workers};
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
{user}
events {{
    worker_connections 8192;
}}

http {{
    access_log {access_log};
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;

    upstream lockgate {{
{servers}
        keepalive 256;
    }}

    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 8m;

        location / {{
            proxy_pass http://lockgate;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"""


class NginxUnavailable(Exception):
    """nginx is not installed or would not start; ``str()`` says why and what to do."""


def find_nginx() -> str | None:
    """The nginx binary, or ``None`` when it is not installed."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    return found


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now (it may be taken before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Nginx:
    """One running nginx balancing over ``upstreams``; :meth:`start` makes it, :meth:`stop` removes it and its folder."""

    def __init__(self, binary: str, folder: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.binary = binary
        self.folder = folder
        self.port = port
        self.process = process

    @property
    def url(self) -> str:
        """The MCP endpoint as the balancer serves it."""
        return f"http://127.0.0.1:{self.port}/mcp"

    @classmethod
    def start(cls, upstreams: Sequence[int], *, port: int | None = None, workers: int = 1, access_log: bool = False) -> Nginx:
        """Start nginx on ``port`` (else a free one) of 127.0.0.1 in front of ``upstreams`` (ports on 127.0.0.1).

        Raises:
            NginxUnavailable: nginx is not installed, or did not start listening within 10 s.
        """
        binary = find_nginx()
        if binary is None:
            raise NginxUnavailable(f"nginx is not installed: {INSTALL_HINT}")
        folder = Path(tempfile.mkdtemp(prefix="lockgate-nginx-"))
        port = port or free_port()
        (folder / "nginx.conf").write_text(config(folder, port, upstreams, workers=workers, access_log=access_log))
        process = subprocess.Popen(
            [binary, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        server = cls(binary, folder, port, process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                problem = (process.stderr.read() if process.stderr else b"").decode(errors="replace").strip()
                server._remove()
                raise NginxUnavailable(f"nginx exited with {process.returncode}: {problem[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return server
            except OSError:
                time.sleep(0.05)
        server.stop()
        raise NginxUnavailable("nginx did not listen within 10 s")

    def reload(self) -> None:
        """Reload the configuration (SIGHUP): new workers take over, old ones finish their requests."""
        self.process.send_signal(signal.SIGHUP)

    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop nginx (SIGQUIT: graceful, then SIGKILL after 10 s) and remove its folder."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def config(folder: Path, port: int, upstreams: Sequence[int], *, workers: int = 1, access_log: bool = False) -> str:
    """nginx's configuration for ``upstreams``, with every path inside ``folder``."""
    servers = "\n".join(f"        server 127.0.0.1:{upstream} max_fails=1 fail_timeout=2s;" for upstream in upstreams)
    # As root, nginx's workers would switch to a user that may not read the folder; keep them as root here.
    user = "user root;" if os.geteuid() == 0 else ""
    return _CONFIG.format(
        folder=folder,
        port=port,
        servers=servers,
        workers=workers,
        user=user,
        access_log=f"{folder}/access.log" if access_log else "off",
    )
