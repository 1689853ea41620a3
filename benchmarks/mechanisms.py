"""A/B each of asgire's speed mechanisms: on against switched off.

    python benchmarks/mechanisms.py [--only MECHANISM ...] [--rounds N]
                                    [--no-clock] [--no-instructions]

Runs with whatever interpreter starts it, which must import this checkout's
asgiref; both sides are asgire, one of them with the mechanism switched off
by a few lines run before the workloads (the switches of docs/code-map.md).
Each mechanism is measured on the workloads of src/asgire/bench.py it
affects, two ways:

- the clock: processes for "on", "off" and an A/A twin of "on", pinned to
  one CPU (``--pin``), batches taken from them in turn as benchmarks/compare.py
  does; the ratio is on / off of each process's low percentile, the median
  over rounds, and the A/A column how far the twin strayed from its original;
- the instruction count per operation under callgrind, as
  benchmarks/instructions.py counts it; the ratio is on / off.

A mechanism pays on this Python when it saves at least 5% of some workload's
clock (ratio at most 0.95, and further from 1 than that workload's A/A
noise) or 10% of its instructions (ratio at most 0.90). A mechanism the running
Python does not use (eager task start before 3.12) is listed as inactive.

Exit codes: 0 when everything was measured, 1 when a run failed, 2 on a
usage error.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from compare import CompareError, Round, measure_round, noise, pin
from instructions import count_side

from asgire.bench import layout
from asgiref import _compat

#: Savings that keep a mechanism: this much of a workload's clock, or of its
#: instructions, on at least one of the oldest and newest supported Pythons.
CLOCK_SAVING = 0.05
INSTRUCTION_SAVING = 0.10


@dataclass(frozen=True)
class Mechanism:
    """A speed mechanism, the workloads it affects, and how to switch it off."""

    name: str
    #: Python source run before the workloads on the "off" side.
    off: str
    workloads: tuple[str, ...]
    #: Whether the running Python uses the mechanism at all.
    active: Callable[[], bool] = lambda: True
    #: Run on both sides first, to measure the mechanism without another one
    #: that depends on it.
    base: str = ""


# Each mechanism is measured on the workloads it makes cheaper the most.
_FRESH_LOOP = ("a2s_from_thread",)
_BUILD = ("build_s2a", "build_a2s")

MECHANISMS = [
    Mechanism(
        "eventfd-inbox",
        "import asgiref._bridge.loop_inbox as m; m.HAS_EVENTFD = False",
        ("s2a_sensitive", "s2a_gather_100"),
        lambda: _compat.HAS_EVENTFD,
    ),
    Mechanism(
        "pool-hand-off",
        "import asgiref._bridge.pool as m; m.POOL_HAND_OFF = False",
        ("s2a_sensitive", "s2a_non_sensitive"),
        lambda: _compat.POOL_HAND_OFF,
    ),
    Mechanism(
        "idle-count",
        "import threading, asgiref._bridge.pool as m\n"
        "m.IdleCount = lambda workers, idle: threading.Semaphore(idle)",
        ("s2a_non_sensitive",),
        lambda: _compat.POOL_HAND_OFF,
    ),
    Mechanism(
        "current-thread-executor-queueing",
        "from asgiref.current_thread_executor import CurrentThreadExecutor as C\n"
        "def submit(self, fn, /, *args, _submit=C.submit, **kwargs):\n"
        "    return _submit(self, fn, *args, **kwargs)\n"
        "C.submit = submit",
        ("django_sandwich",),
    ),
    Mechanism(
        "turn-skip",
        "import asgiref._bridge.fresh_loop as m; m.LOOP_READY_QUEUE = False",
        _FRESH_LOOP,
        lambda: _compat.LOOP_READY_QUEUE,
    ),
    Mechanism(
        "one-pass-run",
        "import asyncio\n"
        "def run(main, *, debug=None, _run=asyncio.run):\n"
        "    return _run(main, debug=debug)\n"
        "asyncio.run = run",
        _FRESH_LOOP,
        # asyncio.run makes its own loop, never on the kept self-pipe.
        base="import asgiref._bridge.fresh_loop as m; m.KEPT_SELF_PIPE = False",
    ),
    Mechanism(
        "kept-self-pipe",
        "import asgiref._bridge.fresh_loop as m; m.KEPT_SELF_PIPE = False",
        _FRESH_LOOP,
        lambda: _compat.KEPT_SELF_PIPE,
    ),
    Mechanism(
        "loop-thread-cache",
        # A thread per call: none is ever found idle, and each ends at once.
        "from asgiref._bridge import loop_threads as m\n"
        "class Never(list):\n"
        "    def __bool__(self): return False\n"
        "m.loop_thread_cache._idle = Never()\n"
        "m.loop_thread_cache.idle_timeout = 0",
        _FRESH_LOOP,
    ),
    Mechanism(
        "eager-task-start",
        "import asgiref._bridge.outer_loop as m\n"
        "m.create_task = lambda loop, coro: loop.create_task(coro)",
        ("a2s_to_outer_loop",),
        lambda: _compat.EAGER_TASKS,
    ),
    Mechanism(
        "wake-in-callback",
        # The task resumes on the loop's next pass, as a Future would do it.
        "from asgiref._bridge import waiter as m\n"
        "def wake(self):\n"
        "    if self._state is not m._PENDING: return\n"
        "    self._state = m._DONE\n"
        "    try: wakeup = self._wakeup\n"
        "    except AttributeError: return\n"
        "    del self._wakeup\n"
        "    self._loop.call_soon(wakeup, self, context=self._context)\n"
        "m.Waiter.wake = wake",
        ("s2a_sensitive", "s2a_gather_100"),
    ),
    Mechanism(
        "outcome-not-future",
        # The report also goes through a concurrent.futures.Future, the
        # condition variable and all, as upstream's reports do.
        "import concurrent.futures, asgiref.sync as s\n"
        "from asgiref._bridge import fresh_loop, outer_loop, waiter\n"
        "class ThroughFuture(waiter.Outcome):\n"
        "    __slots__ = ('future',)\n"
        "    def __init__(self, on_done):\n"
        "        super().__init__(on_done)\n"
        "        self.future = concurrent.futures.Future()\n"
        "    def _report(self, failure, result):\n"
        "        if failure is None: self.future.set_result(result)\n"
        "        else: self.future.set_exception(Exception())\n"
        "        super()._report(failure, result)\n"
        "s._Outcome = fresh_loop.Outcome = outer_loop.Outcome = ThroughFuture",
        ("a2s_from_thread", "a2s_to_outer_loop"),
    ),
    Mechanism(
        "coroutine-marker-set",
        "import asgiref.sync as m; m._MARKER_NAME = None",
        _BUILD,
        lambda: _compat.COROUTINE_MARKER is not None,
    ),
    Mechanism(
        "cheap-metadata-copy",
        "import functools, asgiref.sync as m\n"
        "m._copy_metadata = lambda w, f: functools.update_wrapper(w, f)",
        _BUILD,
    ),
]

BY_NAME = {m.name: m for m in MECHANISMS}


@dataclass
class Result:
    """One mechanism on one workload: ratios on / off (None: not measured)."""

    mechanism: str
    workload: str
    clock: float | None = None
    clock_range: tuple[float, float] | None = None
    noise: float | None = None
    instructions_on: float | None = None
    instructions_off: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def instructions(self) -> float | None:
        on, off = self.instructions_on, self.instructions_off
        if on is None or off is None or math.isnan(on) or math.isnan(off):
            return None
        return on / off

    def pays(self) -> bool | None:
        """Whether this workload shows the saving that keeps the mechanism
        (None: nothing measured)."""
        if self.clock is None and self.instructions is None:
            return None
        by_clock = (
            self.clock is not None
            and self.clock <= 1 - CLOCK_SAVING
            and 1 - self.clock > (self.noise or 0)
        )
        by_count = (
            self.instructions is not None
            and self.instructions <= 1 - INSTRUCTION_SAVING
        )
        return by_clock or by_count


def measure_clock(
    mechanism: Mechanism, python: Path, rounds: int, seconds: float
) -> dict[str, Result]:
    """On / off ratios of the clock, per workload, with the A/A noise."""
    on = mechanism.base
    off = f"{mechanism.base}\n{mechanism.off}"
    processes = {"on": python, "off": python, "twin": python}
    preludes = {"on": on, "twin": on, "off": off}
    names = list(mechanism.workloads)
    taken: list[Round] = [
        measure_round(processes, names, seconds, number, preludes)
        for number in range(rounds)
    ]
    results = {}
    for name in names:
        ratios = [_on_off(round_, name) for round_ in taken]
        results[name] = Result(
            mechanism.name,
            name,
            clock=statistics.median(ratios),
            clock_range=(min(ratios), max(ratios)),
            noise=noise(taken, name, "on"),
        )
    return results


def _on_off(round_: Round, name: str) -> float:
    on, off = round_.figure("on", name), round_.figure("off", name)
    if on is None or not off:
        raise CompareError(f"{name}: no batches from the on or off process")
    return on / off


def count_instructions(
    mechanisms: list[Mechanism],
    python: Path,
    jobs: int,
    progress: Callable[[str], None],
) -> dict[tuple[str, str], tuple[float, float]]:
    """Instructions per operation, on and off, per (mechanism, workload).
    A prelude's count is taken once however many mechanisms share it."""
    wanted = {
        (prelude, name)
        for m in mechanisms
        for name in m.workloads
        for prelude in (m.base, f"{m.base}\n{m.off}")
    }

    def count(key: tuple[str, str]) -> float:
        try:
            found = count_side(python, key[1], key[0])
        except RuntimeError as failure:
            # One failed run leaves the others' counts standing.
            progress(f"{key[1]} FAILED: {str(failure)[:300]}")
            return math.nan
        progress(key[1])
        return found

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        keys = sorted(wanted)
        counted = dict(zip(keys, pool.map(count, keys), strict=True))
    return {
        (m.name, name): (
            counted[m.base, name],
            counted[f"{m.base}\n{m.off}", name],
        )
        for m in mechanisms
        for name in m.workloads
    }


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def render(results: list[Result], inactive: list[str]) -> str:
    """The table: a row per mechanism and workload, then each verdict."""
    header = (
        "mechanism",
        "workload",
        "clock on/off",
        "range",
        "A/A",
        "instr on",
        "instr off",
        "instr on/off",
        "pays",
    )
    rows = [header]
    for r in results:
        pays = r.pays()
        rows.append(
            (
                r.mechanism,
                r.workload,
                _ratio(r.clock),
                f"{r.clock_range[0]:.2f}-{r.clock_range[1]:.2f}"
                if r.clock_range
                else "",
                f"{r.noise:.1%}" if r.noise is not None else "",
                f"{r.instructions_on:,.0f}" if r.instructions_on is not None else "",
                f"{r.instructions_off:,.0f}" if r.instructions_off is not None else "",
                _ratio(r.instructions),
                "" if pays is None else ("yes" if pays else "no"),
            )
        )
    lines = layout(rows)
    lines.append("")
    for name in dict.fromkeys(r.mechanism for r in results):
        paid = [r.workload for r in results if r.mechanism == name and r.pays()]
        verdict = f"pays ({', '.join(paid)})" if paid else "does not pay here"
        lines.append(f"{name}: {verdict}")
    lines += [f"{name}: inactive on this Python" for name in inactive]
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A/B each speed mechanism of asgire, on against off, by "
        "the clock and by instruction count (see benchmarks/README.md)."
    )
    parser.add_argument("--only", nargs="+", choices=list(BY_NAME), metavar="MECHANISM")
    parser.add_argument("--rounds", type=int, default=5, help="clock rounds (5)")
    parser.add_argument(
        "--time-per-workload",
        type=float,
        default=0.6,
        metavar="S",
        help="clock seconds per workload, process and round (0.6)",
    )
    parser.add_argument(
        "--pin", type=int, default=0, metavar="CPU", help="CPU for the clock (0)"
    )
    parser.add_argument("--no-clock", action="store_true")
    parser.add_argument("--no-instructions", action="store_true")
    arguments = parser.parse_args(argv)
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not arguments.no_instructions and not _has_valgrind():
        parser.error("valgrind is not installed (or pass --no-instructions)")
    return arguments


