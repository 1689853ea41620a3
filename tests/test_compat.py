"""Every capability of ``asgiref._compat`` is live on every supported Python.

A CPython release that renames a private attribute or changes how its pool or
selector loop works must turn this red, rather than switch a fast path off
without anyone noticing. Each probe is also shown to refuse what does not fit.
"""

from __future__ import annotations

import ast
import asyncio
import asyncio.constants
import importlib
import os
import re
import sys
import threading
from collections.abc import Callable
from concurrent.futures import thread as cf_thread
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("asgire")  # upstream runs lack asgire's compat module

from asgiref import _compat  # after the skip

pytestmark = pytest.mark.asgire_only

linux = pytest.mark.skipif(sys.platform != "linux", reason="Linux only")
SRC = Path(__file__).parent.parent / "src"


# -- Live on this Python ------------------------------------------------------


def test_the_running_loop_comes_from_asyncio_without_raising() -> None:
    assert _compat.get_running_loop_or_none is asyncio._get_running_loop
    assert _compat.get_running_loop_or_none() is None


def test_the_coroutine_marker_is_known() -> None:
    assert _compat.COROUTINE_MARKER is not None
    name, value = _compat.COROUTINE_MARKER

    def plain() -> None: ...

    setattr(plain, name, value)
    assert _compat.iscoroutinefunction(plain)
    if sys.version_info >= (3, 12):
        assert _compat.iscoroutinefunction is __import__("inspect").iscoroutinefunction


def test_extension_types_are_recognised_as_immutable() -> None:
    assert _compat.IMMUTABLE_TYPE_FLAG == 1 << 8


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's pool")
def test_calls_can_be_queued_on_the_stdlib_pool() -> None:
    assert _compat.POOL_HAND_OFF
    assert _compat.workers_call_run(cf_thread)


def test_loops_keep_their_default_executor_and_ready_queue_where_expected() -> None:
    assert _compat.LOOP_DEFAULT_EXECUTOR
    assert _compat.LOOP_READY_QUEUE
    loop = asyncio.new_event_loop()
    try:
        assert loop._ready is not None  # type: ignore[attr-defined]  # ty: ignore[unresolved-attribute]
        assert loop._default_executor is None  # type: ignore[attr-defined]  # ty: ignore[unresolved-attribute]
        assert loop._executor_shutdown_called is False  # type: ignore[attr-defined]  # ty: ignore[unresolved-attribute]
    finally:
        loop.close()


def test_a_selector_loop_self_pipe_can_be_kept() -> None:
    assert _compat.KEPT_SELF_PIPE


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.run bounds it from 3.12"
)
def test_the_thread_join_timeout_is_asyncios() -> None:
    assert _compat.HAS_THREAD_JOIN_TIMEOUT
    assert isinstance(vars(asyncio.constants)["THREAD_JOIN_TIMEOUT"], (int, float))


def test_event_loop_policies_are_found() -> None:
    assert _compat.LOOP_POLICIES
    expected = (
        asyncio.ProactorEventLoop  # type: ignore[attr-defined]
        if sys.platform == "win32"
        else asyncio.SelectorEventLoop
    )
    assert _compat.default_policy_loop_class() is expected


def test_eager_tasks_from_3_12() -> None:
    assert _compat.EAGER_TASKS is (sys.version_info >= (3, 12))


@linux
def test_eventfd_on_linux() -> None:
    assert _compat.HAS_EVENTFD


def test_exit_runs_before_the_interpreter_joins_threads() -> None:
    assert _compat.THREADING_ATEXIT
    assert _compat.at_threading_exit is vars(threading)["_register_atexit"]


def test_asyncio_tells_futures_by_the_flag_a_waiter_sets() -> None:
    from asgiref._bridge.waiter import Waiter

    assert _compat.FUTURE_BLOCKING_FLAG
    loop = asyncio.new_event_loop()
    try:
        assert asyncio.isfuture(Waiter(loop))
    finally:
        loop.close()


def test_whether_the_gil_is_enabled_comes_from_sys() -> None:
    from asgire import info

    if sys.version_info >= (3, 13):
        assert info.gil_enabled is vars(sys)["_is_gil_enabled"]
    else:
        assert info.gil_enabled() is True


# -- Probes refuse what does not fit ------------------------------------------


