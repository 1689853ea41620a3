"""StatelessServer with misbehaving applications: the rest keep being served,
the crashed ones are reaped and reported, the idle ones evicted."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from asgiref.server import StatelessServer
from asgiref.sync import sync_to_async

pytestmark = pytest.mark.stress

ROUNDS = 20
PER_BEHAVIOUR = 10
WAIT = 20.0


class AppCrash(Exception):
    """Raised on purpose by an application instance."""


class Behaviours:
    """One ASGI application whose instances misbehave as their scope says."""

    def __init__(self) -> None:
        self.sync_gate = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        behaviour: Callable[..., Awaitable[None]] = getattr(
            self, scope["behaviour"].replace(" ", "_")
        )
        await behaviour(scope, receive, send)

    async def echo(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            await send({"echo": message["n"]})

    async def crash_at_once(
        self, scope: dict[str, Any], receive: Any, send: Any
    ) -> None:
        raise AppCrash(scope["id"])

    async def crash_after_one(
        self, scope: dict[str, Any], receive: Any, send: Any
    ) -> None:
        await receive()
        raise AppCrash(scope["id"])

    async def crash_in_sync_code(
        self, scope: dict[str, Any], receive: Any, send: Any
    ) -> None:
        def fail() -> None:
            raise AppCrash(scope["id"])

        await receive()
        await sync_to_async(fail)()

    async def hang(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await asyncio.Event().wait()

    async def hang_in_sync_code(
        self, scope: dict[str, Any], receive: Any, send: Any
    ) -> None:
        await receive()
        await sync_to_async(self.sync_gate.wait, thread_sensitive=False)(WAIT)

    async def never_read(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.Event().wait()


CRASHING = ["crash at once", "crash after one", "crash in sync code"]
IDLE = ["hang", "hang in sync code", "never read"]


class RecordingServer(StatelessServer):
    application_checker_interval = 0.005

    def __init__(
        self,
        application: Any,
        script: Callable[[RecordingServer], Awaitable[None]],
        max_applications: int = 1000,
    ) -> None:
        super().__init__(application, max_applications=max_applications)
        self.script = script
        self.sent: defaultdict[str, list[Any]] = defaultdict(list)
        self.reported: list[tuple[str, BaseException]] = []
        self.futures: dict[str, asyncio.Future[Any]] = {}

    async def handle(self) -> None:
        await self.script(self)

    async def application_send(self, scope: dict[str, Any], message: Any) -> None:
        self.sent[scope["id"]].append(message)

    async def application_exception(
        self, exception: BaseException, application_details: dict[str, Any]
    ) -> None:
        self.reported.append((application_details["scope"]["id"], exception))

    def deliver(self, scope_id: str, behaviour: str, number: int) -> None:
        scope = {"type": "stress", "id": scope_id, "behaviour": behaviour}
        queue = self.get_or_create_application_instance(scope_id, scope)
        self.futures.setdefault(
            scope_id, self.application_instances[scope_id]["future"]
        )
        queue.put_nowait({"n": number})


async def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.005)


def ids(behaviour: str, count: int = PER_BEHAVIOUR) -> list[str]:
    return [f"{behaviour} {index}" for index in range(count)]


@pytest.mark.timeout(60)
def test_misbehaving_instances_do_not_disturb_the_rest(figures: Any) -> None:
    app = Behaviours()
    echoes = ids("echo", 2 * PER_BEHAVIOUR)
    crashers = [scope_id for behaviour in CRASHING for scope_id in ids(behaviour)]
    idle = [scope_id for behaviour in IDLE for scope_id in ids(behaviour)]

    async def script(server: RecordingServer) -> None:
        # Every instance gets a first message; only the echoes get more, so
        # the idle ones become the least recently used.
        for scope_id in crashers + idle + echoes:
            server.deliver(scope_id, scope_id.rsplit(" ", 1)[0], 0)
        for number in range(1, ROUNDS):
            await asyncio.sleep(0.002)
            for scope_id in echoes:
                server.deliver(scope_id, "echo", number)

        expected = [{"echo": n} for n in range(ROUNDS)]
        await eventually(
            lambda: all(server.sent[s] == expected for s in echoes), "echoes answered"
        )
        await eventually(
            lambda: len(server.reported) == len(crashers), "crashes reported"
        )
        await eventually(
            lambda: not set(crashers) & set(server.application_instances),
            "crashed instances reaped",
        )
        assert sorted(s for s, _ in server.reported) == sorted(crashers)
        for scope_id, exception in server.reported:
            assert isinstance(exception, AppCrash)
            assert exception.args == (scope_id,)
        assert sorted(server.application_instances) == sorted(echoes + idle)

        # Squeeze: fresh instances evict the least recently used, which are
        # the idle ones, never an active echo.
        server.max_applications = len(echoes) + len(idle) // 2
        late = ids("late echo", len(idle) // 2)
        for scope_id in late:
            server.deliver(scope_id, "echo", 0)
        evicted = set(idle) - set(server.application_instances)
        assert len(evicted) >= len(idle) // 2
        assert set(echoes + late) <= set(server.application_instances)
        assert len(server.application_instances) <= server.max_applications + 1
        app.sync_gate.set()  # the evicted sync hangers' threads may finish
        await eventually(
            lambda: all(server.futures[s].done() for s in evicted),
            "evicted instances stopped",
        )
        for scope_id in late:
            server.deliver(scope_id, "echo", 1)
        await eventually(
            lambda: all(server.sent[s] == expected[:2] for s in late),
            "late echoes answered",
        )
        figures.record(
            "server: misbehaving apps",
            instances=len(server.futures),
            crashed_and_reported=len(server.reported),
            evicted=len(evicted),
            echo_messages=sum(len(server.sent[s]) for s in echoes + late),
        )

    server = RecordingServer(app, script)

    async def main() -> None:
        await asyncio.wait_for(server.arun(), WAIT * 2)

    try:
        asyncio.run(main())
    finally:
        app.sync_gate.set()


@pytest.mark.timeout(30)
def test_crash_is_logged_by_default(caplog: pytest.LogCaptureFixture) -> None:
    class LoggingServer(StatelessServer):
        application_checker_interval = 0.005

        async def handle(self) -> None:
            queue = self.get_or_create_application_instance("only", {"type": "stress"})
            queue.put_nowait({})
            await eventually(lambda: not self.application_instances, "instance reaped")

        async def application_send(self, scope: Any, message: Any) -> None:
            pass

    async def crashes(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise AppCrash("logged crash")

    with caplog.at_level(logging.ERROR):
        asyncio.run(asyncio.wait_for(LoggingServer(crashes).arun(), WAIT))
    (record,) = [
        r for r in caplog.records if "Exception inside application" in r.message
    ]
    assert "logged crash" in record.message
    assert "crashes" in record.message  # the traceback names the application


@pytest.mark.asgire_only
@pytest.mark.timeout(30)
def test_instance_ending_cancelled_does_not_stop_the_checker() -> None:
    # Upstream asks a cancelled future for its exception, which raises
    # CancelledError inside the checker and ends reaping for everyone.
    async def cancels_itself(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if scope["id"] == "cancelled":
            raise asyncio.CancelledError
        raise AppCrash(scope["id"])

    async def script(server: RecordingServer) -> None:
        server.deliver("cancelled", "n/a", 0)
        await eventually(lambda: not server.application_instances, "cancelled reaped")
        server.deliver("crash", "n/a", 0)
        await eventually(lambda: len(server.reported) == 1, "later crash reported")

    server = RecordingServer(cancels_itself, script)
    asyncio.run(asyncio.wait_for(server.arun(), WAIT))
    assert [scope_id for scope_id, _ in server.reported] == ["crash"]
