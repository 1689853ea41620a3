"""Behaviour of ``asgiref.testing.ApplicationCommunicator``."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
from typing import Any

import pytest

from asgiref.testing import ApplicationCommunicator

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


async def echo(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message.get("stop"):
            return
        await send({"scope": scope, "echo": message})


async def silent(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.Event().wait()


class Boom(Exception):
    pass


async def crash_on_input(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    raise Boom("application crashed")


async def crash_when_cancelled(scope: Any, receive: Any, send: Any) -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        raise Boom("raised while being cancelled") from None


# Lifecycle


def test_construction_needs_no_event_loop() -> None:
    communicator = ApplicationCommunicator(echo, {"type": "test"})
    assert communicator.scope == {"type": "test"}
    assert communicator.application is echo


async def test_application_starts_on_first_use_only() -> None:
    calls: list[Any] = []

    async def application(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope)

    communicator = ApplicationCommunicator(application, {"type": "test"})
    await asyncio.sleep(0)
    assert calls == []
    future = communicator.future
    assert communicator.future is future
    await communicator.wait()
    assert calls == [{"type": "test"}]


async def test_queues_are_created_once() -> None:
    communicator = ApplicationCommunicator(echo, {})
    assert communicator.input_queue is communicator.input_queue
    assert communicator.output_queue is communicator.output_queue
    assert communicator.input_queue is not communicator.output_queue


async def test_messages_round_trip() -> None:
    communicator = ApplicationCommunicator(echo, {"type": "test"})
    await communicator.send_input({"n": 1})
    await communicator.send_input({"n": 2})
    assert await communicator.receive_output() == {
        "scope": {"type": "test"},
        "echo": {"n": 1},
    }
    assert await communicator.receive_output() == {
        "scope": {"type": "test"},
        "echo": {"n": 2},
    }
    await communicator.send_input({"stop": True})
    await communicator.wait()
    assert communicator.future.done()


async def test_double_callable_application_is_accepted() -> None:
    class Legacy:
        def __init__(self, scope: Any) -> None:
            self.scope = scope

        async def __call__(self, receive: Any, send: Any) -> None:
            await send({"legacy": self.scope, "got": await receive()})

    communicator = ApplicationCommunicator(Legacy, {"type": "old"})
    await communicator.send_input({"n": 1})
    assert await communicator.receive_output() == {
        "legacy": {"type": "old"},
        "got": {"n": 1},
    }


async def test_application_runs_in_an_empty_context() -> None:
    seen: list[str] = []

    async def application(scope: Any, receive: Any, send: Any) -> None:
        seen.append(request_id.get("unset"))
        request_id.set("inside")

    token = request_id.set("test")
    try:
        communicator = ApplicationCommunicator(application, {})
        await communicator.wait()
        assert seen == ["unset"]
        # Nor does the application's context leak back out.
        assert request_id.get() == "test"
    finally:
        request_id.reset(token)


# receive_output


async def test_receive_output_timeout_cancels_the_application() -> None:
    cancelled = asyncio.Event()

    async def application(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    communicator = ApplicationCommunicator(application, {})
    with pytest.raises(TimeoutError) as info:
        await communicator.receive_output(timeout=0.01)
    assert type(info.value) is TimeoutError
    assert cancelled.is_set()
    assert communicator.future.cancelled()


async def test_receive_output_timeout_when_the_application_returned() -> None:
    async def application(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    communicator = ApplicationCommunicator(application, {})
    await communicator.send_input({"type": "go"})
    with pytest.raises(TimeoutError):
        await communicator.receive_output(timeout=0.05)
    assert communicator.future.done()
    assert not communicator.future.cancelled()


async def test_receive_output_reraises_a_crash_during_the_wait() -> None:
    communicator = ApplicationCommunicator(crash_on_input, {})
    await communicator.send_input({"type": "go"})
    with pytest.raises(Boom, match="application crashed"):
        await communicator.receive_output(timeout=0.05)


async def test_receive_output_reraises_an_earlier_crash_at_once() -> None:
    communicator = ApplicationCommunicator(crash_on_input, {})
    await communicator.send_input({"type": "go"})
    await asyncio.sleep(0)
    assert communicator.future.done()
    with pytest.raises(Boom):
        await communicator.receive_output(timeout=60)


async def test_receive_output_reports_what_the_cancelled_application_raised() -> None:
    communicator = ApplicationCommunicator(crash_when_cancelled, {})
    with pytest.raises(Boom, match="while being cancelled"):
        await communicator.receive_output(timeout=0.01)


async def test_receive_output_without_a_timeout() -> None:
    communicator = ApplicationCommunicator(echo, {})
    await communicator.send_input({"n": 1})
    assert (await communicator.receive_output(timeout=None))["echo"] == {"n": 1}
    communicator.stop()


async def test_receive_output_timeout_keeps_the_message_order() -> None:
    communicator = ApplicationCommunicator(echo, {})
    await communicator.send_input({"n": 1})
    assert (await communicator.receive_output())["echo"] == {"n": 1}
    with pytest.raises(TimeoutError):
        await communicator.receive_output(timeout=0.01)


if sys.version_info >= (3, 11):  # Task.cancelling() is new in 3.11

    async def test_receive_output_timeout_leaves_the_task_not_cancelling() -> None:
        task = asyncio.current_task()
        assert task is not None
        communicator = ApplicationCommunicator(silent, {})
        try:
            with pytest.raises(TimeoutError):
                await communicator.receive_output(timeout=0.01)
            assert task.cancelling() == 0
        finally:
            while task.cancelling():
                task.uncancel()


async def test_cancelling_the_caller_is_not_a_timeout() -> None:
    communicator = ApplicationCommunicator(silent, {})
    waiting = asyncio.ensure_future(communicator.receive_output(timeout=60))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    communicator.stop()


# receive_nothing


async def test_receive_nothing_when_nothing_is_sent() -> None:
    communicator = ApplicationCommunicator(echo, {})
    assert await communicator.receive_nothing() is True
    assert await communicator.receive_nothing(timeout=0) is True


async def test_receive_nothing_leaves_a_waiting_message_in_place() -> None:
    communicator = ApplicationCommunicator(echo, {})
    await communicator.send_input({"n": 1})
    assert await communicator.receive_nothing(timeout=1) is False
    assert await communicator.receive_nothing(timeout=0) is False
    assert (await communicator.receive_output())["echo"] == {"n": 1}
    assert await communicator.receive_nothing(timeout=0.01) is True


async def test_receive_nothing_reraises_a_crash() -> None:
    communicator = ApplicationCommunicator(crash_on_input, {})
    await communicator.send_input({})
    await asyncio.sleep(0)
    with pytest.raises(Boom):
        await communicator.receive_nothing()


# send_input


async def test_send_input_reraises_a_crash() -> None:
    communicator = ApplicationCommunicator(crash_on_input, {})
    await communicator.send_input({})
    await asyncio.sleep(0)
    with pytest.raises(Boom):
        await communicator.send_input({})


# wait


async def test_wait_returns_when_the_application_finishes() -> None:
    communicator = ApplicationCommunicator(echo, {})
    await communicator.send_input({"stop": True})
    assert await communicator.wait() is None


async def test_wait_reraises_the_application_exception() -> None:
    communicator = ApplicationCommunicator(crash_on_input, {})
    await communicator.send_input({})
    with pytest.raises(Boom):
        await communicator.wait()


async def test_wait_timeout_cancels_the_application_quietly() -> None:
    communicator = ApplicationCommunicator(silent, {})
    assert await communicator.wait(timeout=0.01) is None
    assert communicator.future.cancelled()


async def test_wait_timeout_reports_what_the_cancelled_application_raised() -> None:
    communicator = ApplicationCommunicator(crash_when_cancelled, {})
    with pytest.raises(Boom, match="while being cancelled"):
        await communicator.wait(timeout=0.01)


async def test_wait_after_stop() -> None:
    communicator = ApplicationCommunicator(silent, {})
    await asyncio.sleep(0)
    communicator.future  # noqa: B018 - starts the application
    communicator.stop()
    assert await communicator.wait() is None
    assert communicator.future.cancelled()


async def test_wait_cancelled_from_outside_still_stops_the_application() -> None:
    communicator = ApplicationCommunicator(silent, {})
    waiting = asyncio.ensure_future(communicator.wait(timeout=60))
    await asyncio.sleep(0.01)
    waiting.cancel()
    # The application's own cancellation is silenced, so wait() just returns.
    await waiting
    assert communicator.future.cancelled()


async def test_wait_keeps_waiting_while_the_application_shields_itself() -> None:
    release = asyncio.Event()

    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()

    communicator = ApplicationCommunicator(stubborn, {})
    waiting = asyncio.ensure_future(communicator.wait(timeout=0.01))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    release.set()
    assert await waiting is None


# stop and clean-up


async def test_stop_before_start_does_nothing() -> None:
    communicator = ApplicationCommunicator(silent, {})
    communicator.stop()
    assert communicator._future is None


async def test_stop_cancels_a_running_application() -> None:
    communicator = ApplicationCommunicator(silent, {})
    future = communicator.future
    communicator.stop()
    with pytest.raises(asyncio.CancelledError):
        await future


async def test_stop_reports_an_exception_unless_told_not_to() -> None:
    communicator = ApplicationCommunicator(crash_on_input, {})
    await communicator.send_input({})
    await asyncio.sleep(0)
    communicator.stop(exceptions=False)
    with pytest.raises(Boom):
        communicator.stop()
    with pytest.raises(Boom):
        communicator.stop(exceptions=True)


async def test_stop_after_a_clean_finish() -> None:
    communicator = ApplicationCommunicator(echo, {})
    await communicator.send_input({"stop": True})
    await communicator.wait()
    communicator.stop()


async def test_deleting_the_communicator_cancels_the_application() -> None:
    communicator = ApplicationCommunicator(silent, {})
    future = communicator.future
    await asyncio.sleep(0)
    del communicator
    gc.collect()
    with pytest.raises(asyncio.CancelledError):
        await future


def test_deletion_after_the_loop_closed_is_quiet() -> None:
    loop = asyncio.new_event_loop()
    communicators = [ApplicationCommunicator(silent, {}) for _ in range(2)]

    async def start() -> None:
        for communicator in communicators:
            communicator.future  # noqa: B018 - starts the application
        await asyncio.sleep(0)

    loop.run_until_complete(start())
    loop.close()
    # Cancelling a task now needs the closed loop, so stop() fails...
    with pytest.raises(RuntimeError, match="closed"):
        communicators[0].stop(exceptions=False)
    # ...but clean-up on deletion must not.
    communicators[1].__del__()