def test_the_running_loop_fallback_returns_none_or_the_loop() -> None:
    assert _compat._running_loop_or_none_fallback() is None

    async def inside() -> asyncio.AbstractEventLoop | None:
        return _compat._running_loop_or_none_fallback()

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(inside()) is loop
    finally:
        loop.close()


def _sets(*attributes: tuple[str, object]) -> Callable[[Any], object]:
    def mark(func: Any) -> object:
        for name, value in attributes:
            setattr(func, name, value)
        return func

    return mark


@pytest.mark.parametrize(
    "mark",
    [
        _sets(),
        _sets(("_one", 1), ("_two", 2)),
        _sets(("_not_the_marker", object())),
    ],
    ids=["sets-nothing", "sets-two", "sets-one-nobody-reads"],
)
def test_a_marker_that_cannot_be_set_directly_is_not_used(
    mark: Callable[[Any], object],
) -> None:
    assert _compat.marker_set_by(mark) is None


def test_a_flag_that_does_not_tell_extension_types_apart_is_not_used() -> None:
    assert _compat.immutable_type_flag(1 << 9) == 0  # heap types: the reverse
    assert _compat.immutable_type_flag(1 << 30) == 0  # on neither


class _BarePool:
    def __init__(self, **_: object) -> None:
        pass


class _FullPool:
    def __init__(self, **_: object) -> None:
        for name in _compat._POOL_ATTRIBUTES:
            setattr(self, name, None)
        self._idle_semaphore = threading.Semaphore(0)

    def submit(self) -> None:
        self._adjust_thread_count()  # type: ignore[attr-defined]  # ty: ignore[unresolved-attribute]


class _PoolStartingThreadsElsewhere(_FullPool):
    def submit(self) -> None:
        pass


class _PoolWithOtherSemaphore(_FullPool):
    def __init__(self, **_: object) -> None:
        super().__init__()
        self._idle_semaphore = object()


@pytest.mark.parametrize(
    ("module", "fits"),
    [
        (
            SimpleNamespace(
                ThreadPoolExecutor=_FullPool, _shutdown=0, _global_shutdown_lock=0
            ),
            True,
        ),
        (
            SimpleNamespace(
                ThreadPoolExecutor=_BarePool, _shutdown=0, _global_shutdown_lock=0
            ),
            False,
        ),
        (SimpleNamespace(ThreadPoolExecutor=_FullPool, _shutdown=0), False),
        (
            SimpleNamespace(
                ThreadPoolExecutor=_PoolStartingThreadsElsewhere,
                _shutdown=0,
                _global_shutdown_lock=0,
            ),
            False,
        ),
        (
            SimpleNamespace(
                ThreadPoolExecutor=_PoolWithOtherSemaphore,
                _shutdown=0,
                _global_shutdown_lock=0,
            ),
            False,
        ),
    ],
    ids=[
        "fits",
        "pool-lacks-internals",
        "module-lacks-lock",
        "threads-elsewhere",
        "semaphore-without-value",
    ],
)
def test_the_pool_probe_needs_every_internal(module: Any, fits: bool) -> None:
    assert _compat.pool_has_internals(module) is fits


class _LoopWithoutReadyQueue:
    def __init__(self) -> None:
        self._default_executor = None


def test_a_loop_without_the_attributes_is_refused() -> None:
    assert _compat.sets_attributes(_LoopWithoutReadyQueue, "_default_executor")
    assert not _compat.sets_attributes(
        _LoopWithoutReadyQueue, "_default_executor", _compat.READY_QUEUE_ATTR
    )
    assert not _compat.sets_attributes(object, "_ready")  # a slot wrapper


class _OtherSelfPipe(asyncio.SelectorEventLoop):
    def _make_self_pipe(self) -> None:
        self._pipe = os.pipe()


def test_a_loop_that_makes_its_self_pipe_otherwise_is_refused() -> None:
    assert _compat.self_pipe_is_replaceable(asyncio.SelectorEventLoop)
    assert not _compat.self_pipe_is_replaceable(_OtherSelfPipe)
    assert not _compat.self_pipe_is_replaceable(object)


class _OwnPolicy(_compat.DEFAULT_POLICY_BASE):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop()


def test_a_policy_of_its_own_has_no_known_loop_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_compat, "current_policy", _OwnPolicy)
    assert _compat.default_policy_loop_class() is None
    monkeypatch.setattr(_compat, "current_policy", None)
    assert _compat.default_policy_loop_class() is None


