"""Shared test fixtures.

The suite runs twice in CI: against asgire (``uv run pytest``) and against
upstream asgiref 3.13.0 (``scripts/test-upstream``). Nothing here may import
``asgire`` unconditionally, because the upstream run does not install it.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

import asgiref


def asgiref_provider() -> str:
    """Name the distribution whose files back the imported ``asgiref``."""
    here = Path(asgiref.__file__).resolve()
    for name in ("asgire", "asgiref"):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        root = Path(str(dist.locate_file(""))).resolve()
        for entry in dist.files or ():
            if (
                entry.name == "__init__.py"
                and entry.parent.name == "asgiref"
                and (root / entry).resolve() == here
            ):
                return name
        # Editable installs record a .pth file rather than the sources.
        if name == "asgire" and any(str(f).endswith(".pth") for f in dist.files or ()):
            return name
    return "unknown"


PROVIDER = asgiref_provider()
TESTING_UPSTREAM = PROVIDER == "asgiref"


def pytest_report_header() -> str:
    return f"asgiref {asgiref.__version__} provided by {PROVIDER} ({asgiref.__file__})"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not TESTING_UPSTREAM:
        return
    skip = pytest.mark.skip(reason="asgire-only behaviour; upstream asgiref lacks it")
    for item in items:
        if "asgire_only" in item.keywords:
            item.add_marker(skip)


def _persistent_threads() -> set[threading.Thread]:
    """Threads that outlive a test by design: the shared worker pools."""
    from asgiref.sync import SyncToAsync

    keep: set[threading.Thread] = set()
    executor = SyncToAsync.single_thread_executor
    keep.update(getattr(executor, "_threads", ()))
    for thread in threading.enumerate():
        # asgire parks idle event-loop threads for reuse; each exits after 10 s idle.
        if thread.name.startswith("asgire-"):
            keep.add(thread)
    return keep


class ThreadWatch:
    """The threads started since a test began, less those kept on purpose."""

    def __init__(self) -> None:
        self.before = set(threading.enumerate())

    def started(self) -> set[threading.Thread]:
        """Every thread started since the test began that is still alive."""
        return {t for t in threading.enumerate() if t.is_alive()} - self.before

    def running(self) -> set[threading.Thread]:
        return self.started() - _persistent_threads()

    def assert_none_left(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for each of them to end, or fail naming them."""
        self._wait_for_at_most(0, self.running, timeout)

    def assert_at_most_started(self, count: int, timeout: float = 5.0) -> None:
        """Like ``assert_none_left``, but kept threads count too, and ``count``
        of them may stay."""
        self._wait_for_at_most(count, self.started, timeout)

    @staticmethod
    def _wait_for_at_most(
        count: int, threads: Callable[[], set[threading.Thread]], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            gc.collect()  # executors whose owner was dropped stop their workers
            left = threads()
            if len(left) <= count:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"threads left running: {sorted(t.name for t in left)}")
            time.sleep(0.02)


@pytest.fixture(autouse=True)
def thread_watch() -> Iterator[ThreadWatch]:
    """Fails a test that leaves a thread running once it has finished. A test
    may also check mid-way, with ``thread_watch.assert_none_left()``."""
    watch = ThreadWatch()
    yield watch
    watch.assert_none_left()


def _run_in_new_thread(
    action: Callable[[], Any], *, start: Callable[..., threading.Thread] | None = None
) -> Any:
    """Run ``action`` in a fresh thread; return its result or raise its error."""
    outcome: Future[Any] = Future()

    def target() -> None:
        try:
            outcome.set_result(action())
        except BaseException as exc:
            outcome.set_exception(exc)

    thread = (start or threading.Thread)(target=target)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "the thread did not finish in time"
    return outcome.result(timeout=0)


@pytest.fixture
def in_new_thread() -> Callable[..., Any]:
    """``in_new_thread(action, start=threading.Thread)``: run ``action`` in a
    fresh plain thread (made by ``start``) and hand back its outcome."""
    return _run_in_new_thread


def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Whether ``condition()`` comes to hold within ``timeout`` seconds,
    collecting garbage before each look."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


@pytest.fixture
def eventually() -> Callable[..., bool]:
    """``eventually(condition, timeout=10.0)``: whether ``condition()`` comes
    to hold within the bound, collecting garbage before each look. For what a
    worker thread lets go of just after the caller has the outcome: the
    worker's frame (the call's arguments, its loop) lives until the worker
    returns from the call, a moment after it has handed the outcome over. A
    reference that stays fails all the same, only later."""
    return _eventually


def _python_output(script: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()


@pytest.fixture
def python_output() -> Callable[[str], list[str]]:
    """``python_output(script)``: run ``script`` in a fresh interpreter (for
    what must happen before or at import) and return its output's words."""
    return _python_output


def _run_in_forked_child(body: Callable[[], None], timeout: float = 20.0) -> str:
    """Run ``body`` in a forked child: its traceback, or "" if it passed."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # 3.12+ warns that forking a threaded process may deadlock the child;
        # noticing exactly that is what the fork tests are for.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            body()
            code = 0
        except BaseException:
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    try:
        while not (finished := os.waitpid(pid, os.WNOHANG))[0]:
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                return f"the child hung for {timeout}s"
            time.sleep(0.01)
        report = b""
        while chunk := os.read(read_end, 65536):
            report += chunk
    finally:
        os.close(read_end)
    code = os.waitstatus_to_exitcode(finished[1])
    if code and not report:
        return f"the child exited with {code}"
    return report.decode()


@pytest.fixture
def in_forked_child() -> Callable[..., str]:
    """``in_forked_child(body)`` runs ``body`` in a forked child process and
    returns its traceback, or "" if it passed (Linux only)."""
    if sys.platform != "linux":
        # Windows has no fork(); on macOS a child of a threaded process may
        # crash in system libraries, and kqueue descriptors do not survive it.
        pytest.skip("fork() of a threaded process is dependable on Linux only")
    return _run_in_forked_child
