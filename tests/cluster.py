"""Several ``lockgate serve`` replicas behind a real nginx, sharing a database, a Redis and a session key.

The topology of ``deploy/compose.yaml`` on one machine, for the scale test,
``make scale-demo`` and ``bench/scale.py``: each :class:`Replica` is a real
``lockgate serve --transport http`` process on its own 127.0.0.1 port (its
own state folder and audit log), and :class:`Cluster` starts them, then an
:class:`~tests.nginx_server.Nginx` round-robin in front of them. What they
share comes in through the environment, as in production:
``GATEWAY_DATABASE_URL`` (users, keys, revocations), ``GATEWAY_REDIS_URL``
(rate limits) and ``GATEWAY_SESSION_KEY`` (sealed session ids).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.nginx_server import Nginx, free_port

__all__ = ["Cluster", "Replica", "new_session_key"]


def new_session_key() -> str:
    """A fresh ``GATEWAY_SESSION_KEY``: 32 random bytes in base64url."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


@dataclass
class Replica:
    """One running ``lockgate serve`` and what it wrote to stderr so far."""

    index: int
    folder: Path
    process: subprocess.Popen[bytes]
    stderr: list[str] = field(default_factory=list)
    port: int = 0
    ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.stderr.append(line)
            found = re.search(r"at http://127\.0\.0\.1:(\d+)/mcp", line)
            if found and not self.port:
                self.port = int(found.group(1))
                self.ready.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def audit_log(self) -> Path:
        return self.folder / "audit.jsonl"

    def audit_records(self) -> list[dict[str, Any]]:
        """Every complete record this replica's audit log holds."""
        if not self.audit_log.exists():
            return []
        lines = self.audit_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def kill(self) -> None:
        """SIGKILL: no goodbye, as when a machine dies."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


class Cluster:
    """``replicas`` gateways and an nginx in front of them; :meth:`stop` ends them all."""

    def __init__(self, replicas: list[Replica], nginx: Nginx | None) -> None:
        self.replicas = replicas
        self.nginx = nginx

    @property
    def url(self) -> str:
        """The balanced MCP endpoint."""
        assert self.nginx is not None
        return self.nginx.url

    @classmethod
    def start(
        cls,
        folder: Path,
        *,
        config: Path,
        rules: Path,
        env: Mapping[str, str],
        replicas: int = 3,
        serve_args: Sequence[str] = (),
        nginx: bool = True,
        nginx_workers: int = 1,
    ) -> Cluster:
        """Start ``replicas`` gateways (each with ``env`` and its own folder under ``folder``), then nginx.

        Raises:
            RuntimeError: a replica did not start serving within 60 s (its stderr is in the message).
        """
        started: list[Replica] = []
        cluster = cls(started, None)
        # The replicas check Host: the name clients reach them by is nginx's, as a deployment configures it.
        front = free_port()
        env = {"GATEWAY_ALLOWED_HOSTS": f"127.0.0.1:{front},localhost:{front}", **env}
        try:
            for index in range(replicas):
                own = folder / f"replica-{index}"
                own.mkdir(parents=True, exist_ok=True)
                environ = {
                    "PATH": os.environ["PATH"],
                    "HOME": os.environ.get("HOME", "/tmp"),
                    "GATEWAY_STATE_DIR": str(own / "state"),
                    "GATEWAY_AUDIT_LOG": str(own / "audit.jsonl"),
                    **env,
                }
                argv = [
                    sys.executable, "-m", "lockgate.shells", "serve", "--config", str(config), "--rules", str(rules),
                    "--transport", "http", "--port", "0", *serve_args,
                ]
                process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environ)
                started.append(Replica(index, own, process))
            for replica in started:
                if not replica.ready.wait(60):
                    raise RuntimeError(f"replica {replica.index} did not start: {''.join(replica.stderr)[-2000:]}")
            if nginx:
                cluster.nginx = Nginx.start([replica.port for replica in started], port=front, workers=nginx_workers)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until every live replica answers ``/ready`` with 200."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        for replica in self.replicas:
            while replica.process.poll() is None:
                try:
                    with urllib.request.urlopen(f"{replica.base}/ready", timeout=5) as answer:
                        if answer.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {replica.index} is not ready: {''.join(replica.stderr)[-2000:]}")
                time.sleep(0.1)

    def stderr(self) -> str:
        """Every replica's stderr and nginx's error log, for a failing test's report."""
        parts = [f"--- replica {r.index} ---\n{''.join(r.stderr)}" for r in self.replicas]
        if self.nginx is not None:
            parts.append(f"--- nginx ---\n{self.nginx.error_log()}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for replica in self.replicas:
            replica.stop()
