"""Behaviour of ``asgiref.compatibility``: telling ASGI 2 from ASGI 3 applications."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pytest

from asgiref.compatibility import (
    double_to_single_callable,
    guarantee_single_callable,
    is_double_callable,
)
from asgiref.sync import markcoroutinefunction
from asgiref.testing import ApplicationCommunicator


async def asgi3_function(scope: Any, receive: Any, send: Any) -> None:
    message = await receive()
    await send({"scope": scope, "received": message})


def asgi2_function(scope: Any) -> Any:
    async def instance(receive: Any, send: Any) -> None:
        message = await receive()
        await send({"scope": scope, "received": message})

    return instance


class ASGI2Class:
    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        await send({"scope": self.scope, "received": await receive()})


class ASGI3Instance:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"scope": scope, "received": await receive()})


def hint(application: Any, **hints: bool) -> Any:
    """Set ``_asgi_<name>`` attributes on ``application``."""
    for name, value in hints.items():
        setattr(application, f"_asgi_{name}", value)
    return application


class ASGI2Instance:
    """A callable object whose (sync) __call__ takes the scope and returns an instance."""

    def __call__(self, scope: Any) -> Any:
        return ASGI2Class(scope)


def test_asgi3_function_is_single_callable() -> None:
    assert is_double_callable(asgi3_function) is False


def test_plain_function_is_double_callable() -> None:
    assert is_double_callable(asgi2_function) is True


def test_class_is_double_callable() -> None:
    assert is_double_callable(ASGI2Class) is True
    # Even one whose instances are ASGI 3 applications: the class must be called first.
    assert is_double_callable(ASGI3Instance) is True


def test_instance_is_judged_by_its_call_method() -> None:
    assert is_double_callable(ASGI3Instance()) is False
    assert is_double_callable(ASGI2Instance()) is True


def test_lambda_returning_a_coroutine_counts_as_double_callable() -> None:
    # Only coroutine functions are recognised; anything else is taken for ASGI 2.
    assert is_double_callable(lambda scope, receive, send: asgi3_function) is True


def test_partial_of_a_coroutine_function_is_single_callable() -> None:
    assert is_double_callable(functools.partial(asgi3_function, {})) is False


def test_marked_coroutine_function_is_single_callable() -> None:
    def looks_sync(scope: Any, receive: Any, send: Any) -> Any:
        return asgi3_function(scope, receive, send)

    assert is_double_callable(looks_sync) is True
    assert is_double_callable(markcoroutinefunction(looks_sync)) is False


@pytest.mark.parametrize("target", ["function", "class", "instance"])
def test_single_callable_hint_wins(target: str) -> None:
    application: Any
    if target == "function":

        def application(scope: Any) -> None: ...

    elif target == "class":

        class application:
            pass

    else:
        application = ASGI2Instance()
    hint(application, single_callable=True)
    assert is_double_callable(application) is False
    # It also wins over a double-callable hint.
    hint(application, double_callable=True)
    assert is_double_callable(application) is False


def test_double_callable_hint_wins() -> None:
    async def application(scope: Any) -> None: ...

    assert is_double_callable(application) is False
    hint(application, double_callable=True)
    assert is_double_callable(application) is True


def test_false_hints_are_ignored() -> None:
    async def application(scope: Any, receive: Any, send: Any) -> None: ...

    hint(application, single_callable=False, double_callable=False)
    assert is_double_callable(application) is False


def test_double_to_single_callable_gives_a_single_callable() -> None:
    wrapped = double_to_single_callable(asgi2_function)
    assert inspect.iscoroutinefunction(wrapped)
    assert is_double_callable(wrapped) is False
    assert list(inspect.signature(wrapped).parameters) == ["scope", "receive", "send"]


async def test_double_to_single_callable_calls_scope_then_receive_and_send() -> None:
    calls: list[tuple[str, Any]] = []

    def application(scope: Any) -> Any:
        calls.append(("scope", scope))

        async def instance(receive: Any, send: Any) -> str:
            calls.append(("instance", (receive, send)))
            return "result"

        return instance

    async def receive() -> Any: ...

    async def send(message: Any) -> None: ...

    wrapped = double_to_single_callable(application)
    assert calls == []
    assert await wrapped({"type": "test"}, receive, send) == "result"
    assert calls == [("scope", {"type": "test"}), ("instance", (receive, send))]


async def test_double_to_single_callable_keeps_no_state_between_calls() -> None:
    wrapped = double_to_single_callable(ASGI2Class)
    for value in ("first", "second"):
        communicator = ApplicationCommunicator(wrapped, {"value": value})
        await communicator.send_input({"n": 1})
        assert await communicator.receive_output() == {
            "scope": {"value": value},
            "received": {"n": 1},
        }


@pytest.mark.parametrize(
    "application", [asgi3_function, ASGI3Instance(), functools.partial(asgi3_function)]
)
def test_guarantee_single_callable_returns_single_callables_unchanged(
    application: Any,
) -> None:
    assert guarantee_single_callable(application) is application


@pytest.mark.parametrize("application", [asgi2_function, ASGI2Class, ASGI2Instance()])
async def test_guarantee_single_callable_wraps_double_callables(
    application: Any,
) -> None:
    single = guarantee_single_callable(application)
    assert single is not application
    assert is_double_callable(single) is False
    communicator = ApplicationCommunicator(single, {"type": "test"})
    await communicator.send_input({"type": "hello"})
    assert await communicator.receive_output() == {
        "scope": {"type": "test"},
        "received": {"type": "hello"},
    }
    await communicator.wait()
