"""End to end: a small Django project served by real ASGI servers, driven by
wrk, on asgire and on upstream asgiref 3.13.0 side by side.

    uv run python benchmarks/e2e/run.py [--rounds N] [--duration S] [--slice S]
        [--servers uvicorn daphne uvicorn-uvloop] [--views NAME ...]
        [--python 3.12] [--connections N] [--markdown]
    python benchmarks/e2e/run.py --report .bench/e2e/last-run.json
    python benchmarks/e2e/run.py --smoke

Builds (cached under .bench/e2e/) two virtual environments with the same
Django, Uvicorn (httptools) and Daphne: one with asgire built from this
checkout (rebuilt every run), one with upstream asgiref. Each round starts,
for each server and middleware set, the upstream server and the asgire one
side by side, both pinned to CPU 0, warms each view up, then drives each view
with wrk pinned to CPU 1, in turns of --slice seconds alternating between the
two servers (A B B A ..., which side opens alternates by round) until each had
--duration seconds. wrk checks every response: status 200 and the exact body.
Crossings per request are counted once, on asgire, with ``asgire.trace``'s
middleware.
Then a sync job (--calls ``async_to_sync`` calls to a trivial coroutine and,
where redis-server is installed, Channels' Redis ``group_send``) is timed on
both sides, without and with ``AsyncSingleThreadContext``.

Per view the report gives each side's median requests/s and p50/p99 latency
over rounds, and the median and range over rounds of asgire's requests/s over
upstream's (higher is better); per job, the median seconds and the ratio
asgire / upstream (lower is better). Raw figures go to .bench/e2e/last-run.json.

--smoke is a quick check to make before a long run, or after changing the
project: it boots the project on this interpreter (which must have Django,
Uvicorn and asgire) and checks one request per view and the trace's crossing
counts, without timing anything.

Needs wrk and taskset (Debian: apt-get install wrk util-linux). Exit status:
0 when every run completed with every response right, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROJECT = HERE / "project"
CACHE = REPO / ".bench" / "e2e"
UPSTREAM_VERSION = "3.13.0"
SIDES = ("upstream", "asgire")
STARTUP_LIMIT = 60.0

sys.path.append(str(REPO / "tests" / "integration" / "project"))
# Imported by name: the harness lives with the integration suite.
harness: Any = importlib.import_module("harness")


@dataclass(frozen=True)
class View:
    path: str
    middleware: str  # "none" or "default", see project/benchsite/settings.py
    body: str
    what: str


VIEWS = {
    "sync": View("/sync/", "none", "hello user1", "sync view, one query"),
    "async-orm": View(
        "/async-orm/",
        "none",
        "hello user1 user2 user3 user4 user5",
        "async view, five async ORM queries",
    ),
    "async": View("/async/", "none", "hello async", "async view, no ORM"),
    "sync-middleware": View(
        "/sync/", "default", "hello user1", "sync view, one query, default middleware"
    ),
}


def server_command(
    server: str, python: Path, port: int, http: str = "httptools"
) -> list[str]:
    app = "benchsite.asgi:application"
    if server in ("uvicorn", "uvicorn-uvloop"):
        loop = "uvloop" if server == "uvicorn-uvloop" else "asyncio"
        return [
            str(python), "-m", "uvicorn", app, "--host", "127.0.0.1",
            "--port", str(port), "--http", http, "--loop", loop,
            "--lifespan", "off", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    if server == "daphne":
        return [
            str(python), "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
            "-v", "0", app,
        ]  # fmt: skip
    raise ValueError(f"unknown server {server!r}")


SERVERS = ("uvicorn", "daphne", "uvicorn-uvloop")


class BenchError(Exception):
    """A failure that ends the run with a message."""


def requirements(python_version: tuple[int, int]) -> list[str]:
    """What both environments hold besides asgiref: the same pinned versions."""
    django = "django==6.1.2" if python_version >= (3, 12) else "django==5.2.18"
    return [
        django,
        "uvicorn==0.54.0",
        "httptools==0.9.0",
        "uvloop==0.23.0",
        "daphne==4.2.3",
        "channels==4.3.2",
        "channels-redis==4.3.0",
        "redis==8.1.0",
    ]


def pinned(cpu: int) -> list[str]:
    """A command prefix holding a process to one CPU, where that is possible."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu)]
    return []


