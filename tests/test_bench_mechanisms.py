"""benchmarks/mechanisms.py: the A/B of each speed mechanism."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# Both sides of the A/B are asgire: nothing here concerns upstream.
pytestmark = pytest.mark.asgire_only

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "src" / "asgire" / "bench.py"


@pytest.fixture
def mechanisms(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/mechanisms.py, which imports the scripts beside it."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    names = ("compare", "instructions", "mechanisms")
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module("mechanisms")
    for name in names:
        monkeypatch.delitem(sys.modules, name)
    return module


# Each switch, run in a fresh process before its workloads: it must import,
# and the workloads must still give the right answers with the mechanism off.
_RUN_WITH_SWITCH = """\
import runpy, sys
exec(sys.argv[1])
bench = runpy.run_path(sys.argv[2])
for name in sys.argv[3:]:
    bench["WORKLOADS"][name].run(3)
"""


@pytest.mark.timeout(120)
def test_every_switch_leaves_its_workloads_working(mechanisms: ModuleType) -> None:
    for mechanism in mechanisms.MECHANISMS:
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                "-c",
                _RUN_WITH_SWITCH,
                f"{mechanism.base}\n{mechanism.off}",
                str(BENCH),
                *mechanism.workloads,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (mechanism.name, done.stderr)


def test_a_mechanism_pays_by_clock_beyond_noise_or_by_instructions(
    mechanisms: ModuleType,
) -> None:
    def result(**figures: float) -> Any:
        return mechanisms.Result("m", "w", **figures)

    assert result(clock=0.94, noise=0.02).pays()
    assert not result(clock=0.94, noise=0.08).pays()
    assert not result(clock=0.96, noise=0.0).pays()
    assert result(instructions_on=89.0, instructions_off=100.0).pays()
    assert not result(instructions_on=91.0, instructions_off=100.0).pays()
    assert result().pays() is None


def test_instructions_are_counted_once_per_switch_and_workload(
    mechanisms: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: list[tuple[str, str]] = []

    def count_side(python: Path, name: str, prelude: str) -> float:
        counted.append((prelude, name))
        return 50.0 if "off" in prelude else 40.0

    monkeypatch.setattr(mechanisms, "count_side", count_side)
    chosen = [
        mechanisms.Mechanism("a", "off_a = 1", ("w1", "w2")),
        mechanisms.Mechanism("b", "off_b = 1", ("w2",)),
    ]
    counts = mechanisms.count_instructions(chosen, Path(sys.executable), 2, print)
    # The "on" side of w2 is shared by both mechanisms.
    assert len(counted) == len(set(counted)) == 5
    assert counts == {
        ("a", "w1"): (40.0, 50.0),
        ("a", "w2"): (40.0, 50.0),
        ("b", "w2"): (40.0, 50.0),
    }


@pytest.mark.timeout(60)
def test_the_clock_compares_on_with_off_and_an_on_twin(
    mechanisms: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    measure_round = mechanisms.measure_round
    preludes_seen: list[dict[str, str]] = []

    def recording(*arguments: Any) -> Any:
        preludes_seen.append(arguments[-1])
        return measure_round(*arguments)

    monkeypatch.setattr(mechanisms, "measure_round", recording)
    mechanism = mechanisms.Mechanism("noop", "x = 1", ("build_a2s",), base="y = 2")
    (found,) = mechanisms.measure_clock(
        mechanism, Path(sys.executable), rounds=1, seconds=0.05
    ).values()
    assert preludes_seen == [{"on": "y = 2", "twin": "y = 2", "off": "y = 2\nx = 1"}]
    assert found.clock > 0
    assert found.clock_range[0] == found.clock_range[1] == found.clock


def test_the_table_ends_with_each_verdict(mechanisms: ModuleType) -> None:
    results = [
        mechanisms.Result("fast", "w1", clock=1.0, noise=0.01),
        mechanisms.Result("fast", "w2", instructions_on=80.0, instructions_off=100.0),
        mechanisms.Result("slow", "w1", clock=0.99, clock_range=(0.98, 1.0)),
    ]
    table = mechanisms.render(results, ["cache"])
    assert table.splitlines()[-3:] == [
        "fast: pays (w2)",
        "slow: does not pay here",
        "cache: inactive on this Python",
    ]
    assert "0.800" in table


def test_a_failed_count_leaves_the_others_standing(
    mechanisms: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def count_side(python: Path, name: str, prelude: str) -> float:
        if name == "w1" and prelude:
            raise RuntimeError("valgrind crashed")
        return 40.0

    monkeypatch.setattr(mechanisms, "count_side", count_side)
    reported: list[str] = []
    chosen = [mechanisms.Mechanism("a", "off_a = 1", ("w1", "w2"))]
    counts = mechanisms.count_instructions(
        chosen, Path(sys.executable), 1, reported.append
    )
    assert counts["a", "w2"] == (40.0, 40.0)
    on, off = counts["a", "w1"]
    result = mechanisms.Result("a", "w1", instructions_on=on, instructions_off=off)
    assert result.instructions is None
    assert any("valgrind crashed" in line for line in reported)
