"""Compare asgire with upstream asgiref, workload by workload, in one run.

    python benchmarks/compare.py [--rounds N] [--time-per-workload S]
                                 [--only NAME ...] [--pin CPU] [--markdown]
    python benchmarks/compare.py --table RUN.json [RUN.json ...]

Runs with whatever interpreter starts it, as long as that interpreter imports
asgire's ``asgiref`` (a project checkout installed with ``uv sync`` or
``pip install -e .``). It builds once, cached under .bench/, a virtual
environment holding upstream asgiref 3.13.0 for the same interpreter (with uv
when it is on PATH, else ``python -m venv`` and pip).

Each round starts fresh processes running src/asgire/bench.py: one with
upstream, one with asgire, and a second one of the A/A side (``--aa``,
upstream by default). Every workload is then measured in short batches taken
in turn from the processes, in an order that rotates, so that all see nearly
the same machine load. A process's figure for a workload is a low percentile
of its batches (the memory workload: its one peak), and a round's ratio is
asgire's figure over upstream's. The report gives per workload the median of
those ratios over rounds and their range, and the same for the A/A pair,
whose true ratio is 1: how far it strays is that workload's noise in this
run, and a verdict closer to its target than that reads "pass?" or "FAIL?".
See benchmarks/README.md for why it measures this way.

Exit codes: 0 when everything was measured (1 with --check if a target was
missed or too close to call), 1 when a worker or a workload failed, 2 on a
usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from asgire.bench import WORKLOADS, format_bytes, format_time
from asgire.sidebyside import (
    SideBySideError,
    Worker,
    _venv_python,
    build_upstream_with_what_is_at_hand,
)

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "src" / "asgire" / "bench.py"
UPSTREAM_VERSION = "3.13.0"

Side = Literal["upstream", "asgire"]
SIDES: tuple[Side, Side] = ("upstream", "asgire")
#: The process measuring the A/A side a second time.
TWIN = "twin"

#: A process's figure for a workload: this percentile of its batches. Low
#: enough to leave out batches slowed by other work on the machine, high
#: enough not to be one lucky batch.
PERCENTILE = 20
#: Batches per process and workload in a round: at least, and at most.
MIN_BATCHES = 5
MAX_BATCHES = 60
#: A workload whose A/A ratio is within this of 1 counts as measured stably.
STABLE = 0.05
#: The noise floor never reads smaller than this, however well a run's A/A
#: pair agreed.
MIN_NOISE = 0.02


@dataclass(frozen=True)
class Target:
    """A ceiling on the median over rounds of ``numerator / denominator``."""

    label: str
    limit: float
    numerator: tuple[Side, str]
    denominator: tuple[Side, str]


def _versus_upstream(workload: str, limit: float) -> Target:
    return Target(workload, limit, ("asgire", workload), ("upstream", workload))


# The performance issues' targets (asgire / upstream, same run).
TARGETS = [
    _versus_upstream("s2a_sensitive", 0.45),
    _versus_upstream("s2a_non_sensitive", 0.6),
    _versus_upstream("s2a_inline", 0.4),
    _versus_upstream("s2a_gather_100", 0.5),
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


def _floor(floor: str, workload: str) -> Target:
    limit = next(t.limit for t in TARGETS if t.label == workload)
    return Target(
        f"{floor} / upstream {workload}",
        limit,
        ("upstream", floor),
        ("upstream", workload),
    )


# What a library doing nothing but the hop would score: the cheapest hop of a
# crossing's shape (no asgiref code, timed in upstream's own process) over
# upstream's crossing. Where one reads above its workload's target, no library
# can meet that target on this machine. thread_ping_pong is the two wake-ups
# alone, with no event loop. Shown, never judged.
FLOORS = [
    _floor(floor, workload)
    for floor, workloads in (
        ("least_hop", ("s2a_sensitive", "s2a_non_sensitive", "s2a_inline")),
        ("least_hop_back", ("a2s_from_thread", "a2s_to_outer_loop")),
        ("thread_ping_pong", ("s2a_sensitive", "a2s_to_outer_loop")),
    )
    for workload in workloads
]


@dataclass
class Batch:
    """What one batch of one process measured."""

    #: Seconds per operation, or peak bytes for the memory workload.
    value: float
    #: Voluntary context switches per operation (None: not counted).
    switches: float | None = None
    #: CPU seconds per operation, every thread of the process (None: memory).
    cpu: float | None = None


@dataclass
class Round:
    """Every batch one round measured: process -> workload -> batches.

    The processes are "upstream", "asgire" and, with an A/A check, "twin".
    """

    environment: dict[str, dict[str, Any]] = field(default_factory=dict)
    batches: dict[str, dict[str, list[Batch]]] = field(default_factory=dict)

    def figure(self, process: str, name: str) -> float | None:
        """``process``'s figure for ``name`` in this round, or None."""
        found = self.batches.get(process, {}).get(name)
        return low_percentile([b.value for b in found]) if found else None

    def median_of(self, process: str, name: str, what: str) -> float | None:
        """The median of a batch field (``switches``, ``cpu``) or None."""
        found = self.batches.get(process, {}).get(name, [])
        known = [getattr(b, what) for b in found if getattr(b, what) is not None]
        return statistics.median(known) if known else None


