"""Reload status: the record of configuration reloads since start-up.

The shell watches the configuration files and reports every attempt to load
them as one event: :class:`~.events.ConfigReloaded` when the new files are
valid, :class:`~.events.ConfigRejected` when they are not (the running
configuration then stays). :class:`ReloadStatus` keeps count of those
attempts for ``get_gateway_status`` and the metrics endpoint.

Times are what the shell put in the event: a wall-clock ISO 8601 string, or,
when it gave none, the event's monotonic ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._config import Problem

__all__ = ["ReloadStatus", "problem_json"]

JSONObject = dict[str, Any]
Stamp = str | float


def problem_json(problem: Problem) -> JSONObject:
    """A problem as a JSON object: ``{"file", "path", "message"}``."""
    return {"file": problem.file, "path": problem.path, "message": problem.message}


@dataclass(slots=True)
class _FileRecord:
    """When one file last changed, last loaded and last failed to load."""

    changed: Stamp | None = None
    loaded: Stamp | None = None
    rejected: Stamp | None = None


@dataclass(slots=True)
class ReloadStatus:
    """Counts and last outcomes of configuration reloads; see the module docstring."""

    attempts: int = 0
    successes: int = 0
    failures: int = 0
    last_result: str | None = None
    last_attempt: Stamp | None = None
    last_success: Stamp | None = None
    last_failure: Stamp | None = None
    #: When the last refused attempt happened and why (kept after later successes).
    last_error_at: Stamp | None = None
    last_problems: tuple[Problem, ...] = ()
    last_warnings: tuple[Problem, ...] = ()
    files: dict[str, _FileRecord] = field(default_factory=dict)

    def succeeded(self, *, at: Stamp, files: tuple[str, ...], warnings: tuple[Problem, ...]) -> None:
        """Record a configuration that was taken into use."""
        self.attempts += 1
        self.successes += 1
        self.last_result = "ok"
        self.last_attempt = self.last_success = at
        self.last_warnings = warnings
        for name in files:
            record = self.files.setdefault(name, _FileRecord())
            record.changed = record.loaded = at

    def failed(
        self, *, at: Stamp, files: tuple[str, ...], problems: tuple[Problem, ...], warnings: tuple[Problem, ...]
    ) -> None:
        """Record a configuration that was refused; the running one stays."""
        self.attempts += 1
        self.failures += 1
        self.last_result = "rejected"
        self.last_attempt = self.last_failure = at
        self.last_error_at = at
        self.last_problems = problems
        self.last_warnings = warnings
        for name in files:
            record = self.files.setdefault(name, _FileRecord())
            record.changed = record.rejected = at

    def snapshot(self) -> JSONObject:
        """A JSON copy of the record (``draining`` is added by the gateway)."""
        return {
            "attempts": self.attempts,
            "successes": self.successes,
            "failures": self.failures,
            "last_result": self.last_result,
            "last_attempt": self.last_attempt,
            "last_success": self.last_success,
            "last_failure": self.last_failure,
            "last_error": None
            if self.last_error_at is None
            else {"time": self.last_error_at, "problems": [problem_json(p) for p in self.last_problems]},
            "last_warnings": [problem_json(p) for p in self.last_warnings],
            "files": {
                name: {"changed": r.changed, "loaded": r.loaded, "rejected": r.rejected}
                for name, r in self.files.items()
            },
        }
