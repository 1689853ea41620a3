"""``asgire.trace``: its figures checked against workloads whose shape is known."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import io
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import asgiref.sync
from asgiref.sync import SyncToAsync, async_to_sync, sync_to_async

pytest.importorskip("asgire")

from asgire import trace  # after the skip: upstream runs lack it
from asgire.trace import Crossing, Recording, Summary, TraceMiddleware

pytestmark = pytest.mark.asgire_only

THIS_FILE = Path(__file__).read_text().splitlines()
SLEEP = 0.05
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


def site(marker: str) -> str:
    """The call site of the line in this file that ends with ``# marker``."""
    (number,) = [
        n for n, line in enumerate(THIS_FILE, 1) if line.endswith(f"# {marker}")
    ]
    return f"{__file__}:{number}"


def name(func: Any) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def double(value: int) -> int:
    return value * 2


async def async_double(value: int) -> int:
    return value * 2


class Clocked:
    """A function that measures how long it runs (``time.sleep(SLEEP)``)."""

    def __init__(self) -> None:
        self.took = 0.0

    def sleep(self) -> None:
        started = time.perf_counter()
        time.sleep(SLEEP)
        self.took = time.perf_counter() - started

    async def sleep_blocking_the_loop(self) -> None:
        self.sleep()


class Holder:
    """Keeps the thread-sensitive thread busy until ``release`` is set."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.started = asyncio.Event()
        self.release = threading.Event()

    def hold_the_thread(self) -> None:
        self.loop.call_soon_threadsafe(self.started.set)
        assert self.release.wait(timeout=10)

    async def occupy(self) -> asyncio.Future[None]:
        """Start holding the thread; returns the holding call, running."""
        holder = asyncio.ensure_future(sync_to_async(self.hold_the_thread)())
        await self.started.wait()
        return holder


@pytest.fixture(autouse=True)
def hook_is_removed_afterwards() -> Any:
    assert asgiref.sync._trace_hook is None
    yield
    assert asgiref.sync._trace_hook is None


# What is recorded


async def test_each_sync_to_async_call_is_one_record() -> None:
    with Recording() as recording:
        for value in range(3):
            assert await sync_to_async(double)(value) == value * 2  # s2a-loop
        await sync_to_async(double, thread_sensitive=False)(5)  # s2a-free
    crossings = recording.crossings
    assert len(crossings) == 4
    for crossing in crossings[:3]:
        assert crossing.kind == "sync_to_async"
        assert crossing.function == name(double)
        assert crossing.call_site == site("s2a-loop")
        assert crossing.thread_sensitive is True
        assert crossing.raised is False
        assert crossing.queued >= 0
        assert crossing.run >= 0
    assert crossings[3].thread_sensitive is False
    assert crossings[3].call_site == site("s2a-free")
    assert recording.summary() == Summary(
        4, sum(c.queued for c in crossings), sum(c.run for c in crossings)
    )


async def test_run_time_covers_the_function() -> None:
    clocked = Clocked()
    with Recording() as recording:
        await sync_to_async(clocked.sleep)()
    (crossing,) = recording.crossings
    assert crossing.function == name(Clocked.sleep)
    assert crossing.run >= clocked.took >= SLEEP


async def test_queued_time_covers_the_wait_for_the_thread_sensitive_thread() -> None:
    holding = Holder()
    with Recording() as recording:
        holder = await holding.occupy()
        waiter = asyncio.ensure_future(sync_to_async(double)(1))
        await asyncio.sleep(0)  # the waiter has now queued its call
        queued_from = time.perf_counter()
        await asyncio.sleep(SLEEP)
        held = time.perf_counter() - queued_from
        holding.release.set()
        await asyncio.gather(holder, waiter)
    by_function = {c.function: c for c in recording.crossings}
    assert by_function[name(double)].queued >= held >= SLEEP
    # The holder's call did not wait for anything but a free thread.
    assert by_function[name(Holder.hold_the_thread)].run >= held


def test_async_to_sync_from_a_plain_thread(in_new_thread: Any) -> None:
    clocked = Clocked()

    def action() -> tuple[Crossing, ...]:
        with Recording() as recording:
            assert async_to_sync(async_double)(4) == 8  # a2s-thread
            async_to_sync(clocked.sleep_blocking_the_loop)()
        return recording.crossings

    first, second = in_new_thread(action)
    assert first.kind == "async_to_sync"
    assert first.function == name(async_double)
    assert first.call_site == site("a2s-thread")
    assert first.thread_sensitive is None
    assert first.raised is False
    assert second.run >= clocked.took >= SLEEP


async def test_async_to_sync_inside_sync_to_async_is_recorded_too() -> None:
    def sync_view() -> int:
        return async_to_sync(async_double)(3)  # a2s-in-s2a

    with Recording() as recording:
        assert await sync_to_async(sync_view)() == 6  # s2a-outer
    inner, outer = recording.crossings  # in the order they finished
    assert (inner.kind, inner.function, inner.call_site) == (
        "async_to_sync",
        name(async_double),
        site("a2s-in-s2a"),
    )
    assert (outer.kind, outer.function, outer.call_site) == (
        "sync_to_async",
        name(sync_view),
        site("s2a-outer"),
    )
    assert outer.run >= inner.queued + inner.run


def test_nested_crossings_from_a_sync_thread(in_new_thread: Any) -> None:
    def innermost() -> str:
        return threading.current_thread().name

    async def middle() -> str:
        return await sync_to_async(innermost)()  # nested-s2a

    def action() -> tuple[str, tuple[Crossing, ...]]:
        with Recording() as recording:
            ran_on = async_to_sync(middle)()  # nested-a2s
        return ran_on, recording.crossings

    ran_on, crossings = in_new_thread(action)
    # Tracing leaves thread placement alone: the sync code runs on the
    # thread that waits in async_to_sync.
    assert ran_on != threading.current_thread().name
    assert [(c.kind, c.function, c.call_site) for c in crossings] == [
        ("sync_to_async", name(innermost), site("nested-s2a")),
        ("async_to_sync", name(middle), site("nested-a2s")),
    ]


async def test_exceptions_are_recorded_and_still_raised() -> None:
    def fail() -> None:
        raise LookupError("sync")

    async def async_fail() -> None:
        raise KeyError("async")

    def sync_caller() -> None:
        with pytest.raises(KeyError, match="async"):
            async_to_sync(async_fail)()

    with Recording() as recording:
        with pytest.raises(LookupError, match="sync"):
            await sync_to_async(fail)()
        await sync_to_async(sync_caller)()
    assert [(c.function, c.raised) for c in recording.crossings] == [
        (name(fail), True),
        (name(async_fail), True),
        (name(sync_caller), False),
    ]


async def test_a_crossing_run_by_a_task_itself_has_no_known_call_site() -> None:
    with Recording() as recording:
        await asyncio.gather(sync_to_async(double)(1), sync_to_async(double)(2))
    assert [c.call_site for c in recording.crossings] == ["<task>", "<task>"]


async def test_functions_are_named_through_partials_and_callable_objects() -> None:
    class Handler:
        def __call__(self) -> str:
            return "called"

    with Recording() as recording:
        await sync_to_async(functools.partial(double, 1))()
        await sync_to_async(Handler())()
        await sync_to_async(Clocked().sleep)()
    assert [c.function for c in recording.crossings] == [
        name(double),
        name(Handler),
        name(Clocked.sleep),
    ]


async def test_a_method_made_to_cross_is_named_after_itself() -> None:
    class Service:
        @async_to_sync
        async def lookup(self) -> str:
            return "found"

    with Recording() as recording:
        # sync_to_async gets the bound method: a partial of AsyncToSync.__call__.
        assert await sync_to_async(Service().lookup)() == "found"
    assert [(c.kind, c.function) for c in recording.crossings] == [
        ("async_to_sync", name(Service.lookup)),
        ("sync_to_async", name(Service.lookup)),
    ]


async def test_an_overridden_thread_handler_still_gets_the_function() -> None:
    handed: list[Any] = []

    class Wrapping(SyncToAsync[[int], int]):
        def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
            handed.append(args[-1])
            return super().thread_handler(loop, *args, **kwargs)

    with Recording() as recording:
        assert await Wrapping(double)(4) == 8  # handler-call
    (child,) = handed
    assert child.func is double
    (crossing,) = recording.crossings
    assert (crossing.function, crossing.call_site) == (
        name(double),
        site("handler-call"),
    )


async def test_any_keyword_argument_reaches_the_function() -> None:
    def keywords(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    with Recording() as recording:
        assert await sync_to_async(keywords)(target=1) == {"target": 1}
    assert len(recording.crossings) == 1


async def test_tracing_keeps_context_variables_and_the_exception_being_handled() -> (
    None
):
    def set_and_see() -> BaseException | None:
        request_id.set("set in sync code")
        return sys.exc_info()[1]

    handled = ValueError("being handled")
    with Recording() as recording:
        try:
            raise handled
        except ValueError:
            seen = await sync_to_async(set_and_see)()
    assert seen is handled
    assert request_id.get() == "set in sync code"
    assert len(recording.crossings) == 1


async def test_a_call_cancelled_before_it_started_is_not_recorded() -> None:
    holding = Holder()
    with Recording() as recording:
        holder = await holding.occupy()
        waiter = asyncio.ensure_future(sync_to_async(double)(1))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        holding.release.set()
        await holder
    assert [c.function for c in recording.crossings] == [name(Holder.hold_the_thread)]


# Which recording gets a crossing


async def test_concurrent_tasks_record_separately() -> None:
    ready = asyncio.Event()
    entered: list[None] = []

    async def request(label: int, record: bool) -> tuple[Crossing, ...]:
        recording = Recording()
        if record:
            recording.__enter__()
        try:
            entered.append(None)
            if len(entered) == 3:
                ready.set()
            await ready.wait()  # every task is inside its block now
            for _ in range(label):
                await sync_to_async(double)(label)
            return recording.crossings
        finally:
            if record:
                recording.__exit__(None, None, None)

    # The third task records nothing: its three crossings must not show up
    # in the other two recordings.
    one, two, _ = await asyncio.gather(
        request(1, True), request(2, True), request(3, False)
    )
    assert len(one) == 1
    assert len(two) == 2


def test_nothing_is_recorded_outside_a_recording(in_new_thread: Any) -> None:
    with Recording() as recording:
        assert asgiref.sync._trace_hook is not None
        # A thread does not inherit this context: its crossing is not ours.
        assert in_new_thread(lambda: async_to_sync(async_double)(1)) == 2
    async_to_sync(async_double)(1)
    assert recording.crossings == ()


def test_nested_recordings_each_record_what_is_made_in_them() -> None:
    with Recording() as outer:
        async_to_sync(async_double)(1)
        with Recording() as inner:
            async_to_sync(async_double)(2)
        assert asgiref.sync._trace_hook is not None
    assert len(outer.crossings) == 2
    assert len(inner.crossings) == 1
    assert inner.crossings[0] is outer.crossings[1]


def test_the_hook_is_removed_when_the_body_raises() -> None:
    def body() -> None:
        with Recording():
            assert asgiref.sync._trace_hook is not None
            raise KeyError("body")

    with pytest.raises(KeyError):
        body()
    assert asgiref.sync._trace_hook is None


def test_a_recording_is_entered_once() -> None:
    recording = Recording()
    with recording:
        pass
    with pytest.raises(RuntimeError, match="entered only once"), recording:
        pass


def test_refuses_an_asgiref_without_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(asgiref.sync, "_trace_hook")
    with pytest.raises(RuntimeError, match="asgire info"), Recording():
        pass
    monkeypatch.undo()
    # The refused recording did not count as active.
    with Recording():
        pass


# report()


def crossing(
    call_site: str,
    queued: float,
    *,
    function: str = "app.view",
    thread_sensitive: bool | None = True,
) -> Crossing:
    kind = "async_to_sync" if thread_sensitive is None else "sync_to_async"
    return Crossing(kind, function, call_site, thread_sensitive, queued, 0.001, False)


def test_report_orders_call_sites_by_crossings_and_by_queued_time() -> None:
    crossings = [
        crossing("a.py:1", 0.001),
        crossing("b.py:2", 0.010, thread_sensitive=False),
        crossing("a.py:1", 0.001),
        crossing("c.py:3", 0.002, thread_sensitive=None, function="app.notify"),
        crossing("a.py:1", 0.001),
        crossing("c.py:3", 0.002, thread_sensitive=None, function="app.notify"),
    ]
    text = trace.format_report(crossings, top=2)
    assert text.splitlines() == [
        "6 crossings, 17.000 ms queued, 6.000 ms run",
        "",
        "Top call sites by crossings:",
        " crossings  queued ms     run ms  call site  function",
        "         3      3.000      3.000  a.py:1     app.view (sync_to_async)",
        "         2      4.000      2.000  c.py:3     app.notify (async_to_sync)",
        "",
        "Top call sites by queued time:",
        " crossings  queued ms     run ms  call site  function",
        "         1     10.000      1.000  b.py:2     app.view (sync_to_async, thread_sensitive=False)",
        "         2      4.000      2.000  c.py:3     app.notify (async_to_sync)",
    ]


def test_report_prints_a_recording(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Recording() as recording:
        async_to_sync(async_double)(1)  # reported
    monkeypatch.chdir(Path(__file__).parent.parent)
    out = io.StringIO()
    trace.report(recording, file=out)
    # Relative to the working directory, the file is under it.
    line = site("reported").rpartition(":")[2]
    expected = f"  tests/test_trace.py:{line}  {name(async_double)} (async_to_sync)"
    assert expected in out.getvalue()
    trace.report(recording)
    assert capsys.readouterr().out == out.getvalue()


def test_report_columns_line_up_with_their_headings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    inside = f"{tmp_path / 'app' / 'views.py'}:12"
    outside = f"{tmp_path.parent / 'lib.py'}:3"
    crossings = [
        crossing(inside, 0.003),
        crossing(outside, 0.002),
        crossing(trace.TASK_CALL_SITE, 0.001),
    ]
    lines = trace.format_report(crossings).splitlines()
    heading, *rows = lines[3:7]
    # Each heading ends where its column of figures ends; the call sites and
    # the functions start where their headings start.
    for label in ("crossings", "queued ms", "run ms"):
        end = heading.index(label) + len(label)
        assert all(row[end - 1] != " " and row[end : end + 1] == " " for row in rows)
    site_at, function_at = heading.index("call site"), heading.index("function")
    sites = [row[site_at:function_at].rstrip() for row in rows]
    assert sites == [os.path.join("app", "views.py") + ":12", outside, "<task>"]
    assert {row[function_at:] for row in rows} == {"app.view (sync_to_async)"}


def test_report_keeps_a_path_it_cannot_make_relative(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def other_drive(path: str, start: str) -> str:
        raise ValueError("path is on mount 'D:', start on mount 'C:'")

    monkeypatch.setattr(os.path, "relpath", other_drive)
    site = f"{os.getcwd()}{os.sep}views.py:7"
    assert f"  {site}  app.view" in trace.format_report([crossing(site, 0.0)])


def test_report_of_nothing_and_bad_top() -> None:
    assert trace.format_report([]).splitlines()[0] == (
        "0 crossings, 0.000 ms queued, 0.000 ms run"
    )
    with pytest.raises(ValueError, match="top must be at least 1"):
        trace.format_report([], top=0)


# TraceMiddleware


class Exchange:
    """Drives one ASGI connection by hand and keeps what the app sent."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def run(self, app: Any) -> None:
        await app(self.scope, self.receive, self.send)