def low_percentile(values: list[float], percent: float = PERCENTILE) -> float:
    """The ``percent`` percentile of ``values``, interpolated between ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * percent / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    fraction = position - below
    return ordered[below] * (1 - fraction) + ordered[above] * fraction


class CompareError(Exception):
    """A failure that ends the run with a message instead of a traceback."""


class UsageError(CompareError):
    """A request this script cannot satisfy as asked (exit status 2)."""


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


def interpreter_tag() -> str:
    """Names this interpreter's build: implementation, version and ABI flags
    (a free-threaded build's "t"), so that each gets its own environment."""
    version = ".".join(map(str, sys.version_info[:3]))
    return f"{sys.implementation.name}{version}{getattr(sys, 'abiflags', '')}"


def upstream_python(rebuild: bool) -> Path:
    """Return an interpreter with upstream asgiref installed, building it if needed."""
    venv = REPO / ".bench" / f"upstream-{UPSTREAM_VERSION}-{interpreter_tag()}"
    python = _venv_python(venv)
    if not rebuild and _holds_upstream(python):
        return python
    print(f"building {venv.relative_to(REPO)} ...", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    build_upstream_with_what_is_at_hand(
        venv, None, source=None, log=lambda line: print(line, file=sys.stderr)
    )
    if not _holds_upstream(python):
        raise CompareError(f"{venv} does not provide asgiref {UPSTREAM_VERSION}")
    return python


# Runs ``prelude`` (argv[1]), then bench.py (argv[2]) as the main script.
_AFTER_PRELUDE = (
    "import runpy, sys; exec(sys.argv.pop(1)); del sys.argv[0]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _bench_command(python: Path, *arguments: str, prelude: str = "") -> list[str]:
    # -I keeps src/asgire/ (the script's folder) and the working directory off
    # sys.path, so each interpreter imports only its own installed asgiref.
    if prelude:
        return [
            str(python),
            "-I",
            "-c",
            _AFTER_PRELUDE,
            prelude,
            str(BENCH),
            *arguments,
        ]
    return [str(python), "-I", str(BENCH), *arguments]


def start_worker(process: str, python: Path, prelude: str = "") -> Worker:
    """A ``bench.py --serve`` process of ``python``, named ``process``; with a
    ``prelude``, Python source it runs first (to switch something off)."""
    return Worker(process, _bench_command(python, "--serve", prelude=prelude))


def ask(worker: Worker, **request: Any) -> dict[str, Any]:
    """``worker``'s reply to ``request``; a workload's failure ends the run."""
    reply = worker.ask(**request)
    if "error" in reply:
        raise CompareError(f"{worker.side} {request.get('workload')}: {reply['error']}")
    return reply


def process_pythons(pythons: dict[str, Path], aa: str | None) -> dict[str, Path]:
    """The interpreter of each process of a round, the A/A twin included."""
    processes = dict(pythons)
    if aa is not None:
        processes[TWIN] = pythons[aa]
    return processes


def orders(names: list[str], start: int) -> itertools.cycle[tuple[str, ...]]:
    """The orders in which batches are taken from the processes ``names``:
    every permutation in turn, so that each process goes first, last and in
    between equally often, starting at a different one each ``start``."""
    permutations = list(itertools.permutations(names))
    shift = start % len(permutations)
    return itertools.cycle(permutations[shift:] + permutations[:shift])


def measure_round(
    processes: dict[str, Path],
    names: list[str],
    seconds: float,
    number: int,
    preludes: dict[str, str] | None = None,
) -> Round:
    """Measure ``names`` in fresh processes, batch by batch, in turn; a
    process named in ``preludes`` runs its prelude first (see ``Worker``)."""
    workers: dict[str, Worker] = {}
    try:
        for process, python in processes.items():
            prelude = (preludes or {}).get(process, "")
            workers[process] = start_worker(process, python, prelude)
        round_ = Round(
            environment={p: w.environment for p, w in workers.items()},
            batches={p: {} for p in workers},
        )
        for index, name in enumerate(names):
            _measure_workload(round_, workers, name, seconds, number + index)
            print(".", end="", file=sys.stderr, flush=True)
        return round_
    finally:
        for worker in workers.values():
            worker.close()


def _measure_workload(
    round_: Round,
    workers: dict[str, Worker],
    name: str,
    seconds: float,
    start: int,
) -> None:
    # Peak memory is deterministic enough for one sample.
    memory = WORKLOADS[name].kind == "memory"
    count = 1 if memory else MAX_BATCHES
    batch_seconds = seconds / MAX_BATCHES
    units = {}
    for process in next(orders(list(workers), start)):
        reply = ask(
            workers[process], op="calibrate", workload=name, seconds=batch_seconds
        )
        units[process] = reply["units"]
    taken: dict[str, list[Batch]] = {process: [] for process in workers}
    deadline = time.monotonic() + len(workers) * seconds
    for taken_so_far, order in enumerate(orders(list(workers), start)):
        if taken_so_far >= count or (
            taken_so_far >= MIN_BATCHES and time.monotonic() > deadline
        ):
            break
        for process in order:
            reply = ask(workers[process], op="run", workload=name, units=units[process])
            batch = Batch(reply["value"], reply.get("switches"), reply.get("cpu"))
            taken[process].append(batch)
    for process, batches in taken.items():
        round_.batches[process][name] = batches


def ratios(rounds: list[Round], target: Target) -> list[float]:
    """The target's ratio in each round that measured both of its terms."""
    found = []
    for round_ in rounds:
        top = round_.figure(*target.numerator)
        bottom = round_.figure(*target.denominator)
        if top is not None and bottom:
            found.append(top / bottom)
    return found


def twin_ratios(rounds: list[Round], name: str, aa: str) -> list[float]:
    """The A/A pair's ratio for ``name`` in each round: twin / its original."""
    found = []
    for round_ in rounds:
        twin = round_.figure(TWIN, name)
        original = round_.figure(aa, name)
        if twin is not None and original:
            found.append(twin / original)
    return found


def noise(rounds: list[Round], name: str, aa: str | None) -> float | None:
    """How far the median A/A ratio of ``name`` strays from 1 (at least
    MIN_NOISE): two ratios of that workload closer than this cannot be told
    apart in this run. None without an A/A check or for peak memory."""
    if aa is None or WORKLOADS[name].kind != "time":
        return None
    found = twin_ratios(rounds, name, aa)
    return max(MIN_NOISE, abs(statistics.median(found) - 1)) if found else None


def noise_floor(rounds: list[Round], names: list[str], aa: str | None) -> float | None:
    """The largest noise of the workloads in ``names``, or None."""
    found = [n for name in names if (n := noise(rounds, name, aa)) is not None]
    return max(found) if found else None


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
    aa: str
    target: str
    verdict: str
    #: Voluntary context switches per operation, "upstream / asgire".
    switches: str
    #: Median over rounds of the CPU time ratio asgire / upstream.
    cpu_ratio: str


def judge(ratio: float, limit: float, noise: float | None) -> str:
    """ "pass" or "FAIL", with "?" when ``ratio`` is within ``noise`` of
    ``limit`` (relative to it)."""
    verdict = "pass" if ratio <= limit else "FAIL"
    close = noise is not None and abs(ratio / limit - 1) <= noise
    return verdict + "?" if close else verdict


def _ratio_cells(
    rounds: list[Round], target: Target, noise: float | None
) -> tuple[str, str, str | None]:
    """Median ratio, its range over rounds, and the verdict (None: no data)."""
    found = ratios(rounds, target)
    if not found:
        return "n/a", "", None
    # Judged as shown: a few bytes more peak memory must not fail "<= 1".
    median = round(statistics.median(found), 2)
    spread = f"{min(found):.2f}-{max(found):.2f}"
    return f"{median:.2f}", spread, judge(median, target.limit, noise)


def summarise(
    rounds: list[Round], names: list[str], aa: str | None = None
) -> tuple[list[Row], bool]:
    """Rows for the report, and whether every target that applies was met
    by more than the noise floor."""
    targets = {t.label: t for t in TARGETS}
    rows: list[Row] = []
    verdicts: list[str | None] = []
    for name in names:
        kind = WORKLOADS[name].kind
        cells = [_format(_median_over(rounds, side, name), kind) for side in SIDES]
        target = targets.get(name)
        ratio, spread, verdict = _ratio_cells(
            rounds, target or _versus_upstream(name, 1), noise(rounds, name, aa)
        )
        limit = shown = ""
        if target is not None:
            verdicts.append(verdict)
            limit, shown = f"<= {target.limit:g}", verdict or "n/a"
        found = twin_ratios(rounds, name, aa) if aa is not None else []
        twin = f"{statistics.median(found):.2f}" if found else ""
        rows.append(
            Row(
                name,
                *cells,
                ratio,
                spread,
                twin,
                limit,
                shown,
                _switches(rounds, name),
                _cpu_ratio(rounds, name),
            )
        )
    for target in TARGETS:
        needed = {target.numerator[1], target.denominator[1]}
        if target.label in names or not needed <= set(names):
            continue
        terms = [target.numerator[1], target.denominator[1]]
        ratio, spread, verdict = _ratio_cells(
            rounds, target, noise_floor(rounds, terms, aa)
        )
        verdicts.append(verdict)
        limit = f"<= {target.limit:g}"
        rows.append(
            Row(
                target.label, "", "", ratio, spread, "", limit, verdict or "n/a", "", ""
            )
        )
    for target in FLOORS:
        if {target.numerator[1], target.denominator[1]} <= set(names):
            ratio, spread, _ = _ratio_cells(rounds, target, None)
            limit = f"<= {target.limit:g}"
            rows.append(Row(target.label, "", "", ratio, spread, "", limit, "", "", ""))
    return rows, all(verdict == "pass" for verdict in verdicts)


def _median_over(rounds: list[Round], process: str, name: str) -> float | None:
    """The median over rounds of ``process``'s figure for ``name``, or None."""
    found = [f for r in rounds if (f := r.figure(process, name)) is not None]
    return statistics.median(found) if found else None


def _switches(rounds: list[Round], name: str) -> str:
    """Median switches per operation over rounds, as "upstream / asgire"."""
    medians = []
    for side in SIDES:
        found = [
            s for r in rounds if (s := r.median_of(side, name, "switches")) is not None
        ]
        if not found:
            return ""
        medians.append(statistics.median(found))
    return " / ".join(f"{median:.2f}" for median in medians)


def _cpu_ratio(rounds: list[Round], name: str) -> str:
    """Median over rounds of asgire's CPU time per operation over upstream's."""
    found = []
    for round_ in rounds:
        upstream = round_.median_of("upstream", name, "cpu")
        asgire = round_.median_of("asgire", name, "cpu")
        if upstream and asgire is not None:
            found.append(asgire / upstream)
    return f"{statistics.median(found):.2f}" if found else ""


_HEADER = Row(
    "workload",
    "upstream",
    "asgire",
    "ratio",
    "range",
    "A/A",
    "target",
    "",
    "switches",
    "CPU ratio",
)


def render_text(rows: list[Row]) -> str:
    table = [_HEADER, *rows]
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
            if widths[c]
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_markdown(rows: list[Row]) -> str:
    lines = [
        "| workload | upstream 3.13.0 | asgire | ratio | range | A/A | target | "
        "| switches | CPU ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in rows:
        cells = [row.label if " " in row.label else f"`{row.label}`"]
        cells += [row.upstream, row.asgire, row.ratio, row.spread, row.aa]
        cells += [row.target.replace("<=", "≤"), row.verdict, row.switches]
        cells.append(row.cpu_ratio)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(rounds: list[Round], settings: dict[str, Any]) -> str:
    env = rounds[0].environment["asgire"]
    upstream = rounds[0].environment["upstream"]
    pinned = settings.get("pin")
    where = f"pinned to CPU {pinned}" if pinned is not None else "unpinned"
    return (
        f"{env['provider']} {env['provider_version']} vs {upstream['provider']} "
        f"{upstream['provider_version']}; {env['python_implementation']} "
        f"{env['python']} on {env['os']}, {env['cpu']} ({env['cores']} cores, "
        f"{where}); {len(rounds)} rounds, {settings['seconds']:g} s per workload "
        "and process. Ratio: asgire / upstream, median over rounds of the "
        f"{PERCENTILE}th percentile of each process's batches (lower is better)."
    )


def stability(rounds: list[Round], names: list[str], aa: str | None) -> str:
    """A few lines on how far this run's figures can be trusted."""
    if aa is None:
        return "Stability: not checked (--aa off)."
    noises = {n: f for n in names if (f := noise(rounds, n, aa)) is not None}
    if not noises:
        return "Stability: no timed workload to check."
    worst = max(noises, key=noises.__getitem__)
    calm = sum(f <= STABLE for f in noises.values())
    single = [r for n in noises for r in twin_ratios(rounds, n, aa)]
    return (
        f"Stability: A/A ({aa} against a second {aa} process) within "
        f"{STABLE:.0%} of 1 for {calm} of {len(noises)} timed workloads; worst "
        f"{worst} ({noises[worst]:.0%} off); single rounds "
        f"{min(single):.2f}-{max(single):.2f}. A verdict closer to its target "
        'than its workload\'s A/A strays from 1 is marked "?".'
    )


def describe_runs(runs: list[dict[str, Any]]) -> str:
    """One line on where and how the saved ``runs`` were measured."""
    how: dict[str, list[str]] = {}
    for run in runs:
        env = run["rounds"][0]["environment"]["asgire"]
        pinned = run.get("pin")
        where = f"pinned to CPU {pinned}" if pinned is not None else "unpinned"
        settings = (
            f"{len(run['rounds'])} rounds, {run.get('seconds', 1):g} s per "
            f"workload and process, {where}"
        )
        python = f"{env['python_implementation']} {env['python']}"
        how.setdefault(settings, []).append(python)
    env = runs[0]["rounds"][0]["environment"]["asgire"]
    parts = [f"{', '.join(pythons)}: {settings}" for settings, pythons in how.items()]
    return (
        f"{env['provider']} {env['provider_version']} vs asgiref "
        f"{UPSTREAM_VERSION} on {env['os']}, {env['cpu']} ({env['cores']} "
        f"cores). {'; '.join(parts)}. Ratio: asgire / upstream, median over "
        "rounds (lower is better)."
    )


def render_versions(runs: list[dict[str, Any]]) -> str:
    """A Markdown table of several saved runs' ratios, a column per Python."""
    loaded = [(run, [_round_from_json(r) for r in run["rounds"]]) for run in runs]
    names = [n for n in WORKLOADS if any(n in run["names"] for run, _ in loaded)]
    targets = {t.label: t for t in [*TARGETS, *FLOORS]}
    heads = [f"Python {run['python']}" for run, _ in loaded]
    lines = [
        "| workload | target | " + " | ".join(heads) + " |",
        "| --- | ---: |" + " ---: |" * len(heads),
    ]
    summaries = [
        {row.label: row for row in summarise(rounds, run["names"], run["aa"])[0]}
        for run, rounds in loaded
    ]
    labels = names + [label for label in targets if label not in names]
    for label in labels:
        cells = []
        for summary in summaries:
            row = summary.get(label)
            if row is None:
                cells.append("")
            elif row.verdict in ("", "pass"):
                cells.append(row.ratio)
            else:
                cells.append(f"{row.ratio} {row.verdict}")
        if not any(cells):
            continue
        target = targets.get(label)
        limit = f"≤ {target.limit:g}" if target else ""
        shown = label if " " in label else f"`{label}`"
        lines.append(f"| {shown} | {limit} | " + " | ".join(cells) + " |")
    floors = []
    for (run, rounds), head in zip(loaded, heads, strict=True):
        noises = {n: f for n in run["names"] if (f := noise(rounds, n, run["aa"]))}
        if noises:
            worst = max(noises, key=noises.__getitem__)
            typical = statistics.median(noises.values())
            floors.append(f"{head} {typical:.0%} (worst {noises[worst]:.0%}, {worst})")
    if floors:
        lines.append("")
        lines.append(
            "A/A noise, the median over workloads of how far a second process "
            "of the same side strayed from 1: " + "; ".join(floors) + "."
        )
    return "\n".join(lines)


def _round_from_json(data: dict[str, Any]) -> Round:
    return Round(
        environment=data["environment"],
        batches={
            process: {name: [Batch(**b) for b in found] for name, found in by.items()}
            for process, by in data["batches"].items()
        },
    )


def add_baseline_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rebuild`` and ``--upstream-python``, which ``baseline_python`` reads."""
    parser.add_argument(
        "--rebuild", action="store_true", help="rebuild upstream's cached environment"
    )
    parser.add_argument(
        "--upstream-python",
        type=Path,
        metavar="PATH",
        help="interpreter of the baseline side instead of upstream 3.13.0's "
        "cached environment: another checkout's, for an A/B of a change",
    )


def baseline_python(args: argparse.Namespace) -> Path:
    """The baseline side's interpreter: ``--upstream-python``, else upstream's
    cached environment (rebuilt first with ``--rebuild``)."""
    return args.upstream_python or upstream_python(args.rebuild)


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
        help="seconds per workload, process and round (default: 1)",
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these workloads"
    )
    parser.add_argument(
        "--aa",
        choices=["upstream", "asgire", "off"],
        default="upstream",
        help="the side measured twice, for the A/A check (default: upstream)",
    )
    parser.add_argument(
        "--pin",
        type=int,
        metavar="CPU",
        help="run every process on this one CPU only (Linux), as taskset -c CPU",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print a Markdown table for the README"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a target is missed or too close to call",
    )
    parser.add_argument(
        "--save",
        type=Path,
        metavar="FILE",
        help="also write every batch measured as JSON (for --table)",
    )
    parser.add_argument(
        "--table",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="measure nothing: print the ratios of runs saved with --save, a "
        "column per run (one per Python version), as Markdown",
    )
    add_baseline_arguments(parser)
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
    if args.pin is not None and not hasattr(os, "sched_setaffinity"):
        parser.error("--pin needs os.sched_setaffinity (Linux)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        if args.table:
            runs = [json.loads(p.read_text(encoding="utf-8")) for p in args.table]
            print(describe_runs(runs))
            print()
            print(render_versions(runs))
            return 0
        return compare(args)
    except (CompareError, SideBySideError) as exc:
        print(f"\ncompare: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


def _selected(only: list[str] | None) -> list[str]:
    # Both sides run this checkout's bench.py, so its workloads are theirs.
    names = list(WORKLOADS)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise UsageError(
                f"unknown workloads: {', '.join(unknown)} (known: {', '.join(names)})"
            )
        names = [name for name in names if name in only]
    return names


def pin(cpu: int) -> None:
    """Hold this process, and so every process and thread it starts, to ``cpu``."""
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        raise UsageError(f"cannot pin to CPU {cpu}: {exc}") from None


def compare(args: argparse.Namespace) -> int:
    names = _selected(args.only)
    if args.pin is not None:
        pin(args.pin)
    pythons: dict[str, Path] = {
        "upstream": baseline_python(args),
        "asgire": args.asgire_python,
    }
    aa = None if args.aa == "off" else args.aa
    processes = process_pythons(pythons, aa)
    minutes = args.rounds * len(names) * len(processes) * args.time_per_workload / 60
    print(
        f"{args.rounds} rounds x {len(names)} workloads x {len(processes)} "
        f"processes x {args.time_per_workload:g} s: about {minutes:.1f} min",
        file=sys.stderr,
    )

    rounds: list[Round] = []
    for number in range(args.rounds):
        started = time.monotonic()
        print(f"round {number + 1}/{args.rounds} ", end="", file=sys.stderr)
        round_ = measure_round(processes, names, args.time_per_workload, number)
        print(f" {time.monotonic() - started:.0f} s", file=sys.stderr)
        provider = round_.environment["asgire"]["provider"]
        if number == 0 and provider != "asgire":
            print(
                f"compare: warning: {pythons['asgire']} imports asgiref from "
                f"the {provider} distribution, not asgire",
                file=sys.stderr,
            )
        rounds.append(round_)

    settings = {"seconds": args.time_per_workload, "pin": args.pin}
    if args.save:
        data = {
            "python": rounds[0].environment["asgire"]["python"],
            "names": names,
            "aa": aa,
            **settings,
            "rounds": [dataclasses.asdict(r) for r in rounds],
        }
        args.save.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    rows, all_met = summarise(rounds, names, aa)
    interpreter = Path(sys.executable).name
    command = " ".join([interpreter, "benchmarks/compare.py", *sys.argv[1:]])
    print(describe(rounds, settings))
    print(f"Command: `{command}`" if args.markdown else f"Command: {command}")
    print()
    print(render_markdown(rows) if args.markdown else render_text(rows))
    print()
    print(stability(rounds, names, aa))
    return 1 if args.check and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