def find_python(wanted: str) -> str:
    """An interpreter for a version like 3.12 (uv's or pyenv's), or a path."""
    if os.sep in wanted:
        return wanted
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in sorted(pyenv.glob(f"{wanted}.*/bin/python")):
        return str(candidate)
    found = subprocess.run(
        ["uv", "python", "find", wanted], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        raise BenchError(f"no Python {wanted} found (pass --python PATH)")
    return found.stdout.strip()


def _provider(python: Path) -> str | None:
    probe = (
        "import importlib.util, asgiref; "
        "print('asgire' if importlib.util.find_spec('asgire') else asgiref.__version__)"
    )
    found = subprocess.run(
        [str(python), "-I", "-c", probe], capture_output=True, text=True, check=False
    )
    return found.stdout.strip() or None


def build_environment(side: str, interpreter: str) -> Path:
    """The side's virtual environment (built once; asgire reinstalled each run)."""
    version = subprocess.run(
        [interpreter, "-c", "import sys; print(*sys.version_info[:3], sep='.')"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    venv = CACHE / f"{side}-py{version}"
    python = venv / "bin" / "python"
    major, minor = map(int, version.split(".")[:2])
    wanted = requirements((major, minor))
    install = ["uv", "pip", "install", "--quiet", "--python", str(python)]
    if side == "asgire":
        # asgire stands in for asgiref: no dependant may pull upstream in.
        override = CACHE / "override.txt"
        CACHE.mkdir(parents=True, exist_ok=True)
        override.write_text("asgiref; sys_platform == 'never'\n")
        install += ["--override", str(override), "--reinstall-package", "asgire"]
        wanted.append(str(REPO))
    else:
        wanted.append(f"asgiref=={UPSTREAM_VERSION}")
    if not python.exists():
        print(f"building {venv.relative_to(REPO)} ...", file=sys.stderr)
        _run(["uv", "venv", "--quiet", "--python", interpreter, str(venv)])
    _run([*install, *wanted])
    expected = "asgire" if side == "asgire" else UPSTREAM_VERSION
    if _provider(python) != expected:
        raise BenchError(f"{venv} does not provide {expected}'s asgiref")
    return python


def _run(command: list[str]) -> None:
    if subprocess.run(command, check=False).returncode != 0:
        raise BenchError(f"failed: {' '.join(command)}")


def _project_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(PROJECT),
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "benchsite.settings",
        **extra,
    }


def prepare_database(python: Path, path: Path) -> None:
    """Migrate a fresh SQLite file and create the users the views read."""
    script = (
        "import django; django.setup()\n"
        "from django.core.management import call_command\n"
        "from django.contrib.auth.models import User\n"
        "from benchsite.views import USERS\n"
        "call_command('migrate', verbosity=0)\n"
        "User.objects.bulk_create(\n"
        "    User(pk=n, username=f'user{n}') for n in range(1, USERS + 1))\n"
    )
    subprocess.run(
        [str(python), "-c", script],
        env=_project_env(BENCH_DB=str(path)),
        check=True,
        timeout=120,
    )


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def serving(
    server: str,
    python: Path,
    middleware: str,
    db: Path,
    workdir: Path,
    http: str = "httptools",
    pin: bool = True,
    **env: str,
) -> Generator[Server]:
    """Start ``server`` with the project (on CPU 0 if ``pin``); stop it on
    leaving. ``http`` is Uvicorn's HTTP implementation."""
    port = harness.free_port()
    log = workdir / f"{server}-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*(pinned(0) if pin else []), *server_command(server, python, port, http)],
            cwd=PROJECT,
            env=_project_env(BENCH_DB=str(db), BENCH_MIDDLEWARE=middleware, **env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Server(process, port, log)
    try:
        deadline = time.monotonic() + STARTUP_LIMIT
        while True:
            try:
                _get(running.url + "/async/")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(
                        f"{server} did not start:\n{log.read_text()}"
                    ) from None
                time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check_views(server: Server, views: dict[str, View]) -> list[str]:
    """One request per view; the problems found."""
    problems = []
    for name, view in views.items():
        status, body = _get(server.url + view.path)
        if (status, body) != (200, view.body):
            problems.append(f"{name}: {status} {body!r}, expected 200 {view.body!r}")
    return problems


_TRACE_LINE = re.compile(r"GET (\S+): (\d+) crossings?,")


def count_crossings(
    python: Path,
    db: Path,
    workdir: Path,
    views: dict[str, View],
    http: str = "httptools",
    pin: bool = True,
) -> dict[str, int]:
    """Crossings per request of each view, from TraceMiddleware's log lines
    (the last of three requests: the first may set things up)."""
    counts: dict[str, int] = {}
    for middleware in sorted({view.middleware for view in views.values()}):
        chosen = {n: v for n, v in views.items() if v.middleware == middleware}
        with serving(
            "uvicorn", python, middleware, db, workdir, http, pin, BENCH_TRACE="1"
        ) as server:
            for view in chosen.values():
                for _ in range(3):
                    _get(server.url + view.path)
            deadline = time.monotonic() + 10
            while True:
                found: dict[str, int] = {}
                for path, count in _TRACE_LINE.findall(server.log.read_text()):
                    found[path] = int(count)
                if all(v.path in found for v in chosen.values()):
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"no trace lines:\n{server.log.read_text()}")
                time.sleep(0.1)
        counts.update({name: found[view.path] for name, view in chosen.items()})
    return counts


@dataclass
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    checked: int
    bad: int
    socket_errors: int
    status_errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def problems(self) -> int:
        """Wrong responses, failed requests, unchecked responses; and a run
        in which no request completed at all counts as one."""
        return (
            self.bad
            + self.socket_errors
            + self.status_errors
            + abs(self.requests - self.checked)
            + (self.requests == 0)
        )

    @property
    def clean(self) -> bool:
        return self.problems == 0


def run_wrk(url: str, body: str | None, seconds: float, connections: int) -> WrkRun:
    """Drive ``url`` with wrk (on CPU 1 where it can be pinned) for ``seconds``,
    checking that every response is a 200 with exactly ``body`` (any body
    when None)."""
    env = {k: v for k, v in os.environ.items() if k != "BENCH_EXPECT"}
    if body is not None:
        env["BENCH_EXPECT"] = body
    command = [
        *pinned(1), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s",
        "-s", str(HERE / "check.lua"), url,
    ]  # fmt: skip
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    line = next(
        (ln for ln in done.stdout.splitlines() if ln.startswith("BENCH-RESULT ")), None
    )
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    fields = dict(item.split("=") for item in line.split()[1:])
    value = {key: int(number) for key, number in fields.items()}
    return WrkRun(
        requests=value["requests"],
        seconds=value["duration_us"] / 1e6,
        p50_ms=value["p50_us"] / 1000,
        p99_ms=value["p99_us"] / 1000,
        checked=value["checked"],
        bad=value["bad"],
        socket_errors=sum(value[k] for k in ("connect", "read", "write", "timeout")),
        status_errors=value["status"],
    )


@dataclass
class Results:
    config: dict[str, Any]
    crossings: dict[str, int] = field(default_factory=dict)
    # server -> view -> side -> one run per round
    runs: dict[str, dict[str, dict[str, list[WrkRun]]]] = field(default_factory=dict)
    # job -> side -> seconds per round
    jobs: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def measure(
    args: argparse.Namespace, pythons: dict[str, Path], workdir: Path
) -> Results:
    views = {name: VIEWS[name] for name in args.views}
    results = Results(
        config={
            k: v
            for k, v in vars(args).items()
            if k
            in (
                "rounds",
                "duration",
                "slice",
                "connections",
                "servers",
                "views",
                "calls",
                "python",
            )
        }
    )
    db = workdir / "bench.sqlite3"
    prepare_database(pythons["asgire"], db)
    results.crossings = count_crossings(pythons["asgire"], db, workdir, views)
    middlewares = sorted({view.middleware for view in views.values()})
    for round_number in range(args.rounds):
        first = SIDES if round_number % 2 == 0 else SIDES[::-1]
        for server in args.servers:
            for middleware in middlewares:
                chosen = {n: v for n, v in views.items() if v.middleware == middleware}
                with contextlib.ExitStack() as stack:
                    up = {
                        side: stack.enter_context(
                            serving(server, pythons[side], middleware, db, workdir)
                        )
                        for side in first
                    }
                    for view in chosen.values():  # warm-up
                        for side in first:
                            run_wrk(
                                up[side].url + view.path, view.body, 1, args.connections
                            )
                    for name, view in chosen.items():
                        runs = measure_view(up, view, args, first)
                        per_side = results.runs.setdefault(server, {}).setdefault(
                            name, {s: [] for s in SIDES}
                        )
                        for side, run in runs.items():
                            per_side[side].append(run)
                            print(
                                f"round {round_number + 1} {server} {name} {side}: "
                                f"{run.rps:.0f} req/s, p50 {run.p50_ms:.2f} ms, "
                                f"p99 {run.p99_ms:.2f} ms"
                                + ("" if run.clean else "  BAD RESPONSES"),
                                file=sys.stderr,
                            )
    measure_jobs(args, pythons, workdir, results)
    return results


def measure_view(
    up: dict[str, Server], view: View, args: argparse.Namespace, first: tuple[str, ...]
) -> dict[str, WrkRun]:
    """Drive ``view`` on both sides' servers in turn, ``--slice`` seconds at a
    time (A B B A A B ...) until each had ``--duration`` seconds: load from
    elsewhere on the machine then falls on both sides alike."""
    slices: dict[str, list[WrkRun]] = {side: [] for side in SIDES}
    count = max(1, round(args.duration / args.slice))
    for index in range(count):
        for side in first if index % 2 == 0 else first[::-1]:
            url = up[side].url + view.path
            slices[side].append(run_wrk(url, view.body, args.slice, args.connections))
    return {side: combine(runs) for side, runs in slices.items()}


def combine(slices: list[WrkRun]) -> WrkRun:
    """One side's slices as one run: counts added up, latencies the median of
    the slices' percentiles."""
    return WrkRun(
        requests=sum(r.requests for r in slices),
        seconds=sum(r.seconds for r in slices),
        p50_ms=statistics.median(r.p50_ms for r in slices),
        p99_ms=statistics.median(r.p99_ms for r in slices),
        checked=sum(r.checked for r in slices),
        bad=sum(r.bad for r in slices),
        socket_errors=sum(r.socket_errors for r in slices),
        status_errors=sum(r.status_errors for r in slices),
    )


def measure_jobs(
    args: argparse.Namespace, pythons: dict[str, Path], workdir: Path, results: Results
) -> None:
    executable = shutil.which("redis-server")
    redis = None
    if executable is not None:
        try:
            redis = harness.start_redis(workdir, executable)
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
    try:
        for round_number in range(args.rounds):
            order = SIDES if round_number % 2 == 0 else SIDES[::-1]
            for side in order:
                command = [str(pythons[side]), str(HERE / "job.py"), str(args.calls)]
                if redis is not None:
                    command.append(str(redis.port))
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=600, check=False
                )
                if done.returncode != 0:
                    raise BenchError(f"job failed on {side}:\n{done.stderr}")
                for job, seconds in json.loads(done.stdout).items():
                    results.jobs.setdefault(job, {s: [] for s in SIDES})[side].append(
                        seconds
                    )
    finally:
        if redis is not None:
            redis.stop()


def _ratio_cells(ratios: list[float]) -> tuple[str, str]:
    return f"{statistics.median(ratios):.2f}", f"{min(ratios):.2f}-{max(ratios):.2f}"


def report(results: Results, markdown: bool) -> tuple[str, bool]:
    """The tables, and whether every run was clean."""
    clean = True
    lines = [
        "| server | view | crossings | upstream req/s | asgire req/s | ratio | range "
        "| upstream p50 / p99 ms | asgire p50 / p99 ms | bad |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for server, per_view in results.runs.items():
        for name in (n for n in VIEWS if n in per_view):
            per_side = per_view[name]
            up, ours = per_side["upstream"], per_side["asgire"]
            # A round in which either side completed nothing has no ratio;
            # the bad column counts it.
            ratios = [
                a.rps / u.rps for u, a in zip(up, ours, strict=True) if u.requests
            ] or [0.0]
            bad = sum(r.problems for r in up + ours)
            clean = clean and all(r.clean for r in up + ours)
            median, spread = _ratio_cells(ratios)
            cells = [
                server,
                f"{name} ({VIEWS[name].what})",
                str(results.crossings.get(name, "")),
                f"{statistics.median([r.rps for r in up]):.0f}",
                f"{statistics.median([r.rps for r in ours]):.0f}",
                median,
                spread,
                f"{statistics.median([r.p50_ms for r in up]):.2f} / {statistics.median([r.p99_ms for r in up]):.2f}",
                f"{statistics.median([r.p50_ms for r in ours]):.2f} / {statistics.median([r.p99_ms for r in ours]):.2f}",
                str(bad),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    if results.jobs:
        calls = results.config["calls"]
        lines += [
            "",
            f"| sync job ({calls} calls) | upstream s | asgire s | ratio | range |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for job, per_side in results.jobs.items():
            up, ours = per_side["upstream"], per_side["asgire"]
            ratios = [a / u for u, a in zip(up, ours, strict=True)]
            median, spread = _ratio_cells(ratios)
            name = job.replace("-one-loop", " in `AsyncSingleThreadContext`")
            lines.append(
                f"| {name} | {statistics.median(up):.3f} | {statistics.median(ours):.3f} | {median} | {spread} |"
            )
    text = "\n".join(lines)
    if not markdown:
        text = text.replace("`", "")
    return text, clean


def smoke() -> int:
    """Boot the project on this interpreter under Uvicorn (with h11, which
    needs no compiled parser): one request per view, then traced."""
    python = Path(sys.executable)
    with tempfile.TemporaryDirectory(prefix="asgire-e2e-") as temporary:
        workdir = Path(temporary)
        db = workdir / "bench.sqlite3"
        prepare_database(python, db)
        problems = []
        for middleware in ("none", "default"):
            views = {n: v for n, v in VIEWS.items() if v.middleware == middleware}
            with serving(
                "uvicorn", python, middleware, db, workdir, "h11", pin=False
            ) as server:
                problems += check_views(server, views)
        crossings = count_crossings(python, db, workdir, VIEWS, "h11", pin=False)
    print(json.dumps({"problems": problems, "crossings": crossings}))
    return 1 if problems else 0


def load(path: Path) -> Results:
    """A run saved to JSON (``.bench/e2e/last-run.json``), to report again."""
    raw = json.loads(path.read_text())
    runs = {
        server: {
            view: {
                side: [WrkRun(**run) for run in runs] for side, runs in sides.items()
            }
            for view, sides in views.items()
        }
        for server, views in raw["runs"].items()
    }
    return Results(raw["config"], raw["crossings"], runs, raw["jobs"])


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Django under Uvicorn and Daphne, asgire vs upstream asgiref"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per view and side"
    )
    parser.add_argument(
        "--slice", type=float, default=1.0, help="seconds per turn of one side"
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--servers", nargs="+", choices=SERVERS, default=list(SERVERS[:2])
    )
    parser.add_argument("--views", nargs="+", choices=list(VIEWS), default=list(VIEWS))
    parser.add_argument(
        "--calls", type=int, default=2000, help="async_to_sync calls per job"
    )
    parser.add_argument("--python", default="3.12", help="version or interpreter path")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--smoke", action="store_true", help=smoke.__doc__)
    parser.add_argument(
        "--report", type=Path, metavar="JSON", help="report a saved run again"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.slice <= 0 or args.calls < 1:
        parser.error("--rounds, --duration, --slice and --calls must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.smoke:
        return smoke()
    if args.report is not None:
        results = load(args.report)
        text, clean = report(results, args.markdown)
        print(text)
        return 0 if clean else 1
    try:
        if shutil.which("wrk") is None:
            raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
        interpreter = find_python(args.python)
        pythons = {side: build_environment(side, interpreter) for side in SIDES}
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="asgire-e2e-") as temporary:
            results = measure(args, pythons, Path(temporary))
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    (CACHE / "last-run.json").write_text(json.dumps(asdict(results), indent=1))
    text, clean = report(results, args.markdown)
    command = " ".join(["uv run python benchmarks/e2e/run.py", *(argv or sys.argv[1:])])
    print(f"Command: `{command}`\n" if args.markdown else "", end="")
    print(text)
    if not clean:
        print(
            "some responses were wrong or failed: see the bad column", file=sys.stderr
        )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
