"""Adapt legacy ASGI 2 ("double-callable") applications to the ASGI 3 style.

An ASGI 2 application is called with the scope and returns an instance that is
then awaited with ``receive`` and ``send``; an ASGI 3 application takes all
three at once. Servers and test harnesses call `guarantee_single_callable`
once and then only deal with the ASGI 3 form.
"""

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from .sync import iscoroutinefunction

# What ``import *`` binds: upstream's names, as its module (which mostly has no
# ``__all__``) binds them, imported modules and typing helpers included.
__all__ = [
    "double_to_single_callable",
    "guarantee_single_callable",
    "inspect",
    "is_double_callable",
    "iscoroutinefunction",
]

# Scopes, receive and send are left loose on purpose: applications are free to
# annotate them more (or less) precisely than asgiref.typing does.
DoubleCallable = Callable[[Any], Callable[[Any, Any], Awaitable[Any]]]


class SingleCallable(Protocol):
    """An ASGI 3 application; servers may pass its arguments by keyword."""

    def __call__(
        self, scope: Any, receive: Any, send: Any
    ) -> Coroutine[Any, Any, Any]: ...


def is_double_callable(application: object) -> bool:
    """Whether ``application`` is a legacy ASGI 2 (double-callable) application.

    An explicit ``_asgi_single_callable`` or ``_asgi_double_callable`` attribute
    decides. Otherwise a class is double-callable, an instance whose
    ``__call__`` is a coroutine function is single-callable, and anything else
    is single-callable exactly when it is itself a coroutine function.
    """
    if getattr(application, "_asgi_single_callable", False):
        return False
    if getattr(application, "_asgi_double_callable", False):
        return True
    if inspect.isclass(application):
        # Instantiating the class with the scope is the first of the two calls.
        return True
    # Not callable(): an instance attribute named __call__ counts here too.
    call = getattr(application, "__call__", None)  # noqa: B004
    if call is not None and iscoroutinefunction(call):
        return False
    return not iscoroutinefunction(application)


def double_to_single_callable(application: DoubleCallable) -> SingleCallable:
    """Wrap a double-callable application as a single-callable one."""

    async def new_application(scope: Any, receive: Any, send: Any) -> Any:
        instance = application(scope)
        return await instance(receive, send)

    return new_application


def guarantee_single_callable(application: Any) -> SingleCallable:
    """Return ``application`` in single-callable (ASGI 3) form, wrapping it if needed."""
    if is_double_callable(application):
        return double_to_single_callable(application)
    return application
