"""Compare asgire with upstream asgiref, workload by workload, in one run.

    uv run python benchmarks/compare.py [--rounds N] [--time-per-workload S]
                                        [--only NAME ...] [--markdown]

Builds (once, cached under .bench/) a virtual environment holding upstream
asgiref 3.13.0 for this interpreter's Python version. Each round then starts
two fresh processes running src/asgire/bench.py, one in upstream's environment
and one in this project's (the interpreter running this script), and measures
every workload in both by alternating single batches between them: A, B, B,
A, ... Both sides thus see nearly the same machine load, which matters on a
busy machine where thread hops cost more as other work competes for the cores.

Per workload the report gives the median time per operation of each side, the
median over rounds of the asgire / upstream ratio (each round's ratio is the
median of its back-to-back batch pairs) with the range over rounds, and the
performance targets. Ratios from one run are the figures to quote; absolute
times depend on the machine.

Exit codes: 0 when everything was measured (1 with --check if a target was
missed), 1 when a worker or a workload failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from asgire.bench import WORKLOADS, format_bytes, format_time

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "src" / "asgire" / "bench.py"
UPSTREAM_VERSION = "3.13.0"

Side = Literal["upstream", "asgire"]
SIDES: tuple[Side, Side] = ("upstream", "asgire")

#: Seconds to wait for any one reply from a benchmark process.
REPLY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Target:
    """A ceiling on the median over rounds of ``numerator / denominator``."""

    label: str
    limit: float
    numerator: tuple[Side, str]
    denominator: tuple[Side, str]


def _versus_upstream(workload: str, limit: float) -> Target:
    return Target(workload, limit, ("asgire", workload), ("upstream", workload))


# The performance issue's targets (asgire / upstream, same run).
TARGETS = [
    _versus_upstream("s2a_sensitive", 0.45),
    _versus_upstream("s2a_non_sensitive", 0.6),
    _versus_upstream("s2a_inline", 0.4),
    _versus_upstream("a2s_from_thread", 0.4),
    _versus_upstream("a2s_to_outer_loop", 0.5),
    _versus_upstream("django_sandwich", 0.4),
    _versus_upstream("local_get", 0.3),
    _versus_upstream("local_set", 0.3),
    _versus_upstream("local_get_in_loop", 0.3),
    _versus_upstream("local_get_thread_critical", 0.3),
    _versus_upstream("build_s2a", 0.3),
    _versus_upstream("pending_10k_memory", 1.0),
    # Targets relating two different workloads.
    Target(
        "s2a_sensitive / bare_hop (asgire)",
        1.5,
        ("asgire", "s2a_sensitive"),
        ("asgire", "bare_hop"),
    ),
    Target(
        "a2s_to_outer_loop / bare_hop_back (asgire)",
        1.5,
        ("asgire", "a2s_to_outer_loop"),
        ("asgire", "bare_hop_back"),
    ),
    Target(
        "a2s_single_thread_context / upstream a2s_from_thread",
        0.12,
        ("asgire", "a2s_single_thread_context"),
        ("upstream", "a2s_from_thread"),
    ),
]


@dataclass
class Round:
    """What one round measured."""

    environment: dict[Side, dict[str, Any]] = field(default_factory=dict)
    #: side -> workload -> median seconds per operation (or peak bytes).
    values: dict[Side, dict[str, float]] = field(
        default_factory=lambda: {side: {} for side in SIDES}
    )
    #: workload -> median asgire / upstream ratio of back-to-back batches.
    paired: dict[str, float] = field(default_factory=dict)
    #: side -> workload -> median voluntary context switches per operation.
    switches: dict[Side, dict[str, float]] = field(
        default_factory=lambda: {side: {} for side in SIDES}
    )
    #: side -> workload -> median CPU seconds per operation, all threads.
    cpu: dict[Side, dict[str, float]] = field(
        default_factory=lambda: {side: {} for side in SIDES}
    )


class CompareError(Exception):
    """A failure that ends the run with a message instead of a traceback."""


class UsageError(CompareError):
    """A request this script cannot satisfy as asked (exit status 2)."""


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _holds_upstream(python: Path) -> bool:
    if not python.exists():
        return False
    probe = (
        "import asgiref, importlib.util; "
        "print(asgiref.__version__, importlib.util.find_spec('asgire') is None)"
    )
    found = subprocess.run(
        [str(python), "-I", "-c", probe], capture_output=True, text=True, check=False
    )
    return found.stdout.split() == [UPSTREAM_VERSION, "True"]


def upstream_python(rebuild: bool) -> Path:
    """Return an interpreter with upstream asgiref installed, building it if needed."""
    version = ".".join(map(str, sys.version_info[:3]))
    venv = REPO / ".bench" / f"upstream-{UPSTREAM_VERSION}-py{version}"
    python = _venv_python(venv)
    if not rebuild and _holds_upstream(python):
        return python
    uv = shutil.which("uv")
    if uv is None:
        raise CompareError("uv is needed to build upstream's environment: not found")
    print(f"building {venv.relative_to(REPO)} ...", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    requirement = f"asgiref=={UPSTREAM_VERSION}"
    for command in (
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        [uv, "pip", "install", "--quiet", "--python", str(python), requirement],
    ):
        if subprocess.run(command, check=False).returncode != 0:
            raise CompareError(f"failed: {' '.join(command)}")
    if not _holds_upstream(python):
        raise CompareError(f"{venv} does not provide asgiref {UPSTREAM_VERSION}")
    return python


def _bench_command(python: Path, *arguments: str) -> list[str]:
    # -I keeps src/asgire/ (the script's folder) and the working directory off
    # sys.path, so each interpreter imports only its own installed asgiref.
    return [str(python), "-I", str(BENCH), *arguments]


class Worker:
    """A ``bench.py --serve`` process answering one request at a time."""

    def __init__(self, side: Side, python: Path) -> None:
        self.side = side
        self._process = subprocess.Popen(
            _bench_command(python, "--serve"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        # A reader thread turns the blocking pipe into a queue with timeouts.
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.environment: dict[str, Any] = self._receive()["environment"]

    def _pump(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put("")  # end of output

    def _receive(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=REPLY_TIMEOUT)
        except queue.Empty:
            raise CompareError(
                f"the {self.side} process gave no answer in {REPLY_TIMEOUT:g} s"
            ) from None
        if not line:
            status = self._process.wait()
            raise CompareError(f"the {self.side} process exited with status {status}")
        return json.loads(line)

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        reply = self._receive()
        if "error" in reply:
            raise CompareError(
                f"{self.side} {request.get('workload')}: {reply['error']}"
            )
        return reply

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def measure_round(
    pythons: dict[Side, Path],
    names: list[str],
    seconds: float,
    number: int,
) -> Round:
    """Measure ``names`` on both sides, batch by batch, in fresh processes."""
    workers: dict[Side, Worker] = {}
    try:
        for side in SIDES:
            workers[side] = Worker(side, pythons[side])
        round_ = Round(environment={s: w.environment for s, w in workers.items()})
        for index, name in enumerate(names):
            # Who goes first alternates by round, workload and batch pair.
            first = (number + index) % 2
            _measure_workload(round_, workers, name, seconds, first)
            print(".", end="", file=sys.stderr, flush=True)
        return round_
    finally:
        for worker in workers.values():
            worker.close()


def _measure_workload(
    round_: Round,
    workers: dict[Side, Worker],
    name: str,
    seconds: float,
    first: int,
) -> None:
    deadline = time.monotonic() + 2 * seconds
    orders = (SIDES, SIDES[::-1])
    units = {}
    for side in orders[first]:
        reply = workers[side].ask(op="calibrate", workload=name, seconds=seconds / 10)
        units[side] = reply["units"]
    samples: dict[Side, list[float]] = {side: [] for side in SIDES}
    switches: dict[Side, list[float]] = {side: [] for side in SIDES}
    cpu: dict[Side, list[float]] = {side: [] for side in SIDES}
    ratios: list[float] = []
    # Peak memory is deterministic enough to need a single sample.
    pairs = 1 if WORKLOADS[name].kind == "memory" else 100
    while len(ratios) < min(3, pairs) or (
        time.monotonic() < deadline and len(ratios) < pairs
    ):
        for side in orders[(first + len(ratios)) % 2]:
            reply = workers[side].ask(op="run", workload=name, units=units[side])
            samples[side].append(reply["value"])
            if reply.get("switches") is not None:
                switches[side].append(reply["switches"])
            if reply.get("cpu") is not None:
                cpu[side].append(reply["cpu"])
        ratios.append(samples["asgire"][-1] / samples["upstream"][-1])
    for side in SIDES:
        round_.values[side][name] = statistics.median(samples[side])
        if switches[side]:
            round_.switches[side][name] = statistics.median(switches[side])
        if cpu[side]:
            round_.cpu[side][name] = statistics.median(cpu[side])
    round_.paired[name] = statistics.median(ratios)


def _ratios(rounds: list[Round], target: Target) -> list[float]:
    """One ratio per round: paired when both sides ran the same workload."""
    if target == _versus_upstream(target.numerator[1], target.limit):
        return [r.paired[target.label] for r in rounds if target.label in r.paired]
    ratios = []
    for round_ in rounds:
        top = round_.values[target.numerator[0]].get(target.numerator[1])
        bottom = round_.values[target.denominator[0]].get(target.denominator[1])
        if top is not None and bottom:
            ratios.append(top / bottom)
    return ratios


def _format(value: float | None, kind: str) -> str:
    if value is None:
        return "n/a"
    return format_bytes(value) if kind == "memory" else format_time(value)


@dataclass
class Row:
    label: str
    upstream: str
    asgire: str
    ratio: str
    spread: str
    target: str
    verdict: str
    #: Voluntary context switches per operation, "upstream / asgire".
    switches: str
    #: Median over rounds of the CPU time ratio asgire / upstream.
    cpu_ratio: str


def _ratio_cells(rounds: list[Round], target: Target) -> tuple[str, str, bool | None]:
    """Median ratio, its range over rounds, and whether the target is met."""
    ratios = _ratios(rounds, target)
    if not ratios:
        return "n/a", "", None
    median = round(statistics.median(ratios), 2)
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
    # Judged as shown: a few bytes more peak memory must not fail "<= 1".
    return f"{median:.2f}", spread, median <= target.limit


def _verdict(met: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[met]


def summarise(rounds: list[Round], names: list[str]) -> tuple[list[Row], bool]:
    """Rows for the report, and whether every target that applies was met."""
    targets = {t.label: t for t in TARGETS}
    rows: list[Row] = []
    verdicts: list[bool | None] = []
    for name in names:
        cells = [
            _format(
                _median_over([r.values[side] for r in rounds], name),
                WORKLOADS[name].kind,
            )
            for side in SIDES
        ]
        target = targets.get(name)
        ratio, spread, met = _ratio_cells(rounds, target or _versus_upstream(name, 0))
        limit = verdict = ""
        if target is not None:
            verdicts.append(met)
            limit, verdict = f"<= {target.limit:g}", _verdict(met)
        rows.append(
            Row(
                name,
                *cells,
                ratio,
                spread,
                limit,
                verdict,
                _switches(rounds, name),
                _cpu_ratio(rounds, name),
            )
        )
    for target in TARGETS:
        needed = {target.numerator[1], target.denominator[1]}
        if target.label in names or not needed <= set(names):
            continue
        ratio, spread, met = _ratio_cells(rounds, target)
        verdicts.append(met)
        limit = f"<= {target.limit:g}"
        rows.append(
            Row(target.label, "", "", ratio, spread, limit, _verdict(met), "", "")
        )
    return rows, all(met is True for met in verdicts)


def _median_over(by_round: list[dict[str, float]], name: str) -> float | None:
    """The median of ``name`` over the rounds that measured it, or None."""
    found = [measured[name] for measured in by_round if name in measured]
    return statistics.median(found) if found else None


def _switches(rounds: list[Round], name: str) -> str:
    """Median switches per operation over rounds, as "upstream / asgire"."""
    medians = [_median_over([r.switches[side] for r in rounds], name) for side in SIDES]
    if None in medians:
        return ""
    return " / ".join(f"{median:.2f}" for median in medians)


def _cpu_ratio(rounds: list[Round], name: str) -> str:
    """Median over rounds of asgire's CPU time per operation over upstream's."""
    ratios = [
        r.cpu["asgire"][name] / r.cpu["upstream"][name]
        for r in rounds
        if r.cpu["upstream"].get(name) and name in r.cpu["asgire"]
    ]
    return f"{statistics.median(ratios):.2f}" if ratios else ""


def render_text(rows: list[Row]) -> str:
    header = Row(
        "workload",
        "upstream",
        "asgire",
        "ratio",
        "range",
        "target",
        "",
        "switches",
        "CPU ratio",
    )
    table = [header, *rows]
    columns = [f.name for f in dataclasses.fields(Row)]
    widths = {c: max(len(getattr(r, c)) for r in table) for c in columns}
    left = {"label", "verdict"}  # words; the rest are figures
    lines = []
    for row in table:
        cells = [
            getattr(row, c).ljust(widths[c])
            if c in left
            else getattr(row, c).rjust(widths[c])
            for c in columns
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_markdown(rows: list[Row]) -> str:
    lines = [
        "| workload | upstream 3.13.0 | asgire | ratio | range | target | | switches | CPU ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in rows:
        cells = [row.label if " " in row.label else f"`{row.label}`"]
        cells += [row.upstream, row.asgire, row.ratio, row.spread]
        cells += [row.target.replace("<=", "≤"), row.verdict, row.switches]
        cells.append(row.cpu_ratio)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(rounds: list[Round], seconds: float) -> str:
    env = rounds[0].environment["asgire"]
    upstream = rounds[0].environment["upstream"]
    return (
        f"{env['provider']} {env['provider_version']} vs {upstream['provider']} "
        f"{upstream['provider_version']}; {env['python_implementation']} "
        f"{env['python']} on {env['os']}, {env['cpu']} ({env['cores']} cores); "
        f"{len(rounds)} rounds, {seconds:g} s per workload and side. "
        "Ratio: asgire / upstream, median over rounds (lower is better)."
    )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark asgire against upstream asgiref "
        f"{UPSTREAM_VERSION} (see benchmarks/README.md)."
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds, each in fresh processes (5)"
    )
    parser.add_argument(
        "--time-per-workload",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds per workload, side and round (default: 1)",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these workloads"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print a Markdown table for the README"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed"
    )
    parser.add_argument(
        "--save",
        type=Path,
        metavar="FILE",
        help="also write every round's data as JSON",
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="rebuild upstream's cached environment"
    )
    parser.add_argument(
        "--asgire-python",
        type=Path,
        default=Path(sys.executable),
        metavar="PATH",
        help="interpreter whose asgiref is asgire (default: the one running this)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not args.time_per_workload > 0:
        parser.error("--time-per-workload must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        return compare(args)
    except CompareError as exc:
        print(f"\ncompare: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


def compare(args: argparse.Namespace) -> int:
    pythons: dict[Side, Path] = {
        "upstream": upstream_python(args.rebuild),
        "asgire": args.asgire_python,
    }
    # Both sides run this checkout's bench.py, so its workloads are theirs.
    names = list(WORKLOADS)
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            raise UsageError(
                f"unknown workloads: {', '.join(unknown)} (known: {', '.join(names)})"
            )
        names = [name for name in names if name in args.only]
    minutes = args.rounds * len(names) * 2 * args.time_per_workload / 60
    print(
        f"{args.rounds} rounds x {len(names)} workloads x 2 sides x "
        f"{args.time_per_workload:g} s: at least {minutes:.1f} min",
        file=sys.stderr,
    )

    rounds: list[Round] = []
    for number in range(args.rounds):
        started = time.monotonic()
        print(f"round {number + 1}/{args.rounds} ", end="", file=sys.stderr)
        round_ = measure_round(pythons, names, args.time_per_workload, number)
        print(f" {time.monotonic() - started:.0f} s", file=sys.stderr)
        provider = round_.environment["asgire"]["provider"]
        if number == 0 and provider != "asgire":
            print(
                f"compare: warning: {pythons['asgire']} imports asgiref from "
                f"the {provider} distribution, not asgire",
                file=sys.stderr,
            )
        rounds.append(round_)

    if args.save:
        data = [dataclasses.asdict(r) for r in rounds]
        args.save.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    rows, all_met = summarise(rounds, names)
    command = " ".join(["uv run python benchmarks/compare.py", *sys.argv[1:]])
    print(describe(rounds, args.time_per_workload))
    print(f"Command: `{command}`" if args.markdown else f"Command: {command}")
    print()
    print(render_markdown(rows) if args.markdown else render_text(rows))
    return 1 if args.check and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
