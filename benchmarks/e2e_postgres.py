"""Requests per second and latency of a Django view doing one PostgreSQL query,
served by Uvicorn: upstream asgiref 3.13.0 against asgire with reusable
request threads off and on, with CONN_MAX_AGE 0 and 60.

    .integration/venv-3.12/bin/python benchmarks/e2e_postgres.py [--rounds N]
        [--seconds S] [--connections C]

Runs in an environment that scripts/test-integration builds (Django, Uvicorn,
psycopg), with Debian's postgresql and wrk installed
(``scripts/ci-system-packages wrk``). It starts a throwaway PostgreSQL and,
per configuration and round, a fresh server (``tests/integration/project``'s
``pg_site``), pinned to the first core, with wrk pinned to the second; the
configurations alternate within each round, so that all see the same machine.
Every response must be a 200. Prints, per configuration, the median over
rounds of requests/s, p50 and p99 latency, and of requests/s relative to
upstream with the same CONN_MAX_AGE, plus the connections PostgreSQL accepted
per request. A benchmark, not a test: nothing here is asserted on timings.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "tests" / "integration" / "project"
sys.path.insert(0, str(PROJECT))
# Imported by name: the harness lives with the integration suite.
harness: Any = importlib.import_module("harness")
# The end-to-end benchmark's wrk driver, which checks every response.
sys.path.insert(0, str(ROOT / "benchmarks" / "e2e"))
e2e: Any = importlib.import_module("run")

CONFIGURATIONS = [
    # (label, provider, CONN_MAX_AGE, DEMO_REQUEST_THREADS)
    ("upstream, CONN_MAX_AGE=0", "upstream", 0, None),
    ("asgire off, CONN_MAX_AGE=0", "asgire", 0, None),
    ("asgire on, CONN_MAX_AGE=0", "asgire", 0, ":60"),
    ("upstream, CONN_MAX_AGE=60", "upstream", 60, None),
    ("asgire off, CONN_MAX_AGE=60", "asgire", 60, None),
    ("asgire on, CONN_MAX_AGE=60", "asgire", 60, ":60"),
]


@dataclass
class Sample:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    connections: int


def _load(url: str, seconds: int, connections: int) -> Any:
    """A wrk run (``run.py``'s ``WrkRun``) in which every response was a 200."""
    done = e2e.run_wrk(url, None, seconds, connections)
    if not done.clean:
        raise RuntimeError(f"wrk saw failures: {done}")
    return done


def _pin(pid: int, cpu: int) -> None:
    """Keep process ``pid`` on one CPU: its threads now (those it starts
    later inherit it)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task), {cpu})


def measure(
    postgres: Any,
    provider: str,
    conn_max_age: int,
    request_threads: str | None,
    *,
    seconds: int,
    connections: int,
    upstream: Path,
    name: str,
) -> Sample:
    env = {
        "DJANGO_SETTINGS_MODULE": "pg_site.settings",
        "DEMO_PG_PORT": str(postgres.port),
        "DEMO_PG_APP": name,
        "DEMO_CONN_MAX_AGE": str(conn_max_age),
    }
    if provider == "upstream":
        env["PYTHONPATH"] = f"{upstream}:{PROJECT}"
    if request_threads is not None:
        env["DEMO_REQUEST_THREADS"] = request_threads
    workdir = Path(tempfile.mkdtemp(prefix="asgire-e2e-"))
    server = harness.start_server(
        "uvicorn", "pg_site.asgi:application", workdir, env=env
    )
    try:
        _pin(server.process.pid, 0)
        url = f"{server.url}/query/"
        _load(url, 3, connections)  # warm-up: imports, first connections
        before = postgres.connections_authorized(name)
        done = _load(url, seconds, connections)
        made = postgres.connections_authorized(name) - before
    except BaseException:
        print(server.log()[-4000:], file=sys.stderr)
        raise
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return Sample(done.rps, done.p50_ms, done.p99_ms, done.requests, made)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    bindir = harness.postgres_bindir()
    if bindir is None or shutil.which("wrk") is None:
        print("needs Debian's postgresql and wrk: scripts/ci-system-packages wrk")
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="asgire-e2e-"))
    wheels = ROOT / ".integration" / "wheels"
    os.environ.setdefault("ASGIRE_INTEGRATION_WHEELS", str(wheels))
    upstream = harness.unpack_upstream_asgiref(scratch / "upstream")
    postgres = harness.start_postgres(bindir, scratch / "postgres.log")
    samples: dict[str, list[Sample]] = {label: [] for label, *_ in CONFIGURATIONS}
    try:
        for round_ in range(args.rounds):
            for n, (label, provider, age, switch) in enumerate(CONFIGURATIONS):
                sample = measure(
                    postgres,
                    provider,
                    age,
                    switch,
                    seconds=args.seconds,
                    connections=args.connections,
                    upstream=upstream,
                    name=f"e2e-{round_}-{n}",
                )
                samples[label].append(sample)
                print(
                    f"round {round_ + 1} {label}: {sample.requests_per_s:.0f} req/s, "
                    f"p50 {sample.p50_ms:.2f} ms, p99 {sample.p99_ms:.2f} ms, "
                    f"{sample.connections} connections for {sample.requests} requests",
                    file=sys.stderr,
                )
                time.sleep(0.5)
    finally:
        postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"\n{args.connections} connections, {args.seconds:g} s per run, "
        f"medians of {args.rounds} rounds (Python {sys.version.split()[0]})\n"
    )
    print(
        "| configuration | requests/s | vs upstream | p50 ms | p99 ms | connections per request |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, _, age, _ in CONFIGURATIONS:
        runs = samples[label]
        base = samples[f"upstream, CONN_MAX_AGE={age}"]
        ratio = statistics.median(
            run.requests_per_s / ref.requests_per_s
            for run, ref in zip(runs, base, strict=True)
        )
        per_request = statistics.median(run.connections / run.requests for run in runs)
        print(
            f"| {label} | {statistics.median(r.requests_per_s for r in runs):.0f} "
            f"| {ratio:.2f}x "
            f"| {statistics.median(r.p50_ms for r in runs):.2f} "
            f"| {statistics.median(r.p99_ms for r in runs):.2f} "
            f"| {per_request:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