def test_shutting_down_the_default_executor_is_bounded_as_asyncio_run_does() -> None:
    seen: list[tuple[Any, ...]] = []

    class Loop:
        def shutdown_default_executor(self, *args: Any) -> str:
            seen.append(args)
            return "awaitable"

    assert _compat.shutdown_default_executor(Loop()) == "awaitable"  # type: ignore[arg-type]  # ty: ignore[invalid-argument-type]
    if sys.version_info >= (3, 12):
        assert seen == [(asyncio.constants.THREAD_JOIN_TIMEOUT,)]
    else:
        assert seen == [()]


# -- One home for versions and private names ----------------------------------

# The private names each capability of _compat relies on.
PRIVATE_NAMES_BY_CAPABILITY = {
    "get_running_loop_or_none": "_get_running_loop",
    "COROUTINE_MARKER": "_is_coroutine _is_coroutine_marker",
    "IMMUTABLE_TYPE_FLAG": "Py_TPFLAGS_IMMUTABLETYPE",
    "POOL_HAND_OFF": "_work_queue _shutdown_lock _shutdown _broken _threads _value"
    " _idle_semaphore _adjust_thread_count _max_workers _global_shutdown_lock"
    " _WorkItem _worker",
    "LOOP_DEFAULT_EXECUTOR": "_default_executor _executor_shutdown_called",
    "LOOP_READY_QUEUE": "_ready",
    "KEPT_SELF_PIPE": "_make_self_pipe _close_self_pipe _add_reader _read_from_self"
    " _ssock _csock _internal_fds",
    "HAS_THREAD_JOIN_TIMEOUT": "THREAD_JOIN_TIMEOUT",
    "LOOP_POLICIES": "_get_event_loop_policy _BaseDefaultEventLoopPolicy _loop_factory",
    "THREADING_ATEXIT": "_register_atexit",
    "FUTURE_BLOCKING_FLAG": "_asyncio_future_blocking",
    # asgire's tools run over upstream's asgiref too: theirs is in asgire.
    "asgire.info.gil_enabled": "_is_gil_enabled",
}
PRIVATE_NAMES = {
    name: capability
    for capability, names in PRIVATE_NAMES_BY_CAPABILITY.items()
    for name in names.split()
}


_MARK = re.compile(r"#\s*cpython-private:\s*([^#\n]*)")


def _names_marked_on(line: str) -> set[str]:
    match = _MARK.search(line)
    if match is None:
        return set()
    text = re.split(r" - | \(", match.group(1))[0]
    # Not the docstring's NAME[, NAME...].
    return {name.strip() for name in text.split(",") if name.strip().isidentifier()}


def _marked_names() -> dict[str, set[Path]]:
    found: dict[str, set[Path]] = {}
    for path in SRC.rglob("*.py"):
        for line in path.read_text().splitlines():
            for name in _names_marked_on(line):
                found.setdefault(name, set()).add(path)
    return found


def test_every_marked_private_name_is_registered_and_every_registered_one_used() -> (
    None
):
    marked = _marked_names()
    assert set(marked) == set(PRIVATE_NAMES)
    for capability in PRIVATE_NAMES_BY_CAPABILITY:
        module, _, name = capability.rpartition(".")
        owner = importlib.import_module(module) if module else _compat
        assert hasattr(owner, name), capability


# Underscored names that are not CPython's: ASGI's markers on applications.
NOT_CPYTHON = {"_asgi_single_callable", "_asgi_double_callable"}
_ATTRIBUTE_CALLS = {"getattr", "hasattr", "setattr", "delattr"}


def _private_name(node: ast.AST) -> str | None:
    """The underscored (not dunder) name ``node`` reads or writes on some
    object other than ``self``/``cls``, directly or through ``getattr()``
    and the like with a literal name."""
    name = None
    if isinstance(node, ast.Attribute):
        if not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}):
            name = node.attr
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _ATTRIBUTE_CALLS
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        name = node.args[1].value
    if name is None or not name.startswith("_") or name.startswith("__"):
        return None
    return name


def _project_names() -> set[str]:
    """Every name the package's own code defines (heuristic: a private name
    the project also defines counts as the project's)."""
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id in {
                    "self",
                    "cls",
                }:
                    names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.partition(".")[0])
    return names


