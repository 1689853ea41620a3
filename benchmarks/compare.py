"""Compare asgire with upstream asgiref, workload by workload, in one run.

    uv run python benchmarks/compare.py [--rounds N] [--time-per-workload S]
                                        [--only NAME ...] [--markdown]

Builds (once, cached under .bench/) a virtual environment holding upstream
asgiref 3.13.0 for this interpreter's Python version, then runs the workloads
of src/asgire/bench.py in separate processes: upstream's environment and this
project's (the interpreter running this script), alternating which goes first
each round. Per workload it prints the median time per operation of each and
the median of the per-round ratios asgire / upstream, checked against the
performance targets. Ratios from one run are the figures to quote; absolute
times depend on the machine.

Exit codes: 0 when everything was measured (1 with --check if a target was
missed), 1 when a worker or a workload failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "src" / "asgire" / "bench.py"
UPSTREAM_VERSION = "3.13.0"

Side = Literal["upstream", "asgire"]
SIDES: tuple[Side, Side] = ("upstream", "asgire")


@dataclass(frozen=True)
class Target:
    """A ceiling on the median per-round ratio ``numerator / denominator``."""

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
    # Targets that compare two different measurements.
    Target(
        "s2a_sensitive / bare_hop (asgire)",
        1.5,
        ("asgire", "s2a_sensitive"),
        ("asgire", "bare_hop"),
    ),
    Target(
        "a2s_single_thread_context / upstream a2s_from_thread",
        0.12,
        ("asgire", "a2s_single_thread_context"),
        ("upstream", "a2s_from_thread"),
    ),
]

# One round: side -> the worker's JSON document.
Round = dict[Side, dict[str, Any]]


class CompareError(Exception):
    """A failure that ends the run with a message instead of a traceback."""


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


def _worker(python: Path, arguments: list[str], timeout: float) -> dict[str, Any]:
    # -I keeps src/asgire/ (the script's folder) and the working directory off
    # sys.path, so each interpreter imports only its own installed asgiref.
    command = [str(python), "-I", str(BENCH), *arguments]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise CompareError(
            f"worker timed out after {timeout:.0f} s: {python}"
        ) from None
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise CompareError(
            f"worker {python} exited {done.returncode}:\n{done.stderr.strip()}"
        ) from None


def _ratios(rounds: list[Round], target: Target) -> list[float]:
    ratios = []
    for round_ in rounds:
        top = _value(round_, *target.numerator)
        bottom = _value(round_, *target.denominator)
        if top is not None and bottom:
            ratios.append(top / bottom)
    return ratios


def _value(round_: Round, side: Side, workload: str) -> float | None:
    result = round_[side]["results"].get(workload, {})
    return result.get("value")


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "bytes":
        for suffix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if value >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value:.0f} B"
    for suffix, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value / 1e-9:.3g} ns"


@dataclass
class Row:
    label: str
    upstream: str
    asgire: str
    ratio: str
    spread: str
    target: str
    verdict: str


def _ratio_cells(rounds: list[Round], target: Target) -> tuple[str, str, bool | None]:
    """Median ratio, its range over rounds, and whether the target is met."""
    ratios = _ratios(rounds, target)
    if not ratios:
        return "n/a", "", None
    median = statistics.median(ratios)
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
    return f"{median:.2f}", spread, median <= target.limit


def summarise(rounds: list[Round], names: list[str]) -> tuple[list[Row], bool]:
    """Rows for the report, and whether every target that applies was met."""
    targets = {t.label: t for t in TARGETS}
    rows: list[Row] = []
    verdicts: list[bool | None] = []
    for name in names:
        medians: dict[Side, float | None] = {}
        unit = "s/op"
        for side in SIDES:
            results = [r[side]["results"].get(name, {}) for r in rounds]
            values = [r["value"] for r in results if "value" in r]
            medians[side] = statistics.median(values) if values else None
            unit = next((r["unit"] for r in results if "unit" in r), unit)
        target = targets.get(name)
        ratio, spread, met = _ratio_cells(rounds, target or _versus_upstream(name, 0))
        limit = verdict = ""
        if target is not None:
            verdicts.append(met)
            limit, verdict = f"<= {target.limit:g}", _verdict(met)
        upstream, asgire = (_format(medians[side], unit) for side in SIDES)
        rows.append(Row(name, upstream, asgire, ratio, spread, limit, verdict))
    for target in TARGETS:
        needed = {target.numerator[1], target.denominator[1]}
        if target.label in names or not needed <= set(names):
            continue
        ratio, spread, met = _ratio_cells(rounds, target)
        verdicts.append(met)
        rows.append(
            Row(
                target.label,
                "",
                "",
                ratio,
                spread,
                f"<= {target.limit:g}",
                _verdict(met),
            )
        )
    return rows, all(met is True for met in verdicts)


def _verdict(met: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[met]


def render_text(rows: list[Row]) -> str:
    header = Row("workload", "upstream", "asgire", "ratio", "range", "target", "")
    table = [header, *rows]
    columns = list(vars(header))
    widths = {c: max(len(getattr(r, c)) for r in table) for c in columns}
    lines = []
    for row in table:
        cells = [row.label.ljust(widths["label"])]
        cells += [getattr(row, c).rjust(widths[c]) for c in columns[1:-1]]
        cells.append(row.verdict)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_markdown(rows: list[Row]) -> str:
    lines = [
        "| workload | upstream 3.13.0 | asgire | ratio | range | target | |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        cells = [f"`{row.label}`" if " " not in row.label else row.label]
        cells += [row.upstream, row.asgire, row.ratio, row.spread]
        cells += [row.target.replace("<=", "≤"), row.verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(rounds: list[Round], args: argparse.Namespace) -> str:
    env = rounds[0]["asgire"]["environment"]
    upstream_env = rounds[0]["upstream"]["environment"]
    return (
        f"asgire {env['provider_version']} vs asgiref "
        f"{upstream_env['provider_version']}; {env['python_implementation']} "
        f"{env['python']} on {env['os']}, {env['cpu']} ({env['cores']} cores); "
        f"{len(rounds)} rounds, {args.time_per_workload:g} s per workload. "
        "Ratio: median over rounds of asgire / upstream (lower is better)."
    )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark asgire against upstream asgiref "
        f"{UPSTREAM_VERSION} (see benchmarks/README.md)."
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="A/B rounds to run (default: 5)"
    )
    parser.add_argument(
        "--time-per-workload",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds per workload per process (default: 1)",
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
        "--save", type=Path, metavar="FILE", help="also write every round's raw JSON"
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
        print(f"compare: {exc}", file=sys.stderr)
        return 1


def compare(args: argparse.Namespace) -> int:
    pythons: dict[Side, Path] = {
        "upstream": upstream_python(args.rebuild),
        "asgire": args.asgire_python,
    }
    listing = _worker(pythons["upstream"], ["--list", "--json"], timeout=60)
    names = list(listing)
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            raise CompareError(
                f"unknown workloads: {', '.join(unknown)} (known: {', '.join(names)})"
            )
        names = [name for name in names if name in args.only]
    worker_arguments = ["--json", "--quiet", "--only", *names]
    worker_arguments += ["--seconds", str(args.time_per_workload)]
    # Generous: calibration, the memory workload and a loaded machine all add.
    timeout = 120 + 5 * args.time_per_workload * len(names)
    print(
        f"{args.rounds} rounds x 2 processes x {len(names)} workloads x "
        f"{args.time_per_workload:g} s: about "
        f"{args.rounds * 2 * len(names) * args.time_per_workload / 60:.1f} min",
        file=sys.stderr,
    )

    rounds: list[Round] = []
    for number in range(args.rounds):
        # Alternate who goes first, so drift in machine load favours neither.
        order = SIDES if number % 2 == 0 else SIDES[::-1]
        round_: Round = {}
        for side in order:
            started = time.monotonic()
            print(f"round {number + 1}/{args.rounds}: {side} ...", file=sys.stderr)
            round_[side] = _worker(pythons[side], worker_arguments, timeout)
            elapsed = time.monotonic() - started
            print(
                f"round {number + 1}/{args.rounds}: {side} {elapsed:.1f} s",
                file=sys.stderr,
            )
        _check_round(round_)
        rounds.append(round_)
        provider = round_["asgire"]["environment"]["provider"]
        if number == 0 and provider != "asgire":
            print(
                f"compare: warning: {pythons['asgire']} imports asgiref from "
                f"the {provider} distribution, not asgire",
                file=sys.stderr,
            )

    if args.save:
        args.save.write_text(json.dumps(rounds, indent=2) + "\n", encoding="utf-8")
    rows, all_met = summarise(rounds, names)
    if args.markdown:
        print(describe(rounds, args))
        print()
        print(render_markdown(rows))
    else:
        print(describe(rounds, args))
        print()
        print(render_text(rows))
    return 1 if args.check and not all_met else 0


def _check_round(round_: Round) -> None:
    errors = [
        f"{side} {name}: {result['error']}"
        for side in SIDES
        for name, result in round_[side]["results"].items()
        if "error" in result
    ]
    if errors:
        raise CompareError("workloads failed:\n" + "\n".join(errors))


if __name__ == "__main__":
    sys.exit(main())
