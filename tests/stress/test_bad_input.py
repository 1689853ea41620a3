"""Bad input: the public API answers misuse with TypeError, never a hang."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async

pytestmark = [
    pytest.mark.stress,
    pytest.mark.timeout(30),
    # Upstream warns on construction, then fails on the call; both are fine.
    pytest.mark.filterwarnings("ignore:async_to_sync was passed a non-async"),
]


def sync_function() -> int:
    return 1


async def coroutine_function() -> int:
    return 1


async def async_generator_function() -> AsyncIterator[int]:
    yield 1


def generator_function() -> Iterator[int]:
    yield 1


class AsyncCallable:
    async def __call__(self) -> int:
        return 1


def settle(result: object) -> object:
    """Drive whatever a misuse returned, bounded, so a hang becomes a failure."""
    if inspect.isawaitable(result):

        async def bounded() -> object:
            return await asyncio.wait_for(result, 5)

        return asyncio.run(bounded())
    return result


@pytest.fixture
def coroutine() -> Iterator[Any]:
    made = coroutine_function()
    yield made
    made.close()  # never awaited on purpose


def describe(value: object) -> str:
    return type(value).__name__


NOT_CALLABLE = [42, "sync_function", b"bytes", object(), [sync_function]]


@pytest.mark.parametrize("func", NOT_CALLABLE, ids=describe)
def test_sync_to_async_rejects_non_callables(func: Any) -> None:
    with pytest.raises(TypeError):
        settle(sync_to_async(func)())


@pytest.mark.parametrize(
    "func",
    [coroutine_function, AsyncCallable()],
    ids=["coroutine function", "async __call__"],
)
def test_sync_to_async_rejects_async_callables(func: Callable[[], Any]) -> None:
    with pytest.raises(TypeError):
        sync_to_async(func)


def test_sync_to_async_rejects_coroutine_object(coroutine: Any) -> None:
    with pytest.raises(TypeError):
        sync_to_async(coroutine)


def test_sync_to_async_rejects_executor_when_thread_sensitive() -> None:
    with ThreadPoolExecutor(1) as executor, pytest.raises(TypeError):
        sync_to_async(sync_function, thread_sensitive=True, executor=executor)


@pytest.mark.asgire_only
@pytest.mark.parametrize("executor", ["pool", 42, object()], ids=describe)
def test_sync_to_async_rejects_non_executor(executor: Any) -> None:
    # Upstream fails only on the call, with AttributeError ('submit').
    with pytest.raises(TypeError):
        settle(
            sync_to_async(sync_function, thread_sensitive=False, executor=executor)()
        )


@pytest.mark.asgire_only
@pytest.mark.parametrize(
    "context", ["context", {}, 42, contextvars.copy_context], ids=describe
)
def test_sync_to_async_rejects_non_context(context: Any) -> None:
    # Upstream fails only on the call, with AttributeError ('run').
    with pytest.raises(TypeError):
        settle(sync_to_async(sync_function, context=context)())


@pytest.mark.asgire_only
@pytest.mark.parametrize("executor", ["pool", 42, object()], ids=describe)
def test_thread_sensitive_context_rejects_non_executor(executor: Any) -> None:
    async def use_context() -> int:
        async with ThreadSensitiveContext(executor=executor):
            return await sync_to_async(sync_function)()

    with pytest.raises(TypeError):
        settle(use_context())


@pytest.mark.parametrize("awaitable", NOT_CALLABLE, ids=describe)
def test_async_to_sync_rejects_non_callables(awaitable: Any) -> None:
    with pytest.raises(TypeError):
        async_to_sync(awaitable)()


def test_async_to_sync_rejects_coroutine_object(coroutine: Any) -> None:
    with pytest.raises(TypeError):
        async_to_sync(coroutine)()


@pytest.mark.parametrize(
    "func",
    [sync_function, generator_function, async_generator_function],
    ids=["sync function", "generator function", "async generator function"],
)
def test_async_to_sync_rejects_functions_returning_non_awaitables(
    func: Callable[[], Any],
) -> None:
    with pytest.raises(TypeError):
        async_to_sync(func)()


def test_async_to_sync_inside_a_worker_rejects_bad_input_too() -> None:
    # The same misuse from a thread that would call back into a running loop.
    not_async: Any = sync_function

    def misuse() -> None:
        async_to_sync(not_async)()

    async def caller() -> None:
        await sync_to_async(misuse)()

    with pytest.raises(TypeError):
        settle(caller())
