"""Configuration reloads: how a new configuration takes over, and the record of attempts.

The shell watches the configuration files and reports every attempt to load
them as one event: :class:`~lockgate.core.ConfigReloaded` when the new files
are valid, :class:`~lockgate.core.ConfigRejected` when they are not (the
running configuration then stays). :class:`Reloads` swaps the configuration
between two events, with no lock: policy applies from the next request on,
and the links of a changed or removed server retire (stop once their calls
end) while a changed or added server gets a fresh pool. :class:`ReloadStatus`
keeps count of the attempts for ``get_gateway_status`` and the metrics.

Times are what the shell put in the event: a wall-clock ISO 8601 string, or,
when it gave none, the event's monotonic ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._config import Problem
from ._events import ConfigRejected, ConfigReloaded
from ._pool import Pool

if TYPE_CHECKING:
    from ._context import Context
    from ._links import Links

__all__ = ["ReloadStatus", "Reloads", "problem_json"]

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


class Reloads:
    """A new configuration taking over, or a refused one being recorded (see the module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.links: Links

    def reloaded(self, ev: ConfigReloaded) -> None:
        """Swap configuration between two events; running calls finish as they started.

        Policy and descriptions apply from the next request on. A server whose
        spec changed, or that is gone, keeps its links until their calls end
        (``retiring``); a changed or added one gets a fresh :class:`Pool`,
        started now under the eager strategy.
        """
        ctx = self._ctx
        new = ev.config
        old_pools = ctx.pools
        ctx.config = new
        ctx.pools = {}
        changed: list[str] = []
        added: list[str] = []
        for name, spec in new.servers.items():
            pool = old_pools.pop(name, None)
            if pool is not None and pool.spec == spec:
                ctx.pools[name] = pool
                continue
            if pool is not None:
                changed.append(name)
                self._retire(pool)
            else:
                added.append(name)
            fresh = Pool.build(spec)
            ctx.pools[name] = fresh
            if new.settings.init_strategy == "eager" and not ctx.closing:
                self.links.start_eager(fresh)
        for pool in old_pools.values():
            self._retire(pool)
        ctx.reload.succeeded(at=ev.time if ev.time is not None else ev.now, files=ev.files, warnings=new.warnings)
        ctx.log(
            "notice", "configuration reloaded",
            files=list(ev.files), added=added, removed=sorted(old_pools), changed=changed,
            agents=len(new.policy.agents),
        )
        for warning in new.warnings:
            ctx.log("warning", warning.message, file=warning.file, path=warning.path)

    def _retire(self, pool: Pool) -> None:
        """A reload removed or changed this server: stop each link once it has nothing in flight."""
        for link in pool.links():
            link.retiring = True
            self.links.retire_if_idle(link)

    def rejected(self, ev: ConfigRejected) -> None:
        """Record a refused reload and say why; the running configuration stays."""
        ctx = self._ctx
        ctx.reload.failed(at=ev.time if ev.time is not None else ev.now, files=ev.files, problems=ev.problems, warnings=ev.warnings)
        for problem in ev.problems:
            ctx.log(
                "error", f"configuration rejected, keeping the running one: {problem.message}",
                file=problem.file, path=problem.path,
            )