def http(path: str = "/hello") -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "headers": []}


APP_HEADERS = [(b"content-type", b"text/plain")]
START = {"type": "http.response.start", "status": 200, "headers": APP_HEADERS}


async def view_app(scope: Any, receive: Any, send: Any) -> None:
    """Two crossings before the response starts, one while sending the body."""
    await sync_to_async(double)(1)
    await sync_to_async(double)(2)
    await send(START)
    await sync_to_async(double)(3)
    await send({"type": "http.response.body", "body": b"ok"})


async def test_middleware_logs_one_line_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="asgire.trace")
    exchange = Exchange(http())
    await exchange.run(TraceMiddleware(view_app))
    (record,) = caplog.records
    assert record.name == "asgire.trace"
    assert record.levelno == logging.INFO
    assert re.fullmatch(
        r"GET /hello: 3 crossings, \d+\.\d{3} ms queued, \d+\.\d{3} ms run",
        record.getMessage(),
    )
    crossings = getattr(record, "trace_recording").crossings  # noqa: B009
    assert [c.function for c in crossings] == [name(double)] * 3
    # Without server_timing, the response is the app's own.
    assert exchange.sent[0] is START


async def test_middleware_adds_server_timing_with_the_figures_so_far() -> None:
    exchange = Exchange(http())
    await exchange.run(TraceMiddleware(view_app, server_timing=True))
    start, body = exchange.sent
    assert body == {"type": "http.response.body", "body": b"ok"}
    assert start["status"] == 200
    assert start["headers"][:-1] == APP_HEADERS
    header, value = start["headers"][-1]
    assert header == b"server-timing"
    assert re.fullmatch(
        rb'asgire-crossings;desc="2", asgire-queued;dur=\d+\.\d{3}, '
        rb"asgire-run;dur=\d+\.\d{3}",
        value,
    )
    assert START["headers"] == APP_HEADERS  # the app's message is not changed


