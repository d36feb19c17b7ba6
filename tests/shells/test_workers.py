"""The pieces of ``serve --workers``: the option, the role a worker is given, its log field, the watch pipe.

The processes themselves (supervisor, workers, restarts, signals) are
exercised end to end in tests/e2e/test_workers.py.
"""

from __future__ import annotations

import io
import logging
import os
import socket

import pytest
import trio

from lockgate.shells.logs import get_logger, setup_logging
from lockgate.shells.workers import (
    WorkerRole,
    bind_listeners,
    parse_workers,
    resolve_workers,
    tag_worker_logs,
    watch_parent,
)


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("4", 4), ("auto", "auto"), ("AUTO", "auto"), ("016", 16)])
def test_a_number_of_workers_is_a_whole_number_of_one_or_more_or_auto(text: str, value: object) -> None:
    assert parse_workers(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "x", "1.5", "", " ", "²", "1e3"])
def test_anything_else_is_refused_with_what_to_give(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a number of workers: give a whole number of 1 or more, or auto"):
        parse_workers(text)


def test_auto_is_the_cores_this_process_may_run_on() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert resolve_workers("auto") == expected
    assert resolve_workers(3) == 3


def test_a_role_reads_back_as_written() -> None:
    role = WorkerRole(index=2, supervisor=1234, watch_fd=5, ready_fd=6, listen_fds=(7, 8))
    assert role.option() == "2:1234:5:6:7,8"
    assert WorkerRole.parse(role.option()) == role
    with pytest.raises(ValueError):
        WorkerRole.parse("2:1234:5:7,8")


def test_the_sockets_bound_for_the_workers_listen_and_come_back_through_a_role() -> None:
    sockets = bind_listeners("127.0.0.1", 0)
    try:
        port = sockets[0].getsockname()[1]
        role = WorkerRole(0, os.getpid(), 0, 0, tuple(os.dup(s.fileno()) for s in sockets))
        (inherited,) = role.sockets()
        with inherited, socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            accepted, _ = inherited.accept()
            accepted.close()
            assert client.getpeername()[1] == port
    finally:
        for s in sockets:
            s.close()


def test_each_log_line_of_a_worker_carries_its_index() -> None:
    stream = io.StringIO()
    logger = setup_logging(stream=stream)
    try:
        tag_worker_logs(logger, 3)
        fields = {"server": "notes"}
        get_logger("core").warning("one", extra={"fields": fields})
        get_logger("core").warning("two")
        assert [line.split(" ", 2)[2] for line in stream.getvalue().splitlines()] == [
            "one server=notes worker=3", "two worker=3",
        ]
        assert fields == {"server": "notes"}  # the caller's mapping is left as it was
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


async def test_the_end_of_the_watch_pipe_stops_the_worker() -> None:
    read, write = os.pipe()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_parent, read, stop)
        os.write(write, b"ignored")  # only the end counts
        await trio.sleep(0.05)
        assert not stop.is_set()
        os.close(write)  # as the kernel does when the supervisor dies, however it dies
        with trio.fail_after(10):
            await stop.wait()
