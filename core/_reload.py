"""Configuration reloads: how a new configuration takes over, and the record of attempts.

The shell watches the configuration files and reports every attempt to load
them as one event: :class:`~lockgate.core.ConfigReloaded` when the new files
are valid, :class:`~lockgate.core.ConfigRejected` when they are not (the
running configuration then stays). :class:`Reloads` swaps the configuration
between two events, with no lock: policy applies from the next request on,
and the links of a changed or removed server retire (stop once their calls
end) while a changed or added server gets a fresh pool. A server whose
instances alone changed (a registration, say) keeps its pool: the instances
that stay keep running, new ones start, gone ones retire. :class:`ReloadStatus`
keeps count of the attempts for ``get_gateway_status`` and the metrics.

Times are what the shell put in the event: a wall-clock ISO 8601 string, or,
when it gave none, the event's monotonic ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ._config import Problem, ServerSpec
from ._events import ConfigRejected, ConfigReloaded
from ._instance import Instance
from ._link import Link
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
            if pool is not None and self._reconcile(pool, spec):
                ctx.pools[name] = pool
                changed.append(name)
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

    def _reconcile(self, pool: Pool, spec: ServerSpec) -> bool:
        """Change ``pool``'s instances in place to ``spec``'s, when only they changed; ``False`` when it must be replaced.

        An instance whose id, launch and weight are the same keeps its
        :class:`~._instance.Instance` (breaker, counts) and its links, which
        go on serving; a new one gets a link, started at once under the eager
        strategy; the links of one that is gone retire (they stop once their
        calls end, and are never chosen again: they leave the pool). Indices
        follow ``spec``'s order, so ``Pool.shared[i]`` is instance ``i``'s
        link again, and the calls in flight have what they ``tried``
        renumbered to match. A pool none of whose instances stays is replaced
        as a whole, as is one whose other settings changed.
        """
        if _pool_settings(pool.spec) != _pool_settings(spec):
            return False
        wanted = spec.launch_specs()
        before = {instance.id: instance for instance in pool.instances}
        if len(before) != len(pool.instances) or len({w.id for w in wanted}) != len(wanted):
            return False  # ids that do not name one instance each (a configuration built in code)
        kept = {
            w.id: before[w.id]
            for w in wanted
            if w.id in before and before[w.id].weight == w.weight and _launch(before[w.id].spec) == _launch(w.spec)
        }
        if not kept:
            return False
        links = self.links
        renumbered: dict[int, int] = {}  # old index -> new, of the instances that stay
        instances: list[Instance] = []
        for n, w in enumerate(wanted):
            instance = kept.get(w.id)
            if instance is None:
                instance = Instance(index=n, id=w.id, spec=w.spec, weight=w.weight)
            else:
                renumbered[instance.index] = n
                instance.index, instance.spec = n, w.spec
            instances.append(instance)
        gone = [instance for instance in pool.instances if instance.id not in kept]
        old_links = pool.links()
        for link in old_links:
            # Calls keep the indices of the instances they tried; those of a gone one no longer name it.
            for call in [*link.pending.values(), *link.waiters]:
                call.tried = tuple(renumbered[i] for i in call.tried if i in renumbered)
        by_instance = {id(link.instance): link for link in pool.shared}
        fresh: list[Link] = []
        if spec.isolation == "shared":
            shared: list[Link] = []
            for instance in instances:
                own = by_instance.get(id(instance))
                if own is None:
                    own = Pool.link_for(spec, instance)
                    fresh.append(own)
                shared.append(own)
            pool.shared = shared
        for client, link in list(pool.clients.items()):
            if link.instance.id not in kept:
                del pool.clients[client]  # the client's next call gets a link on an instance that stays
        pool.spec, pool.instances = spec, instances
        if pool.known is not None and pool.known.instance in gone:
            pool.known = next((link for link in pool.links() if link.tools is not None), None)
        for link in old_links:
            if link.instance in gone:
                link.retiring = True
                links.retire_if_idle(link)
            else:
                link.entry, link.spec = spec, link.instance.spec
        ctx = self._ctx
        if ctx.config.settings.init_strategy == "eager" and not ctx.closing:
            cap = spec.max_processes
            for link in fresh:
                if cap is None or pool.live() < cap:
                    links.start(link)
        ctx.log(
            "info", "instances changed",
            server=pool.name, added=[w.id for w in wanted if w.id not in kept], removed=[instance.id for instance in gone],
        )
        return True

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


def _launch(spec: ServerSpec) -> ServerSpec:
    """How ``spec`` starts, and nothing else: what decides whether an instance's process may stay."""
    return ServerSpec(
        name=spec.name, transport=spec.transport, command=spec.command, args=spec.args, env=spec.env,
        cwd=spec.cwd, url=spec.url, headers=spec.headers,
    )


def _pool_settings(spec: ServerSpec) -> ServerSpec:
    """``spec`` without its instances, the launch keys copied from them and its description (shown, never used to run)."""
    # The launch keys are copied from the first instance (for display): each instance is compared on its own.
    return replace(
        spec, instances=(), description="", transport="stdio", command=None, args=(), env={}, cwd=None, url=None, headers={}
    )