async def test_middleware_logs_a_request_that_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing_app(scope: Any, receive: Any, send: Any) -> None:
        await sync_to_async(double)(1)
        raise RuntimeError("app failed")

    logger = logging.getLogger("test_trace.custom")
    caplog.set_level(logging.INFO, logger=logger.name)
    with pytest.raises(RuntimeError, match="app failed"):
        await Exchange(http("/fail")).run(TraceMiddleware(failing_app, logger=logger))
    (record,) = caplog.records
    assert record.name == logger.name
    assert record.getMessage().startswith("GET /fail: 1 crossing, ")


async def test_middleware_names_websocket_connections(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def socket_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        await sync_to_async(double)(1)
        await send({"type": "websocket.close"})

    caplog.set_level(logging.INFO, logger="asgire.trace")
    exchange = Exchange({"type": "websocket", "path": "/ws", "headers": []})
    await exchange.run(TraceMiddleware(socket_app, server_timing=True))
    assert exchange.sent == [{"type": "websocket.accept"}, {"type": "websocket.close"}]
    (record,) = caplog.records
    assert record.getMessage().startswith("WEBSOCKET /ws: 1 crossing, ")


async def test_middleware_passes_lifespan_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[Any] = []

    async def lifespan_app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send, asgiref.sync._trace_hook))

    caplog.set_level(logging.INFO, logger="asgire.trace")
    exchange = Exchange({"type": "lifespan"})
    await exchange.run(TraceMiddleware(lifespan_app, server_timing=True))
    assert seen == [(exchange.scope, exchange.receive, exchange.send, None)]
    assert caplog.records == []


def test_the_readme_sample_report_is_laid_out_as_reports_are() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    sample = readme.split("### Finding your crossings", 1)[1]
    sample = sample.split("```text\n", 1)[1].split("```", 1)[0]
    heading, *rows = sample.splitlines()[3:6]
    crossings = [crossing(row.split()[3], 0.0, function=row.split()[4]) for row in rows]
    expected = trace.format_report(crossings).splitlines()[3:6]
    # Same columns: each heading where the report puts it, each row's call
    # site and function where the report starts them.
    assert heading == expected[0]
    for row, laid_out in zip(rows, expected[1:], strict=True):
        assert row.index("example.py") == laid_out.index("example.py")
        assert row.index("__main__") == laid_out.index("__main__")
