"""Where asgire's sync core deliberately goes beyond upstream asgiref 3.13.0,
and hooks that both must honour."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from asgiref.sync import AsyncSingleThreadContext, SyncToAsync, async_to_sync


async def loop_and_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    return asyncio.get_running_loop(), threading.current_thread()


@pytest.mark.asgire_only
def test_async_to_sync_reuses_an_idle_loop_thread_but_never_a_loop() -> None:
    wrapper = async_to_sync(loop_and_thread)
    first_loop, first_thread = wrapper()
    second_loop, second_thread = wrapper()
    assert first_thread is second_thread
    assert first_loop is not second_loop
    assert first_loop.is_closed()
    assert second_loop.is_closed()


@pytest.mark.asgire_only
def test_single_thread_context_keeps_one_loop_open_until_it_exits() -> None:
    wrapper = async_to_sync(loop_and_thread)
    with AsyncSingleThreadContext():
        first_loop, _ = wrapper()
        second_loop, _ = wrapper()
        assert first_loop is second_loop
        assert not first_loop.is_closed()
    assert first_loop.is_closed()


@pytest.mark.asgire_only
def test_single_thread_context_cancels_leftover_tasks_and_closes_generators() -> None:
    events: list[str] = []

    async def ticker() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("task cancelled")
            raise

    async def numbers() -> Any:
        try:
            yield 1
            yield 2
        finally:
            events.append("generator closed")

    async def start_background_work() -> None:
        asyncio.get_running_loop().create_task(ticker())
        generator = numbers()
        await generator.__anext__()
        holder.append(generator)

    holder: list[Any] = []
    with AsyncSingleThreadContext():
        async_to_sync(start_background_work)()
        assert events == []  # still running between calls
    assert sorted(events) == ["generator closed", "task cancelled"]


@pytest.mark.asgire_only
def test_loop_client_survives_between_calls_in_a_single_thread_context() -> None:
    """The pattern the context exists for: a client bound to its loop."""

    class LoopBoundClient:
        def __init__(self) -> None:
            self.loop = asyncio.get_running_loop()
            self.queue: asyncio.Queue[int] = asyncio.Queue()

        async def send(self, value: int) -> int:
            assert asyncio.get_running_loop() is self.loop
            await self.queue.put(value)
            return self.queue.qsize()

    clients: list[LoopBoundClient] = []

    async def send(value: int) -> int:
        if not clients:
            clients.append(LoopBoundClient())
        return await clients[0].send(value)

    with AsyncSingleThreadContext():
        assert [async_to_sync(send)(n) for n in range(3)] == [1, 2, 3]


def test_overridden_thread_handler_wraps_each_call() -> None:
    """Channels' DatabaseSyncToAsync overrides thread_handler to clean up
    around every call; the override must run on the worker thread."""
    seen: list[tuple[str, str]] = []

    class CleaningSyncToAsync(SyncToAsync[[int], int]):
        def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(("before", threading.current_thread().name))
            try:
                return super().thread_handler(loop, *args, **kwargs)
            finally:
                seen.append(("after", threading.current_thread().name))

    def double(value: int) -> int:
        seen.append(("call", threading.current_thread().name))
        return value * 2

    async def main() -> int:
        return await CleaningSyncToAsync(double)(21)

    assert asyncio.run(main()) == 42
    assert [step for step, _ in seen] == ["before", "call", "after"]
    assert len({name for _, name in seen}) == 1
    assert seen[0][1] != threading.current_thread().name


def test_overridden_thread_handler_sees_the_caller_exception() -> None:
    captured: list[Any] = []

    class Recording(SyncToAsync[[], None]):
        def thread_handler(self, loop: Any, exc_info: Any, *args: Any) -> Any:
            captured.append(exc_info[1])
            return super().thread_handler(loop, exc_info, *args)

    async def main() -> None:
        try:
            raise KeyError("handled")
        except KeyError:
            await Recording(lambda: None)()

    asyncio.run(main())
    assert isinstance(captured[0], KeyError)
