"""Behaviour of ``asgiref.server.StatelessServer``, driven without any sockets."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from asgiref.server import StatelessServer

# A bound on every wait, so a broken server fails the test instead of hanging it.
BOUND = 10


class Boom(Exception):
    pass


async def echo(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        await send({"scope": scope, "echo": message})


class FeedServer(StatelessServer):
    """Feeds ``(scope_id, scope, message)`` triples, then waits for ``expect`` sends."""

    application_checker_interval = 0.01

    def __init__(
        self,
        application: Any,
        feed: list[tuple[str, Any, Any]],
        expect: int = 0,
        max_applications: int = 1000,
    ) -> None:
        super().__init__(application, max_applications=max_applications)
        self.feed = feed
        self.expect = expect
        self.sent: list[tuple[Any, Any]] = []
        self.enough_sent = asyncio.Event()
        self.exceptions: list[tuple[BaseException, dict[str, Any]]] = []

    async def handle(self) -> None:
        for scope_id, scope, message in self.feed:
            self.get_or_create_application_instance(scope_id, scope).put_nowait(message)
        if self.expect:
            await self.enough_sent.wait()

    async def application_send(self, scope: Any, message: Any) -> None:
        self.sent.append((scope, message))
        if len(self.sent) >= self.expect:
            self.enough_sent.set()


class RecordingServer(FeedServer):
    async def application_exception(
        self, exception: BaseException, application_details: dict[str, Any]
    ) -> None:
        self.exceptions.append((exception, application_details))


async def until(condition: Callable[[], object]) -> None:
    """Poll for state the server changes without signalling it, for BOUND seconds."""

    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - nothing to wait on but the state
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), BOUND)


def cancel_all(server: StatelessServer) -> None:
    for details in server.application_instances.values():
        details["future"].cancel()


# Defaults and abstract methods


def test_defaults() -> None:
    server = StatelessServer(echo)
    assert server.application is echo
    assert server.max_applications == 1000
    assert server.application_instances == {}
    assert StatelessServer.application_checker_interval == 0.1


async def test_handle_must_be_implemented() -> None:
    with pytest.raises(NotImplementedError, match=r"^You must implement handle\(\)$"):
        await StatelessServer(echo).handle()


async def test_application_send_must_be_implemented() -> None:
    with pytest.raises(
        NotImplementedError, match=r"^You must implement application_send\(\)$"
    ):
        await StatelessServer(echo).application_send({}, {})


async def test_arun_without_handle_raises() -> None:
    with pytest.raises(NotImplementedError):
        await asyncio.wait_for(StatelessServer(echo).arun(), BOUND)


# Routing messages to instances


async def test_messages_reach_the_instance_for_their_scope_id() -> None:
    server = FeedServer(
        echo,
        [
            ("alice", {"user": "alice"}, "hi"),
            ("bob", {"user": "bob"}, "hello"),
            ("alice", {"user": "ignored"}, "again"),
        ],
        expect=3,
    )
    try:
        await asyncio.wait_for(server.arun(), BOUND)
        assert sorted(server.sent, key=repr) == sorted(
            [
                ({"user": "alice"}, {"scope": {"user": "alice"}, "echo": "hi"}),
                ({"user": "bob"}, {"scope": {"user": "bob"}, "echo": "hello"}),
                # An existing instance keeps the scope it was created with.
                ({"user": "alice"}, {"scope": {"user": "alice"}, "echo": "again"}),
            ],
            key=repr,
        )
        assert set(server.application_instances) == {"alice", "bob"}
    finally:
        cancel_all(server)


async def test_instance_details() -> None:
    server = FeedServer(echo, [])
    queue = server.get_or_create_application_instance("a", {"type": "test"})
    try:
        details = server.application_instances["a"]
        assert details["input_queue"] is queue
        assert details["scope"] == {"type": "test"}
        assert isinstance(details["future"], asyncio.Future)
        assert isinstance(details["last_used"], float)
        # Asking again returns the same queue and marks the instance as used.
        details["last_used"] = 0.0
        assert server.get_or_create_application_instance("a", {"other": 1}) is queue
        assert details["last_used"] > 0.0
        assert len(server.application_instances) == 1
    finally:
        cancel_all(server)


async def test_double_callable_application() -> None:
    class Legacy:
        def __init__(self, scope: Any) -> None:
            self.scope = scope

        async def __call__(self, receive: Any, send: Any) -> None:
            await send({"legacy": self.scope, "got": await receive()})

    server = FeedServer(Legacy, [("x", {"id": "x"}, "ping")], expect=1)
    await asyncio.wait_for(server.arun(), BOUND)
    assert server.sent == [({"id": "x"}, {"legacy": {"id": "x"}, "got": "ping"})]


# Eviction


async def test_least_recently_used_instance_is_evicted() -> None:
    server = FeedServer(echo, [], max_applications=2)
    try:
        for scope_id in ("a", "b", "c"):
            server.get_or_create_application_instance(scope_id, {"id": scope_id})
        # Eviction only starts once there are more than max_applications.
        assert list(server.application_instances) == ["a", "b", "c"]
        for when, scope_id in enumerate(("b", "a", "c")):
            server.application_instances[scope_id]["last_used"] = float(when)
        b_future = server.application_instances["b"]["future"]
        server.get_or_create_application_instance("d", {"id": "d"})
        assert set(server.application_instances) == {"a", "c", "d"}
        await asyncio.sleep(0)
        assert b_future.cancelled()
    finally:
        cancel_all(server)


async def test_eviction_tie_goes_to_the_earliest_created() -> None:
    server = FeedServer(echo, [], max_applications=1)
    try:
        for scope_id in ("a", "b"):
            server.get_or_create_application_instance(scope_id, {})
        for details in server.application_instances.values():
            details["last_used"] = 1.0
        server.delete_oldest_application_instance()
        assert list(server.application_instances) == ["b"]
    finally:
        cancel_all(server)


async def test_delete_application_instance() -> None:
    server = FeedServer(echo, [])
    server.get_or_create_application_instance("a", {})
    future = server.application_instances["a"]["future"]
    server.delete_application_instance("a")
    assert server.application_instances == {}
    with pytest.raises(asyncio.CancelledError):
        await future
    with pytest.raises(KeyError):
        server.delete_application_instance("a")


async def test_delete_finished_instance_leaves_its_result() -> None:
    async def quick(scope: Any, receive: Any, send: Any) -> None:
        pass

    server = FeedServer(quick, [])
    server.get_or_create_application_instance("a", {})
    future = server.application_instances["a"]["future"]
    await future
    server.delete_application_instance("a")
    assert not future.cancelled()


# The application checker


async def test_checker_drops_finished_instances() -> None:
    async def one_shot(scope: Any, receive: Any, send: Any) -> None:
        await send(await receive())

    server = FeedServer(one_shot, [("a", {}, "x")], expect=1)
    server.get_or_create_application_instance("running", {})
    try:
        await asyncio.wait_for(server.arun(), BOUND)
        checker = asyncio.ensure_future(server.application_checker())
        try:
            await until(lambda: "a" not in server.application_instances)
        finally:
            checker.cancel()
        assert list(server.application_instances) == ["running"]
    finally:
        cancel_all(server)


async def test_checker_reports_exceptions() -> None:
    async def crashing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise Boom(f"bad {scope['id']}")

    server = RecordingServer(crashing, [("a", {"id": "a"}, "x")])
    await asyncio.wait_for(server.arun(), BOUND)
    checker = asyncio.ensure_future(server.application_checker())
    try:
        await until(lambda: server.exceptions)
    finally:
        checker.cancel()
    [(exception, details)] = server.exceptions
    assert isinstance(exception, Boom)
    assert str(exception) == "bad a"
    assert details["scope"] == {"id": "a"}
    assert details["future"].exception() is exception
    assert server.application_instances == {}


async def test_default_exception_report_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        raise Boom("it broke")
    except Boom as exc:
        error = exc
    with caplog.at_level(logging.ERROR):
        await StatelessServer(echo).application_exception(error, {})
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert message.startswith("Exception inside application: it broke\n")
    assert "test_default_exception_report_is_logged" in message  # the traceback
    assert message.endswith("  it broke")


async def test_exception_report_reaches_the_root_logger_directly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # logging.config.dictConfig() disables every logger that already exists
    # unless told otherwise; the report must not vanish with asgiref's.
    named = logging.getLogger("asgiref.server")
    named.disabled = True
    try:
        with caplog.at_level(logging.ERROR):
            await StatelessServer(echo).application_exception(Boom("lost?"), {})
    finally:
        named.disabled = False
    [record] = caplog.records
    assert record.name == "root"
    assert record.getMessage().startswith("Exception inside application: lost?\n")


async def test_exception_handler_may_remove_the_instance_itself() -> None:
    class Removing(RecordingServer):
        async def application_exception(
            self, exception: BaseException, application_details: dict[str, Any]
        ) -> None:
            await super().application_exception(exception, application_details)
            for scope_id, details in list(self.application_instances.items()):
                if details is application_details:
                    self.delete_application_instance(scope_id)

    async def crashing(scope: Any, receive: Any, send: Any) -> None:
        raise Boom

    server = Removing(crashing, [("a", {}, "x")])
    await asyncio.wait_for(server.arun(), BOUND)
    checker = asyncio.ensure_future(server.application_checker())
    try:
        await until(lambda: server.exceptions)
        await asyncio.sleep(0.03)
        assert not checker.done()
    finally:
        checker.cancel()
    assert server.application_instances == {}


@pytest.mark.asgire_only
async def test_checker_survives_a_cancelled_instance() -> None:
    server = RecordingServer(echo, [("a", {}, "x")])
    await asyncio.wait_for(server.arun(), BOUND)
    server.application_instances["a"]["future"].cancel()
    checker = asyncio.ensure_future(server.application_checker())
    try:
        await until(lambda: not server.application_instances)
        assert not checker.done()
    finally:
        checker.cancel()
    assert server.exceptions == []


async def test_arun_runs_the_checker_alongside_handle() -> None:
    class Waiting(RecordingServer):
        async def handle(self) -> None:
            await super().handle()
            await until(lambda: self.exceptions)

    async def crashing(scope: Any, receive: Any, send: Any) -> None:
        raise Boom

    server = Waiting(crashing, [("a", {}, "x")])
    await asyncio.wait_for(server.arun(), BOUND)
    assert isinstance(server.exceptions[0][0], Boom)


# arun and run


async def test_arun_propagates_a_handle_exception() -> None:
    class Failing(FeedServer):
        async def handle(self) -> None:
            raise Boom("handler failed")

    with pytest.raises(Boom, match="handler failed"):
        await asyncio.wait_for(Failing(echo, []).arun(), BOUND)


async def test_arun_propagates_a_checker_exception() -> None:
    stop_handling = asyncio.Event()

    class Failing(FeedServer):
        async def handle(self) -> None:
            await stop_handling.wait()

        async def application_checker(self) -> None:
            raise Boom("checker failed")

    try:
        with pytest.raises(Boom, match="checker failed"):
            await asyncio.wait_for(Failing(echo, []).arun(), BOUND)
    finally:
        stop_handling.set()


@pytest.mark.asgire_only
async def test_arun_leaves_no_task_behind() -> None:
    stopped: list[str] = []

    class Tracking(FeedServer):
        async def handle(self) -> None:
            try:
                await asyncio.Event().wait()
            finally:
                stopped.append("handle")

        async def application_checker(self) -> None:
            raise Boom

    before = asyncio.all_tasks()
    with pytest.raises(Boom):
        await asyncio.wait_for(Tracking(echo, []).arun(), BOUND)
    # The handler was cancelled and reaped, not left running.
    assert stopped == ["handle"]
    assert asyncio.all_tasks() == before

    server = FeedServer(echo, [])
    await asyncio.wait_for(server.arun(), BOUND)
    assert asyncio.all_tasks() == before


async def test_arun_continues_if_the_checker_returns() -> None:
    class NoChecker(FeedServer):
        async def application_checker(self) -> None:
            return None

    server = NoChecker(echo, [("a", {}, "x")], expect=1)
    try:
        await asyncio.wait_for(server.arun(), BOUND)
        assert server.sent == [({}, {"scope": {}, "echo": "x"})]
    finally:
        cancel_all(server)


def run_in_thread(server: StatelessServer) -> list[BaseException]:
    """Run ``server.run()`` in a fresh thread, which has no event loop."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            server.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive()
    return errors


def test_run_uses_its_own_event_loop() -> None:
    server = FeedServer(echo, [("a", {}, "x")], expect=1)
    assert run_in_thread(server) == []
    assert server.sent == [({}, {"scope": {}, "echo": "x"})]


def test_run_swallows_keyboard_interrupt(caplog: pytest.LogCaptureFixture) -> None:
    class Interrupted(FeedServer):
        async def handle(self) -> None:
            raise KeyboardInterrupt

    with caplog.at_level(logging.INFO):
        assert run_in_thread(Interrupted(echo, [])) == []
    assert "Exiting due to Ctrl-C/interrupt" in caplog.messages


def test_run_propagates_other_exceptions() -> None:
    class Failing(FeedServer):
        async def handle(self) -> None:
            raise Boom

    [error] = run_in_thread(Failing(echo, []))
    assert isinstance(error, Boom)
