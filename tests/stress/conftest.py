"""Fixtures for the stress suite: resource baselines and the figures report.

Every module here is marked ``stress`` and so is deselected by a plain
``pytest`` run; ``uv run pytest -m stress tests/stress`` runs the suite and
prints the figures it recorded (calls, threads, peak memory) at the end.

``ASGIRE_SWITCH_INTERVAL=1e-6`` in the environment runs it with that
``sys.setswitchinterval()``: the interpreter then switches threads between
almost every bytecode, which brings out races a normal run rarely hits.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

#: True when the ``asgiref`` under test is asgire's; False for upstream's.
ASGIRE = importlib.util.find_spec("asgire") is not None

_FIGURES: dict[str, dict[str, object]] = {}

SWITCH_INTERVAL = os.environ.get("ASGIRE_SWITCH_INTERVAL", "")


@pytest.fixture(autouse=True, scope="session")
def switch_interval() -> Iterator[None]:
    """Run the suite under ``ASGIRE_SWITCH_INTERVAL``, when set."""
    if not SWITCH_INTERVAL:
        yield
        return
    previous = sys.getswitchinterval()
    sys.setswitchinterval(float(SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


class Figures:
    """Collects named measurements for the end-of-run summary."""

    def record(self, test: str, **values: object) -> None:
        _FIGURES.setdefault(test, {}).update(values)


@pytest.fixture(scope="session")
def figures() -> Figures:
    return Figures()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    provider = "asgire" if ASGIRE else "upstream asgiref"
    terminalreporter.section(f"stress figures ({provider})")
    if SWITCH_INTERVAL:
        terminalreporter.write_line(f"sys.setswitchinterval({SWITCH_INTERVAL})")
    for test, values in _FIGURES.items():
        shown = ", ".join(f"{name}={_show(value)}" for name, value in values.items())
        terminalreporter.write_line(f"{test}: {shown}")
    peak_rss = _peak_rss_bytes()
    if peak_rss is not None:
        terminalreporter.write_line(f"process: peak_rss_bytes={_show(peak_rss)}")


def _peak_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak if sys.platform == "darwin" else peak * 1024


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def open_fd_count() -> int | None:
    """Open file descriptors of this process, where the platform tells us."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:
        return None


def open_event_loops() -> list[asyncio.AbstractEventLoop]:
    """Event loops still reachable and not closed."""
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, asyncio.AbstractEventLoop) and not obj.is_closed()
    ]


#: asgire keeps threads that ran an ``async_to_sync`` loop idle for a while,
#: for the next such call; each is counted, not required to be gone.
PARKED_THREAD_PREFIX = "asgire-loop-"


@dataclass
class Snapshot:
    threads: set[threading.Thread]
    parked: int
    fds: int | None
    loops: int

    @classmethod
    def take(cls) -> Snapshot:
        gc.collect()
        alive = {t for t in threading.enumerate() if t.is_alive()}
        parked = {t for t in alive if t.name.startswith(PARKED_THREAD_PREFIX)}
        return cls(
            threads=alive - parked,
            parked=len(parked),
            fds=open_fd_count(),
            loops=len(open_event_loops()),
        )

    def excess_over(self, baseline: Snapshot, parked_limit: int) -> dict[str, object]:
        """What this snapshot holds beyond ``baseline``; empty if nothing."""
        excess: dict[str, object] = {}
        extra = sorted(t.name for t in self.threads - baseline.threads)
        if extra:
            excess["threads"] = extra
        if self.parked > max(baseline.parked, parked_limit):
            excess["parked loop threads"] = self.parked
        if (
            self.fds is not None
            and baseline.fds is not None
            and self.fds > baseline.fds
        ):
            excess["fds"] = self.fds - baseline.fds
        if self.loops > baseline.loops:
            excess["event loops"] = self.loops - baseline.loops
        return excess


class Resources:
    """Threads, file descriptors and event loops, compared with a baseline."""

    def __init__(self) -> None:
        self.baseline = Snapshot.take()

    def rebase(self) -> None:
        """Take the baseline now, e.g. after a warm-up filled lazy pools."""
        self.baseline = Snapshot.take()

    def assert_back_to_baseline(
        self, timeout: float = 10.0, parked_limit: int = 0
    ) -> Snapshot:
        """Wait (bounded) for resources to return to the baseline, or fail.

        Up to ``parked_limit`` idle loop threads (or as many as the baseline
        had) may remain: at most one per sync thread that made such calls.
        """
        deadline = time.monotonic() + timeout
        while True:
            now = Snapshot.take()
            excess = now.excess_over(self.baseline, parked_limit)
            if not excess:
                return now
            if time.monotonic() > deadline:
                pytest.fail(f"resources not released after {timeout}s: {excess}")
            time.sleep(0.05)


@pytest.fixture
def resources() -> Resources:
    return Resources()