def unmarked_private_names(source: str, ours: set[str]) -> list[tuple[int, str]]:
    """(line, name) of each access to a private name in ``source`` that is
    neither ``ours`` nor marked: on its own lines, the three before them, or
    from three lines above the def or class it is in."""
    lines = source.splitlines()
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, scope_start: int | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            scope_start = first - 3
        name = _private_name(node)
        if name is not None and name not in ours and name not in NOT_CPYTHON:
            lineno = getattr(node, "lineno", 1)
            end = getattr(node, "end_lineno", None) or lineno
            start = max(1, min(lineno - 3, scope_start or lineno))
            if not any(
                name in _names_marked_on(line) for line in lines[start - 1 : end]
            ):
                found.append((lineno, name))
        for child in ast.iter_child_nodes(node):
            visit(child, scope_start)

    visit(ast.parse(source), None)
    return found


def test_every_private_name_read_in_the_package_is_marked() -> None:
    # A registered name is CPython's wherever it is read, except the one
    # the project has its own of: CurrentThreadExecutor._broken.
    ours = _project_names() - set(PRIVATE_NAMES) | {"_broken"}
    unmarked = {
        f"{path.relative_to(SRC)}:{line}: {name}"
        for path in SRC.rglob("*.py")
        for line, name in unmarked_private_names(path.read_text(), ours)
    }
    assert not unmarked


def test_the_private_name_scan_finds_an_unmarked_read() -> None:
    source = "import sys\n\n\n\nframe = sys._getframe(1)\nhasattr(sys, '_xoptions')\n"
    assert unmarked_private_names(source, set()) == [(5, "_getframe"), (6, "_xoptions")]
    assert unmarked_private_names(source, {"_getframe", "_xoptions"}) == []
    marked = source.replace("(1)", "(1)  # cpython-private: _getframe, _xoptions")
    assert unmarked_private_names(marked, set()) == []
    in_a_function = "# cpython-private: _xoptions\ndef f(self):\n\n\n\n    " + (
        "return self._own, sys._xoptions\n"
    )
    assert unmarked_private_names(in_a_function, set()) == []


def test_only_the_compat_module_branches_on_the_python_version() -> None:
    # The library's own code (asgire's tools may report the version).
    branching = set()
    for path in (SRC / "asgiref").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "version_info":
                branching.add(path.relative_to(SRC).as_posix())
    # typing.py picks typing or typing_extensions by version, as upstream.
    assert branching == {"asgiref/_compat.py", "asgiref/typing.py"}


def test_compat_imports_only_the_standard_library() -> None:
    tree = ast.parse((SRC / "asgiref" / "_compat.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add((node.module or "").partition(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


# -- Fallbacks keep the behaviour ---------------------------------------------


def test_without_a_known_marker_wrappers_are_still_coroutine_functions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asgiref import sync

    monkeypatch.setattr(sync, "_MARKER_NAME", None)

    def plain() -> int:
        return 1

    async def native() -> int:
        return 2

    def marked() -> None: ...

    sync.markcoroutinefunction(marked)
    wrapper = sync.sync_to_async(plain)
    assert sync.iscoroutinefunction(wrapper)
    assert sync.async_to_sync(wrapper)() == 1
    assert sync.async_to_sync(native)() == 2
    with pytest.raises(TypeError, match="only be applied to sync functions"):
        sync.sync_to_async(marked)


class _RenamedSemaphore:
    """``threading.Semaphore`` as it would be if CPython renamed ``_value``
    (enough of it for a pool: non-blocking acquire and release)."""

    def __init__(self, value: int = 1) -> None:
        self._count = value
        self._lock = threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        with self._lock:
            if self._count:
                self._count -= 1
                return True
            return False

    def release(self, n: int = 1) -> None:
        with self._lock:
            self._count += n


def test_a_pool_whose_semaphore_renamed_its_count_still_runs_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asgiref import sync
    from asgiref._bridge import pool as pool_module

    monkeypatch.setattr(threading, "Semaphore", _RenamedSemaphore)
    # As the probe would settle it at import on such a Python.
    hand_off = _compat.pool_has_internals(cf_thread) and _compat.workers_call_run(
        cf_thread
    )
    monkeypatch.setattr(pool_module, "POOL_HAND_OFF", hand_off)
    executor = cf_thread.ThreadPoolExecutor(max_workers=2)
    try:
        call = sync.sync_to_async(lambda: 42, thread_sensitive=False, executor=executor)
        assert asyncio.run(call()) == 42
    finally:
        executor.shutdown(wait=True)
