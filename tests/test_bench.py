"""The benchmark workloads, ``python -m asgire bench`` and the comparison report.

Only shapes and sanity are checked here, never speed.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import dataclasses
import importlib.metadata
import importlib.util
import io
import json
import math
import platform
import shutil
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

bench = pytest.importorskip("asgire.bench")

pytestmark = pytest.mark.asgire_only

REPO = Path(__file__).resolve().parent.parent
TIMED = [name for name, w in bench.WORKLOADS.items() if w.kind == "time"]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("name", TIMED)
def test_timed_workload_returns_a_duration(name: str) -> None:
    elapsed = bench.WORKLOADS[name].run(3)
    assert math.isfinite(elapsed)
    assert elapsed > 0


@pytest.mark.parametrize("name", ["least_hop", "least_hop_back"])
def test_least_hops_post_through_call_soon_threadsafe_without_eventfd(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted: list[object] = []
    original = asyncio.BaseEventLoop.call_soon_threadsafe

    def counting(self: asyncio.BaseEventLoop, *args: Any, **kwargs: Any) -> Any:
        posted.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(bench, "_HAS_EVENTFD", False)
    monkeypatch.setattr(asyncio.BaseEventLoop, "call_soon_threadsafe", counting)
    assert bench.WORKLOADS[name].run(3) > 0
    assert len(posted) >= 3


def test_pending_calls_peak_grows_with_the_number_of_calls() -> None:
    workload = bench.WORKLOADS["pending_10k_memory"]
    assert workload.kind == "memory"
    few, many = workload.run(50), workload.run(500)
    assert 0 < few < many


def test_measure_reports_median_time_per_op() -> None:
    result = bench.measure(bench.WORKLOADS["local_get"], 0.02)
    assert result["unit"] == "s/op"
    assert result["batches"] >= 3
    # Every batch runs whole units of ten reads.
    assert result["ops"] % (10 * result["batches"]) == 0
    assert math.isfinite(result["value"])
    assert result["value"] > 0


def test_measure_all_document_is_json_and_keeps_going_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(units: int) -> float:
        raise ValueError("no luck")

    monkeypatch.setitem(
        bench.WORKLOADS, "broken", bench.Workload("broken", "raises", broken)
    )
    seen: list[tuple[int, int, str]] = []
    document = bench.measure_all(
        ["broken", "build_s2a"], 0.01, lambda *step: seen.append(step)
    )
    document = json.loads(json.dumps(document))
    assert document["schema"] == bench.SCHEMA_VERSION
    assert document["seconds_per_workload"] == 0.01
    assert document["results"]["broken"] == {"error": "ValueError: no luck"}
    assert document["results"]["build_s2a"]["value"] > 0
    assert seen == [(0, 2, "broken"), (1, 2, "build_s2a"), (2, 2, "")]
    env = document["environment"]
    assert env["provider"] == "asgire"
    assert env["cores"] >= 1
    assert {"asgiref_version", "python", "cpu", "os"} <= set(env)


def test_run_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse("--json", "--only", "build_s2a", "local_set", "--seconds", "0.02")
    assert bench.run(args) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert list(document["results"]) == ["local_set", "build_s2a"]
    assert "measuring [1/2] local_set" in captured.err


def test_run_prints_a_table_with_floor_ratios(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _parse("--quiet", "--only", "bare_hop", "s2a_sensitive", "--seconds", "0.02")
    assert bench.run(args) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0].startswith("asgiref ")
    header = next(line for line in lines if line.startswith("workload"))
    assert "x floor" in header
    row = next(line for line in lines if line.startswith("s2a_sensitive"))
    ratio = row.split()[4]
    assert float(ratio) > 0


def test_run_fails_when_a_workload_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(units: int) -> float:
        raise RuntimeError("boom")

    monkeypatch.setitem(
        bench.WORKLOADS, "build_s2a", bench.Workload("build_s2a", "raises", broken)
    )
    assert bench.run(_parse("--quiet", "--only", "build_s2a", "--seconds", "0.01")) == 1
    assert "RuntimeError: boom" in capsys.readouterr().out


def test_default_selection_is_the_quick_set() -> None:
    names = bench.selected_workloads(_parse())
    assert "s2a_sensitive" in names
    assert "pending_10k_memory" not in names
    assert bench.selected_workloads(_parse("--all")) == list(bench.WORKLOADS)


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.run(_parse("--list", "--json")) == 0
    listing = json.loads(capsys.readouterr().out)
    assert list(listing) == list(bench.WORKLOADS)
    assert listing["pending_10k_memory"]["kind"] == "memory"


@pytest.mark.parametrize(
    "argv", [["--seconds", "0"], ["--seconds", "soon"], ["--only", "nope"]]
)
def test_bad_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _parse(*argv)
    assert exited.value.code == 2


def test_bench_module_imports_asgire_only_inside_functions() -> None:
    # The comparison runs this file under upstream asgiref, without asgire:
    # importing it must not need asgire.
    tree = ast.parse(Path(bench.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "asgire" not in imported
    assert "asgiref" in imported


def test_runs_by_path_where_asgire_cannot_be_imported() -> None:
    options = ["--json", "--quiet", "--only", "local_get", "--seconds", "0.02"]
    script = (
        "import runpy, sys\n"
        "sys.modules['asgire'] = None  # as in upstream's environment\n"
        f"sys.argv = [{bench.__file__!r}, *{options!r}]\n"
        f"runpy.run_path({bench.__file__!r}, run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["results"]["local_get"]["value"] > 0
    # Without asgire's check, whatever is imported counts as upstream's.
    assert document["environment"]["provider"] == "asgiref"


def test_runs_as_a_script_by_path() -> None:
    options = ["--json", "--quiet", "--only", "local_get", "--seconds", "0.02"]
    done = subprocess.run(
        [sys.executable, "-I", bench.__file__, *options],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"]["local_get"]["value"] > 0


def _load_compare() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_compare", REPO / "benchmarks" / "compare.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _round(compare: ModuleType, **values: tuple[float, ...]) -> Any:
    """A round whose processes each measured one batch per workload:
    ``name=(upstream, asgire)`` or ``name=(upstream, asgire, twin)``."""
    round_ = compare.Round()
    for name, figures in values.items():
        for process, value in zip(
            ("upstream", "asgire", "twin"), figures, strict=False
        ):
            batches = round_.batches.setdefault(process, {})
            batches[name] = [compare.Batch(value)]
    return round_


def test_compare_summary_uses_the_median_of_per_round_ratios() -> None:
    compare = _load_compare()
    rounds = [
        _round(compare, s2a_sensitive=(10e-6, 4e-6), bare_hop=(5e-6, 3e-6)),
        _round(compare, s2a_sensitive=(20e-6, 12e-6), bare_hop=(5e-6, 4e-6)),
        _round(compare, s2a_sensitive=(10e-6, 5e-6), bare_hop=(5e-6, 4e-6)),
    ]
    names = ["bare_hop", "s2a_sensitive"]
    rows, all_met = compare.summarise(rounds, names)
    by_label = {row.label: row for row in rows}
    # The ratio of each round (0.4, 0.6, 0.5), not the ratio of the medians
    # over rounds (5 / 10).
    sensitive = by_label["s2a_sensitive"]
    assert (sensitive.ratio, sensitive.spread) == ("0.50", "0.40-0.60")
    assert (sensitive.target, sensitive.verdict) == ("<= 0.45", "FAIL")
    assert (sensitive.upstream, sensitive.asgire) == ("10 us", "5 us")
    assert by_label["bare_hop"].target == ""
    # asgire against its own floor, round by round: 4/3, 12/4, 5/4.
    floor = by_label["s2a_sensitive / bare_hop (asgire)"]
    assert (floor.ratio, floor.verdict) == ("1.33", "pass")
    assert not all_met
    assert "| `s2a_sensitive` | 10 us | 5 us | 0.50 |" in compare.render_markdown(rows)
    assert compare.render_text(rows).splitlines()[0].startswith("workload")


def test_compare_takes_a_low_percentile_of_each_processs_batches() -> None:
    compare = _load_compare()
    assert compare.low_percentile([5.0, 1.0, 3.0, 2.0, 4.0], 25) == 2.0
    assert compare.low_percentile([1.0, 2.0], 20) == pytest.approx(1.2)
    assert compare.low_percentile([7.0], 20) == 7.0
    round_ = compare.Round()
    # Half the batches in the slow mode, where the median would land
    # between the two modes, leave the figure in the fast one.
    values = [90e-6, 20e-6] * 5
    round_.batches["asgire"] = {"bare_hop": [compare.Batch(v) for v in values]}
    assert round_.figure("asgire", "bare_hop") == 20e-6
    assert round_.figure("upstream", "bare_hop") is None


def test_compare_judges_against_the_a_a_noise_floor() -> None:
    compare = _load_compare()
    rounds = [
        _round(compare, s2a_sensitive=(10e-6, 4.4e-6, 11e-6)),
        _round(compare, s2a_sensitive=(10e-6, 4.6e-6, 10.8e-6)),
        _round(compare, s2a_sensitive=(10e-6, 4.5e-6, 9e-6)),
    ]
    # The twin's ratios are 1.1, 1.08 and 0.9: the median strays 8% from 1.
    assert compare.twin_ratios(rounds, "s2a_sensitive", "upstream") == pytest.approx(
        [1.1, 1.08, 0.9]
    )
    assert compare.noise_floor(rounds, ["s2a_sensitive"], "upstream") == (
        pytest.approx(0.08)
    )
    assert compare.noise_floor(rounds, ["s2a_sensitive"], None) is None
    rows, all_met = compare.summarise(rounds, ["s2a_sensitive"], "upstream")
    # 0.45 against a target of 0.45 is a pass, but within the noise.
    assert (rows[0].ratio, rows[0].aa, rows[0].verdict) == ("0.45", "1.08", "pass?")
    assert not all_met
    assert "| 1.08 | ≤ 0.45 | pass? |" in compare.render_markdown(rows)
    report = compare.stability(rounds, ["s2a_sensitive"], "upstream")
    assert "within 5% of 1 for 0 of 1 timed workloads" in report
    assert "worst s2a_sensitive (8% off); single rounds 0.90-1.10" in report
    assert compare.stability(rounds, ["s2a_sensitive"], None).endswith("(--aa off).")
    # A quiet A/A still leaves a floor of MIN_NOISE.
    quiet = [_round(compare, s2a_sensitive=(10e-6, 4e-6, 10e-6))]
    assert compare.noise_floor(quiet, ["s2a_sensitive"], "upstream") == 0.02
    assert compare.judge(0.2, 0.3, 0.02) == "pass"
    assert compare.judge(0.5, 0.3, 0.02) == "FAIL"
    assert compare.judge(0.305, 0.3, 0.02) == "FAIL?"


def test_compare_rotates_the_order_of_the_processes() -> None:
    compare = _load_compare()
    cycle = compare.orders(["a", "b", "c"], start=1)
    taken = [next(cycle) for _ in range(6)]
    assert taken[0] == ("a", "c", "b")
    # Over a full cycle each process is first, middle and last twice.
    for process in "abc":
        positions = sorted(order.index(process) for order in taken)
        assert positions == [0, 0, 1, 1, 2, 2]


def test_compare_keeps_one_upstream_environment_per_interpreter_build() -> None:
    compare = _load_compare()
    # 3.13 and 3.13t differ.
    tag = compare.interpreter_tag()
    assert tag.startswith(sys.implementation.name + platform.python_version())


def test_compare_sets_the_cheapest_hop_against_upstreams_crossing() -> None:
    compare = _load_compare()
    rounds = [
        _round(compare, s2a_sensitive=(10e-6, 4e-6), least_hop=(5e-6, 9e-6)),
        _round(compare, s2a_sensitive=(20e-6, 4e-6), least_hop=(5e-6, 9e-6)),
        _round(compare, s2a_sensitive=(10e-6, 4e-6), least_hop=(6e-6, 9e-6)),
    ]
    rows, all_met = compare.summarise(rounds, ["least_hop", "s2a_sensitive"])
    floor = {row.label: row for row in rows}["least_hop / upstream s2a_sensitive"]
    # Upstream's own process over upstream's crossing, round by round: the
    # asgire process's hop (9 us) does not enter; shown, never judged.
    assert (floor.ratio, floor.spread) == ("0.50", "0.25-0.60")
    assert (floor.target, floor.verdict) == ("<= 0.45", "")
    assert all_met
    # Without the floor's own workload measured there is no row.
    rows, _ = compare.summarise(rounds, ["s2a_sensitive"])
    assert [row.label for row in rows] == ["s2a_sensitive"]


def test_compare_table_has_a_column_per_python(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compare = _load_compare()
    runs = []
    for python, asgire in (("3.11.7", 4e-6), ("3.15.2", 5e-6)):
        rounds = [_round(compare, s2a_sensitive=(10e-6, asgire, 10e-6))]
        rounds[0].environment["asgire"] = {
            "provider": "asgire",
            "provider_version": "0.1.0",
            "python_implementation": "CPython",
            "python": python,
            "os": "Linux x86_64",
            "cpu": "a CPU",
            "cores": 2,
        }
        data = {
            "python": python,
            "names": ["s2a_sensitive"],
            "aa": "upstream",
            "rounds": [dataclasses.asdict(r) for r in rounds],
        }
        saved = tmp_path / f"{python}.json"
        saved.write_text(json.dumps(data), encoding="utf-8")
        runs.append(saved)
    assert compare.main(["--table", *map(str, runs)]) == 0
    described, _, *table = capsys.readouterr().out.splitlines()
    assert described.startswith("asgire 0.1.0 vs asgiref 3.13.0 on Linux x86_64")
    assert "CPython 3.15.2: 1 rounds, 1 s per workload and process" in described
    assert table[0] == "| workload | target | Python 3.11.7 | Python 3.15.2 |"
    assert table[2] == "| `s2a_sensitive` | ≤ 0.45 | 0.40 | 0.50 FAIL |"
    assert table[-1].endswith(
        ": Python 3.11.7 2% (worst 2%, s2a_sensitive); Python 3.15.2 2% "
        "(worst 2%, s2a_sensitive)."
    )


@pytest.mark.timeout(60)
def test_compare_measures_every_process_in_turn() -> None:
    compare = _load_compare()
    python = Path(sys.executable)
    processes = compare.process_pythons(
        {"upstream": python, "asgire": python}, "asgire"
    )
    assert list(processes) == ["upstream", "asgire", "twin"]
    round_ = compare.measure_round(processes, ["build_a2s"], 0.05, 0)
    counts = {len(by["build_a2s"]) for by in round_.batches.values()}
    # As many batches from each, at least the minimum.
    assert len(counts) == 1
    assert counts.pop() >= compare.MIN_BATCHES
    assert round_.environment["twin"]["provider"] == "asgire"
    assert round_.figure("twin", "build_a2s") > 0


def test_compare_reports_each_sides_switches_and_the_cpu_ratio() -> None:
    compare = _load_compare()
    rounds = []
    measured = [
        ((8.0, 2.0), (10e-6, 5e-6)),
        ((9.0, 2.0), (10e-6, 2e-6)),
        ((11.0, 3.0), (20e-6, 8e-6)),
    ]
    for switches, cpu in measured:
        round_ = _round(compare, s2a_sensitive=(30e-6, 15e-6))
        for side, side_switches, side_cpu in zip(
            ("upstream", "asgire"), switches, cpu, strict=True
        ):
            batch = round_.batches[side]["s2a_sensitive"][0]
            batch.switches, batch.cpu = side_switches, side_cpu
        rounds.append(round_)
    rows, _ = compare.summarise(rounds, ["s2a_sensitive"])
    # Each side's median switches; the median of the CPU ratios of the
    # rounds (0.5, 0.2, 0.4), not the ratio of the medians (0.5).
    assert (rows[0].switches, rows[0].cpu_ratio) == ("9.00 / 2.00", "0.40")
    markdown = compare.render_markdown(rows).splitlines()
    assert markdown[-1].endswith("| 9.00 / 2.00 | 0.40 |")
    header, row = compare.render_text(rows).splitlines()
    assert header.endswith("switches  CPU ratio")
    assert row.split()[-4:] == ["9.00", "/", "2.00", "0.40"]
    # Not measured (switches on Windows): no figure rather than a made-up one.
    rows, _ = compare.summarise(
        [_round(compare, s2a_sensitive=(10e-6, 5e-6))], ["s2a_sensitive"]
    )
    assert (rows[0].switches, rows[0].cpu_ratio) == ("", "")


def test_serve_answers_calibrate_and_run_requests() -> None:
    requests = io.StringIO(
        '{"op": "calibrate", "workload": "build_s2a", "seconds": 0.005}\n'
        '{"op": "run", "workload": "build_s2a", "units": 7}\n'
        '{"op": "run", "workload": "nope", "units": 1}\n'
    )
    replies = io.StringIO()
    bench.serve(requests, replies)
    environment, calibrated, ran, failed = map(
        json.loads, replies.getvalue().splitlines()
    )
    assert environment["environment"]["provider"] == "asgire"
    assert calibrated["units"] >= 1
    assert ran["value"] > 0
    assert failed == {"error": "KeyError: 'nope'"}


def test_serve_replies_seconds_per_operation_and_peak_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def two_seconds_a_unit(units: int) -> float:
        return 2.0 * units

    def a_kilobyte_a_unit(units: int) -> float:
        return 1000.0 * units

    timed = bench.Workload("timed", "", two_seconds_a_unit, ops_per_unit=4)
    memory = bench.Workload("memory", "", a_kilobyte_a_unit, kind="memory")
    monkeypatch.setitem(bench.WORKLOADS, "timed", timed)
    monkeypatch.setitem(bench.WORKLOADS, "memory", memory)
    requests = io.StringIO(
        '{"op": "run", "workload": "timed", "units": 5}\n'
        '{"op": "run", "workload": "memory", "units": 3}\n'
    )
    replies = io.StringIO()
    bench.serve(requests, replies)
    _, per_op, peak = map(json.loads, replies.getvalue().splitlines())
    # 5 units of 4 operations in 10 s.
    assert per_op["value"] == 0.5
    assert per_op["switches"] >= 0
    assert per_op["cpu"] >= 0
    assert peak == {"value": 3000.0, "switches": None, "cpu": None}


@pytest.mark.skipif(sys.platform == "win32", reason="counted with getrusage")
def test_batches_count_the_context_switches_of_each_operation() -> None:
    def sleep_each_unit(units: int) -> float:
        for _ in range(units):
            time.sleep(0.002)  # blocking: one voluntary context switch
        return 1.0

    sleepy = bench.Workload("sleepy", "", sleep_each_unit, ops_per_unit=2)
    switches = bench._batch(sleepy, 20).switches
    # Other threads of this process may add a few; none may be lost.
    assert switches is not None
    assert switches >= 0.5  # 20 sleeps over 40 operations
    result = bench.measure(sleepy, 0.05)
    assert result["switches_per_op"] >= 0.5
    table = bench.format_table(
        {"environment": bench.environment(), "results": {"sleepy": result}}
    )
    header = next(line for line in table.splitlines() if line.startswith("workload"))
    assert "switches" in header.split()


def test_batches_measure_the_cpu_time_of_each_operation() -> None:
    def burn_each_unit(units: int) -> float:
        for _ in range(units):
            done = time.process_time() + 0.002
            while time.process_time() < done:
                pass
        return 1.0

    burner = bench.Workload("burner", "", burn_each_unit, ops_per_unit=2)
    cpu = bench._batch(burner, 10).cpu
    assert cpu is not None
    assert cpu >= 0.001  # at least 2 ms of CPU for every 2 operations
    assert bench.measure(burner, 0.05)["cpu_per_op"] >= 0.001


class _ForgetfulLocal:
    """A Local that loses what is stored in it."""

    def __init__(self, thread_critical: bool = False) -> None:
        pass

    def __setattr__(self, name: str, value: object) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        return -1


@pytest.mark.parametrize("name", ["local_get", "local_set"])
def test_local_workloads_fail_when_the_local_loses_values(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench, "Local", _ForgetfulLocal)
    with pytest.raises(AssertionError, match="Local"):
        bench.WORKLOADS[name].run(2)


def test_pending_calls_peak_leaves_tracing_on_when_it_was_on() -> None:
    tracemalloc.start()
    try:
        assert bench.WORKLOADS["pending_10k_memory"].run(50) > 0
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()


def _delayed_sync_to_async(steps: int | None) -> Callable[..., Any]:
    """sync_to_async whose calls await ``steps`` times before reaching the
    executor, or never reach it (None)."""

    def wrap(func: Callable[[], Any], **options: Any) -> Callable[[], Any]:
        async def call() -> Any:
            for _ in range(5 if steps is None else steps):
                await asyncio.sleep(0)
            if steps is None:
                return None
            executor = options["executor"]
            return await asyncio.wrap_future(executor.submit(func))

        return call

    return wrap


def test_pending_calls_peak_waits_for_calls_that_take_a_few_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench, "sync_to_async", _delayed_sync_to_async(3))
    assert bench.WORKLOADS["pending_10k_memory"].run(50) > 0


def test_pending_calls_peak_fails_when_calls_never_reach_the_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench, "sync_to_async", _delayed_sync_to_async(None))
    with pytest.raises(RuntimeError, match=r"^only 0 of 50 calls reached"):
        bench.WORKLOADS["pending_10k_memory"].run(50)


def test_measure_reports_peak_bytes_for_the_memory_workload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench, "PENDING_CALLS", 100)
    workload = bench.WORKLOADS["pending_10k_memory"]
    assert bench.calibrate(workload, 1.0, 0.0) == 100
    result = bench.measure(workload, 1.0)
    assert result["unit"] == "bytes"
    assert result["calls"] == 100
    assert result["value"] > 0


@pytest.mark.parametrize("asgiref_version", [None, "3.13.0"])
@pytest.mark.parametrize(
    "cpuinfo", [None, "processor\t: 0\nflags\t\t: fpu\n"], ids=["no-proc", "no-model"]
)
def test_environment_under_upstream_without_a_cpu_model(
    asgiref_version: str | None,
    cpuinfo: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As when benchmarks/compare.py runs this file with upstream asgiref
    # (asgire not importable), on a system without /proc or whose
    # /proc/cpuinfo names no model (ARM).
    monkeypatch.setitem(sys.modules, "asgire", None)

    def version(name: str) -> str:
        if asgiref_version is None or name != "asgiref":
            raise importlib.metadata.PackageNotFoundError(name)
        return asgiref_version

    monkeypatch.setattr(importlib.metadata, "version", version)

    def fake_open(path: str, *args: Any, **kwargs: Any) -> io.StringIO:
        if cpuinfo is None:
            raise FileNotFoundError(path)
        return io.StringIO(cpuinfo)

    monkeypatch.setattr(bench, "open", fake_open, raising=False)
    env = bench.environment()
    assert env["provider"] == "asgiref"
    assert env["provider_version"] == (asgiref_version or "unknown")
    assert env["provider_caveat"] == ""
    assert env["cpu"] == (platform.processor() or platform.machine() or "unknown")
    assert bench.describe_provider(env) == f"upstream asgiref {env['provider_version']}"


def test_the_table_names_upstream_written_over_asgire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What `info` finds when upstream's files replaced asgire's: bench must
    # say it is timing upstream, not asgire.
    from asgire import info

    overwritten = info.Diagnosis(
        asgiref_dir=Path("/site/asgiref"),
        providers=(_installed("asgiref", "3.13.0"),),
        asgire=_installed("asgire", "3.13.0.post1"),
        upstream=(_installed("asgiref", "3.13.0"),),
        replaced=("asgiref/sync.py",),
        problems=("replaced",),
    )
    monkeypatch.setattr(info, "diagnose", lambda *args, **kwargs: overwritten)
    env = bench.environment()
    assert (env["provider"], env["provider_version"]) == ("asgiref", "3.13.0")
    header = bench.format_table({"environment": env, "results": {}}).splitlines()[0]
    assert header.startswith(
        "asgiref 3.13.0 provided by upstream asgiref 3.13.0 (asgire "
        "3.13.0.post1's files were overwritten: see `python -m asgire info`); "
    )


def _installed(name: str, version: str) -> Any:
    from asgire import info

    return info.Installed(name, version, Path("/site"), "pip", False, name)


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    show = bench._progress_printer(stream)
    show(0, 2, "local_get")
    show(2, 2, "")
    assert stream.getvalue() == (
        "\r" + "measuring [0/2] local_get".ljust(60) + "\r" + " " * 60 + "\r"
    )


def test_formatting_of_times_and_sizes() -> None:
    assert bench.format_time(2.5) == "2.5 s"
    assert bench.format_time(0.0123) == "12.3 ms"
    assert bench.format_time(4e-6) == "4 us"
    assert bench.format_time(7.5e-9) == "7.5 ns"
    assert bench.format_bytes(3 * 2**30) == "3 GiB"
    assert bench.format_bytes(1.5 * 2**20) == "1.5 MiB"
    assert bench.format_bytes(2048) == "2 KiB"
    assert bench.format_bytes(100) == "100 B"


def test_table_shows_memory_in_bytes() -> None:
    document = {
        "environment": bench.environment(),
        "results": {
            "pending_10k_memory": {"unit": "bytes", "value": 3 * 2**20, "calls": 1}
        },
    }
    lines = bench.format_table(document).splitlines()
    row = next(line for line in lines if line.startswith("pending_10k_memory"))
    assert row.split()[:3] == ["pending_10k_memory", "3", "MiB"]


def test_each_crossing_is_set_against_the_bare_hop_of_its_shape() -> None:
    def timed(value: float) -> dict[str, Any]:
        return {"unit": "s/op", "value": value, "switches_per_op": 2.0}

    results = {
        "bare_hop": timed(10e-6),
        "bare_hop_back": timed(20e-6),
        "s2a_sensitive": timed(30e-6),
        "a2s_to_outer_loop": timed(30e-6),
    }
    document = {"environment": bench.environment(), "results": results}
    lines = bench.format_table(document).splitlines()
    rows = [line.split() for line in lines]
    ratios = {row[0]: row[4] for row in rows if row[2:3] == ["us"]}
    assert ratios["s2a_sensitive"] == "3.00"
    assert ratios["a2s_to_outer_loop"] == "1.50"
    # Without its floor measured, a crossing gets no ratio.
    del results["bare_hop_back"]
    lines = bench.format_table(document).splitlines()
    row = next(line for line in lines if line.startswith("a2s_to_outer_loop"))
    # The blank ratio cell leaves the switch count next to the rate.
    assert row.split()[:5] == ["a2s_to_outer_loop", "30", "us", "33,333", "2.00"]


def test_table_leaves_switches_blank_where_they_were_not_counted() -> None:
    # As measured on Windows, which has no getrusage.
    result = {"unit": "s/op", "value": 2e-6, "switches_per_op": None}
    document = {"environment": bench.environment(), "results": {"local_get": result}}
    lines = bench.format_table(document).splitlines()
    row = next(line for line in lines if line.startswith("local_get"))
    assert row.split()[:4] == ["local_get", "2", "us", "500,000"]
    assert row.split()[4] == "Local"  # the description follows at once
    assert not any("switches" in line for line in lines)  # nor its legend


def test_list_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == next(iter(bench.WORKLOADS))
    assert any(line.split()[:2] == ["pending_10k_memory", "*"] for line in lines)
    assert lines[-1] == "* not run by default; use --all or --only"


def test_serve_from_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    replies = io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.setattr(sys, "stdout", replies)
    assert bench.main(["--serve"]) == 0
    (environment,) = map(json.loads, replies.getvalue().splitlines())
    assert environment["environment"]["provider"] == "asgire"


@pytest.fixture
def instructions(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/instructions.py, which imports compare.py beside it."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    for name in ("compare", "instructions"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module("instructions")
    for name in ("compare", "instructions"):
        monkeypatch.delitem(sys.modules, name)
    return module


def test_instructions_per_op_cancel_start_up(instructions: ModuleType) -> None:
    # local_get does ten reads per unit: 200 units in the short run, 1,200 in
    # the long one, so 10,000 more reads for 50,000 more instructions.
    assert instructions.short_run_units("local_get") == 200
    assert instructions.short_run_units("s2a_gather_100") == 2
    assert instructions.short_run_units("s2a_sensitive") == 200
    assert instructions.per_operation("local_get", 1_000_000, 1_050_000) == 5.0


def test_instructions_reads_callgrinds_last_total(instructions: ModuleType) -> None:
    report = "==1== Callgrind\n==1== Collected : 12\n==1==\n==1== Collected : 345\n"
    assert instructions.callgrind_total(report) == 345
    with pytest.raises(RuntimeError, match="no instruction count"):
        instructions.callgrind_total("valgrind: command not found")


def test_instructions_table(instructions: ModuleType) -> None:
    counts = [
        instructions.Count("s2a_sensitive", 200_000.0, 70_000.0),
        instructions.Count("bare_hop", 60_000.0, 60_000.0),
    ]
    text = instructions.render(counts, markdown=False).splitlines()
    assert text[0].split() == [
        "workload",
        "upstream",
        "asgire",
        "ratio",
        "clock",
        "target",
    ]
    assert text[1].split() == [
        "s2a_sensitive",
        "200,000",
        "70,000",
        "0.35",
        "≤",
        "0.45",
    ]
    assert text[2].split() == ["bare_hop", "60,000", "60,000", "1.00"]
    markdown = instructions.render(counts, markdown=True).splitlines()
    assert markdown[2] == "| `s2a_sensitive` | 200,000 | 70,000 | 0.35 | ≤ 0.45 |"


def test_instructions_rejects_unknown_workloads(
    instructions: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        instructions.parse_arguments(["--only", "no_such_workload"])
    assert exit_.value.code == 2
    assert "no_such_workload" in capsys.readouterr().err


@pytest.mark.skipif(not shutil.which("valgrind"), reason="needs valgrind")
@pytest.mark.timeout(180)
def test_instructions_counts_a_workload_under_valgrind(
    instructions: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under `coverage run` the child would be traced too, several times over
    # the count: what is measured here is the count without a tracer.
    monkeypatch.delenv("COVERAGE_PROCESS_START", raising=False)
    monkeypatch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)
    # A Local read is about 2,600 instructions with its share of the loop
    # around it (3.11 to 3.13; 3,600 on 3.10). The bounds are within 4x of
    # that either way, so that losing the ten reads per unit, or counting
    # them twice over, shows.
    per_op = instructions.count_side(Path(sys.executable), "local_get")
    assert 600 < per_op < 10_000


def test_only_may_be_repeated() -> None:
    args = _parse("--only", "local_set", "--only", "bare_hop", "local_get")
    assert bench.selected_workloads(args) == ["bare_hop", "local_get", "local_set"]


def test_the_table_leaves_out_what_would_mislead() -> None:
    def timed(value: float, switches: float) -> dict[str, Any]:
        return {"unit": "s/op", "value": value, "switches_per_op": switches}

    results = {
        "bare_hop": timed(20e-6, 2.0),
        "s2a_gather_100": timed(10e-6, 0.6),
        "local_get": timed(100e-9, 0.01),  # another thread's wake-up, not its own
    }
    document = {"environment": bench.environment(), "results": results}
    lines = bench.format_table(document).splitlines()
    rows = {line.split()[0]: line.split() for line in lines[3:6]}
    # Overlapping calls are not set against a lone hop; their switches stay.
    assert rows["s2a_gather_100"][:5] == [
        "s2a_gather_100",
        "10",
        "us",
        "100,000",
        "0.60",
    ]
    # A Local read makes no hop: no switch count to puzzle over.
    assert rows["local_get"][:5] == ["local_get", "100", "ns", "10,000,000", "Local"]
    legend = "\n".join(lines[6:])
    assert "blank where the workload stays in one thread" in legend
    assert "s2a_gather_100: the time per call of 100 made at once" in legend
    assert lines[-1].endswith("python -m asgire bench --compare")
