"""The end-to-end benchmark's Django project (benchmarks/e2e) boots on asgire
and answers every view right, and its crossing count works: the benchmark
itself is timed by hand, never in CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "e2e" / "run.py"


def test_benchmark_project_answers_every_view_on_asgire() -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "--smoke"],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["problems"] == []
    crossings = report["crossings"]
    assert set(crossings) == {"sync", "async-orm", "async", "sync-middleware"}
    # Each view crosses at least once (the signals, the view, closing the
    # response); the five queries and the middleware add to the plain views'.
    assert all(count > 0 for count in crossings.values()), crossings
    assert crossings["async-orm"] > crossings["async"]
    assert crossings["sync-middleware"] > crossings["sync"]
