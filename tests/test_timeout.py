"""Behaviour of the deprecated ``asgiref.timeout.timeout`` context manager."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import warnings

import pytest

from asgiref.timeout import timeout

DEPRECATED = (
    r"asgiref\.timeout\.timeout is deprecated\. Use asyncio\.timeout\(\) instead\."
)


def make(delay: float | None) -> timeout:
    with pytest.deprecated_call(match=DEPRECATED):
        return timeout(delay)


async def forever() -> None:
    await asyncio.Event().wait()


async def wait_forever_within(cm: timeout, *, use_async_with: bool = True) -> None:
    if use_async_with:
        async with cm:
            await forever()
    else:
        with cm:
            await forever()


async def test_construction_is_deprecated() -> None:
    with pytest.warns(DeprecationWarning, match=DEPRECATED) as record:
        timeout(1)
    assert len(record) == 1
    # Reported where the caller constructs it.
    assert record[0].filename == __file__


async def test_loop_argument_is_deprecated_too() -> None:
    loop = asyncio.get_running_loop()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cm = timeout(1, loop=loop)
    messages = [str(warning.message) for warning in record]
    assert [warning.category for warning in record] == [DeprecationWarning] * 2
    assert messages[0].startswith("asgiref.timeout.timeout is deprecated")
    assert messages[1] == "The loop argument to timeout() is deprecated."
    async with cm:
        await asyncio.sleep(0)
    assert cm.expired is False


def test_loop_argument_works_without_a_running_loop() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.deprecated_call():
            cm = timeout(0.01, loop=loop)

        async def run() -> None:
            async with cm:
                await forever()

        with pytest.raises(TimeoutError):
            loop.run_until_complete(run())
        assert cm.expired is True
    finally:
        loop.close()


def test_construction_needs_a_running_loop() -> None:
    with pytest.deprecated_call(match=DEPRECATED), pytest.raises(RuntimeError):
        timeout(1)


async def test_block_that_finishes_in_time() -> None:
    cm = make(10)
    assert cm.remaining is None  # no deadline before entering
    async with cm as entered:
        assert entered is cm
        await asyncio.sleep(0)
        remaining = cm.remaining
        assert remaining is not None
        assert 0 < remaining <= 10
    assert cm.expired is False
    # The deadline is over and done with: nothing cancels the task later.
    await asyncio.sleep(0)


async def test_sync_with_statement_inside_a_task() -> None:
    cm = make(10)
    with cm as entered:
        assert entered is cm
        await asyncio.sleep(0)
    assert cm.expired is False


@pytest.mark.parametrize("use_async_with", [True, False])
async def test_expiry_raises_builtin_timeout_error(use_async_with: bool) -> None:
    cm = make(0.01)
    with pytest.raises(TimeoutError) as info:
        await wait_forever_within(cm, use_async_with=use_async_with)
    assert type(info.value) is TimeoutError
    assert isinstance(info.value.__context__, asyncio.CancelledError)
    assert cm.expired is True
    assert cm.remaining == 0.0
    # The task is usable afterwards.
    await asyncio.sleep(0)


async def test_other_exceptions_pass_through() -> None:
    cm = make(10)
    with pytest.raises(KeyError):
        async with cm:
            raise KeyError("inner")
    assert cm.expired is False


async def test_zero_or_negative_timeout_expires_at_the_first_await() -> None:
    for delay in (0, -1):
        cm = make(delay)
        with pytest.raises(TimeoutError):
            async with cm:
                await asyncio.sleep(0)
        assert cm.expired is True
        assert cm.remaining is None


async def test_zero_timeout_block_without_await_is_not_cancelled_later() -> None:
    cm = make(0)
    async with cm:
        pass
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert cm.expired is False


async def test_none_disables_the_deadline() -> None:
    cm = make(None)
    async with cm:
        await asyncio.sleep(0.01)
    assert cm.expired is False
    assert cm.remaining is None


async def test_none_needs_no_task() -> None:
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[timeout] = loop.create_future()

    def callback() -> None:
        with make(None) as cm:
            outcome.set_result(cm)

    loop.call_soon(callback)
    assert (await outcome).expired is False


async def test_refused_outside_a_task() -> None:
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[BaseException] = loop.create_future()

    def callback() -> None:
        try:
            with make(1):
                pass
        except RuntimeError as exc:
            outcome.set_result(exc)

    loop.call_soon(callback)
    error = await outcome
    assert str(error) == "Timeout context manager should be used inside a task"


async def test_outside_cancellation_is_not_a_timeout() -> None:
    cm = make(10)
    started = asyncio.Event()

    async def guarded() -> None:
        async with cm:
            started.set()
            await forever()

    task = asyncio.ensure_future(guarded())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cm.expired is False


if sys.version_info >= (3, 11):  # Task.cancelling() is new in 3.11

    @pytest.mark.asgire_only
    async def test_expiry_leaves_the_task_not_cancelling() -> None:
        task = asyncio.current_task()
        assert task is not None
        with pytest.raises(TimeoutError):
            await wait_forever_within(make(0.01))
        assert task.cancelling() == 0

    @pytest.mark.asgire_only
    async def test_swallowed_expiry_leaves_the_task_not_cancelling() -> None:
        task = asyncio.current_task()
        assert task is not None
        cm = make(0.01)
        try:
            async with cm:
                with contextlib.suppress(asyncio.CancelledError):
                    await forever()
            assert cm.expired is True
            assert task.cancelling() == 0
        finally:
            while task.cancelling():
                task.uncancel()

    @pytest.mark.asgire_only
    async def test_cancellation_racing_the_deadline_wins() -> None:
        task = asyncio.current_task()
        assert task is not None
        cm = make(0)  # cancels the task at the next loop iteration

        async def cancelled_twice() -> None:
            async with cm:
                task.cancel()  # someone else cancels us too
                await asyncio.sleep(0)

        try:
            with pytest.raises(asyncio.CancelledError):
                await cancelled_twice()
            assert cm.expired is True
            assert task.cancelling() == 1
        finally:
            while task.cancelling():
                task.uncancel()
