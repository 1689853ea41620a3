"""Count the instructions each workload costs per operation, asgire against upstream.

    uv run python benchmarks/instructions.py [--only NAME ...] [--markdown]

The clock on a shared or virtual machine is noisy, and much of a crossing's
time there is the kernel waking a thread on another core, which both sides pay
alike (see the bare hops). This runs the workloads of src/asgire/bench.py under
valgrind's callgrind instead, which counts the instructions executed in user
space: the interpreter running the library, asyncio and the workload, but not
the kernel. The count is repeatable to about a percent, so one run of
each side is enough to tell a change in the library's own work, before and
after an optimisation or against upstream, that the clock cannot resolve.

Each workload runs in two fresh processes per side, one of ``units`` and one of
``LONG_RUN * units`` units, each after the same warm-up batch; the difference
between the two totals, divided by the extra operations, is the count per
operation with start-up, imports and warm-up cancelled out. Callgrind runs one
thread at a time, so this says nothing about waiting for a core, only about
work.

Exit codes: 0 when everything was counted, 1 when a run failed, 2 on a usage
error (valgrind missing, unknown workload).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from compare import BENCH, TARGETS, add_baseline_arguments, baseline_python

from asgire.bench import WORKLOADS

#: The longer run of each pair has this many times the units of the shorter.
LONG_RUN = 6

#: Operations in the shorter run: enough that the difference dwarfs the
#: noise of start-up (thousands of instructions), few enough for valgrind's
#: roughly fiftyfold slowdown.
CROSSING_OPS = 200
CHEAP_OPS = 2_000

# Run by ``python -c`` under valgrind: run the prelude (Python source that
# switches something off, or nothing), load bench.py by path (it imports only
# asgiref, so it runs on either side), warm up, then run the counted batch.
_RUNNER = """\
import sys
exec(sys.argv[5])
sys.path.insert(0, sys.argv[1])
import bench
workload = bench.WORKLOADS[sys.argv[2]]
units = int(sys.argv[3])
workload.run(int(sys.argv[4]))
workload.run(units)
"""

_COLLECTED = re.compile(r"Collected : (\d+)")


@dataclass(frozen=True)
class Count:
    """Instructions per operation of one workload on both sides."""

    name: str
    upstream: float
    asgire: float

    @property
    def ratio(self) -> float:
        return self.asgire / self.upstream


def short_run_units(name: str) -> int:
    """Units in the shorter run of ``name``'s pair."""
    workload = WORKLOADS[name]
    cheap = name.startswith(("local_", "build_"))
    ops = CHEAP_OPS if cheap else CROSSING_OPS
    return max(1, ops // workload.ops_per_unit)


def callgrind_total(output: str) -> int:
    """The instruction total in callgrind's report on stderr."""
    found = _COLLECTED.findall(output)
    if not found:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{output}")
    return int(found[-1])


def per_operation(name: str, short_total: int, long_total: int) -> float:
    """Instructions per operation from the totals of ``name``'s two runs."""
    units = short_run_units(name)
    extra_ops = (LONG_RUN - 1) * units * WORKLOADS[name].ops_per_unit
    return (long_total - short_total) / extra_ops


def _count_run(python: Path, name: str, units: int, warm_up: int, prelude: str) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        # A run that starts a thread per call can outpace valgrind's reaping
        # of the ended ones, and its table of threads (500) fills.
        "--max-threads=5000",
        str(python),
        "-c",
        _RUNNER,
        str(BENCH.parent),
        name,
        str(units),
        str(warm_up),
        prelude,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{name} under valgrind with {python} exited {done.returncode}:\n"
            f"{done.stderr[-2000:]}"
        )
    return callgrind_total(done.stderr)


def count_side(python: Path, name: str, prelude: str = "") -> float:
    """Instructions per operation of ``name`` with the asgiref ``python`` has,
    after running the Python source ``prelude`` in the same process."""
    units = short_run_units(name)
    short = _count_run(python, name, units, units, prelude)
    long = _count_run(python, name, LONG_RUN * units, units, prelude)
    return per_operation(name, short, long)


def count_all(
    names: list[str],
    pythons: dict[str, Path],
    progress: Callable[[str], None],
    jobs: int,
) -> list[Count]:
    """Count every workload in ``names`` on both sides, ``jobs`` runs at a time."""
    pairs = [(name, side) for name in names for side in ("upstream", "asgire")]

    def count(pair: tuple[str, str]) -> float:
        name, side = pair
        result = count_side(pythons[side], name)
        progress(f"{name} ({side})")
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = dict(zip(pairs, pool.map(count, pairs), strict=True))
    return [
        Count(name, results[name, "upstream"], results[name, "asgire"])
        for name in names
    ]


def _clock_targets() -> dict[str, float]:
    return {
        target.numerator[1]: target.limit
        for target in TARGETS
        if target.numerator[1] == target.denominator[1]
    }


def render(counts: list[Count], markdown: bool) -> str:
    """A table of the counts; the clock targets are shown for reference."""
    targets = _clock_targets()
    header = ("workload", "upstream", "asgire", "ratio", "clock target")
    rows = [
        (
            f"`{c.name}`" if markdown else c.name,
            f"{c.upstream:,.0f}",
            f"{c.asgire:,.0f}",
            f"{c.ratio:.2f}",
            f"≤ {targets[c.name]:g}" if c.name in targets else "",
        )
        for c in counts
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * 4]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    timed = [name for name, w in WORKLOADS.items() if w.kind == "time"]
    parser = argparse.ArgumentParser(
        description="Count instructions per operation, asgire against upstream "
        "asgiref 3.13.0, under valgrind (see benchmarks/README.md)."
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=timed,
        metavar="NAME",
        help="count only these workloads (default: every timed one)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print a Markdown table"
    )
    add_baseline_arguments(parser)
    arguments = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt install valgrind)")
    arguments.names = [name for name in timed if name in (arguments.only or timed)]
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    pythons = {
        "upstream": baseline_python(arguments),
        "asgire": Path(sys.executable),
    }
    total = 2 * len(arguments.names)
    done: list[str] = []

    def progress(what: str) -> None:
        done.append(what)
        print(f"[{len(done)}/{total}] {what}", file=sys.stderr, flush=True)

    try:
        counts = count_all(arguments.names, pythons, progress, os.cpu_count() or 1)
    except RuntimeError as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    print(render(counts, arguments.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