def _has_valgrind() -> bool:
    return any(
        os.access(Path(d) / "valgrind", os.X_OK)
        for d in os.environ.get("PATH", "").split(os.pathsep)
    )


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    python = Path(sys.executable)
    chosen = [BY_NAME[n] for n in arguments.only or BY_NAME]
    active = [m for m in chosen if m.active()]
    inactive = [m.name for m in chosen if not m.active()]
    results = {
        (m.name, name): Result(m.name, name) for m in active for name in m.workloads
    }
    started = time.monotonic()
    try:
        if not arguments.no_instructions:
            done: list[str] = []
            total = len(
                {(p, n) for m in active for n in m.workloads for p in (m.base, m.off)}
            )

            def progress(what: str) -> None:
                done.append(what)
                print(f"[{len(done)}] counted {what}", file=sys.stderr, flush=True)

            print(f"counting {total} workloads' instructions", file=sys.stderr)
            counts = count_instructions(active, python, os.cpu_count() or 1, progress)
            for key, (on, off) in counts.items():
                results[key].instructions_on = on
                results[key].instructions_off = off
        if not arguments.no_clock:
            pin(arguments.pin)
            for mechanism in active:
                print(f"clock: {mechanism.name} ", end="", file=sys.stderr)
                clock = measure_clock(
                    mechanism, python, arguments.rounds, arguments.time_per_workload
                )
                print(file=sys.stderr)
                for name, found in clock.items():
                    result = results[mechanism.name, name]
                    result.clock = found.clock
                    result.clock_range = found.clock_range
                    result.noise = found.noise
    except (CompareError, RuntimeError) as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f} at the end, "
        f"{time.monotonic() - started:.0f} s; clock: {arguments.rounds} rounds "
        f"pinned to CPU {arguments.pin}, ratio of 20th percentiles"
    )
    print(render(list(results.values()), inactive))
    return 0


if __name__ == "__main__":
    sys.exit(main())
