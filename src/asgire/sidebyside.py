"""``python -m asgire bench --compare``: asgire against upstream asgiref, side by side.

Upstream asgiref 3.13.0 goes into a throwaway virtual environment, made with
the installer at hand (uv when it is on ``PATH``, else ``venv`` and pip). Two
worker processes then run the benchmark module (``bench.py --serve``), one
importing this interpreter's asgiref (asgire) and one upstream's, and each
workload is measured by alternating single batches between them, so both
sides run under the same machine load. The figure that matters is the ratio
of each back-to-back pair of batches; the report gives its median per
workload.

Only the standard library is used, so this works wherever asgire is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from asgire import bench
from asgire.bench import describe_machine, describe_provider

UPSTREAM_VERSION = bench.UPSTREAM_VERSION
#: Seconds to wait for one reply of a worker (a calibration can take a while).
REPLY_TIMEOUT = 120.0
#: Seconds a worker gets to exit once its input is closed.
CLOSE_TIMEOUT = 10.0
#: Most batch pairs per workload; fewer when its time is up.
MAX_PAIRS = 100
#: Fewest batch pairs per timed workload, however short its time.
MIN_PAIRS = 3

Side = Literal["upstream", "asgire"]
SIDES: tuple[Side, Side] = ("upstream", "asgire")
Installer = Literal["uv", "pip"]


class SideBySideError(Exception):
    """Ends the comparison with this message instead of a traceback."""


def check_python(version: tuple[int, int]) -> None:
    """Upstream asgiref 3.13.0 declares ``Requires-Python >= 3.11``."""
    if version < (3, 11):
        raise SideBySideError(
            f"upstream asgiref {UPSTREAM_VERSION} needs Python 3.11 or later; "
            f"this is Python {version[0]}.{version[1]}"
        )


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _child_env() -> dict[str, str]:
    """This process's environment, minus what would point a child elsewhere."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {key: value for key, value in os.environ.items() if key not in drop}


def _run(argv: Sequence[str]) -> None:
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=_child_env(),
            timeout=600,
            check=False,
        )
    except OSError as exc:
        raise SideBySideError(f"`{' '.join(argv)}` could not start: {exc}") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()[-10:]
        raise SideBySideError(
            f"`{' '.join(argv)}` failed with exit status {done.returncode}"
            + "".join(f"\n  {line}" for line in output)
        )


def _install_arguments(source: Path | None) -> list[str]:
    requirement = f"asgiref=={UPSTREAM_VERSION}"
    if source is None:
        return [requirement]
    if source.is_dir():
        return ["--no-index", "--find-links", str(source), requirement]
    return [str(source)]


def build_upstream(
    venv: Path,
    installer: Installer,
    *,
    source: Path | None = None,
    uv: str = "uv",
) -> Path:
    """Make a virtual environment in ``venv`` holding upstream asgiref.

    ``source`` is a wheel, or a folder of wheels, to install from instead of
    the package index. Returns the environment's interpreter.
    """
    python = _venv_python(venv)
    install = _install_arguments(source)
    if installer == "uv":
        _run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)])
        _run([uv, "pip", "install", "--quiet", "--python", str(python), *install])
    else:
        _run([sys.executable, "-m", "venv", str(venv)])
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        _run([*pip, "--disable-pip-version-check", *install])
    return python


def build_upstream_with_what_is_at_hand(
    venv: Path,
    installer: Installer | None,
    *,
    source: Path | None,
    log: Callable[[str], None],
) -> Installer:
    """Build upstream's environment with ``installer``, or, when it is None,
    with uv if found on ``PATH`` (falling back to pip if uv fails) or pip.

    Returns the installer that built it.
    """
    uv = shutil.which("uv")
    chosen: Installer = installer or ("uv" if uv else "pip")
    try:
        build_upstream(venv, chosen, source=source, uv=uv or "uv")
    except SideBySideError as exc:
        if installer is not None or chosen == "pip":
            raise
        # uv on PATH may still not run here (a pyenv shim for another version).
        log(f"uv failed, using venv and pip instead: {exc}")
        shutil.rmtree(venv, ignore_errors=True)
        chosen = "pip"
        build_upstream(venv, chosen, source=source)
    return chosen


class Worker:
    """A ``bench.py --serve`` process, answering one request at a time;
    ``side`` names it in errors (benchmarks/compare.py starts a "twin" too)."""

    def __init__(self, side: str, argv: Sequence[str]) -> None:
        self.side = side
        # Closed by close(); a file, unlike a pipe, never fills up and blocks.
        self._errors: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            text=True,
            env=_child_env(),
        )
        # Replies go through a queue, so that waiting for one can time out.
        self._replies: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._reader = threading.Thread(
            target=self._read, name=f"bench-{side}-replies", daemon=True
        )
        self._reader.start()
        self.environment: dict[str, Any] = self._reply()["environment"]

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._replies.put(line)
        self._replies.put("")

    def _reply(self) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=REPLY_TIMEOUT)
        except queue.Empty:
            raise SideBySideError(
                f"the {self.side} worker did not answer within {REPLY_TIMEOUT:g} s"
            ) from None
        if not line:
            status = self._process.wait()
            self._errors.seek(0)
            tail = self._errors.read().decode(errors="replace").strip()[-2000:]
            raise SideBySideError(
                f"the {self.side} worker exited with status {status}"
                + (f":\n{tail}" if tail else "")
            )
        return json.loads(line)

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        # A worker that died cannot be written to; its reply (none) says how.
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()
        try:
            self._process.wait(timeout=CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        finally:
            # Its output ends with the process: the reader is done.
            self._reader.join()
            self._errors.close()


class Asker(Protocol):
    def ask(self, **request: Any) -> dict[str, Any]: ...


def compare_workload(
    workers: Mapping[Side, Asker], name: str, seconds: float, first: int
) -> dict[str, Any]:
    """Measure ``name`` on both sides, alternating batches, in about
    ``2 * seconds``; ``first`` (0 or 1) picks the side that starts.

    Returns each side's median, the median asgire / upstream ratio of the
    batch pairs and their middle half, or ``{"error": ...}``.
    """
    orders = (SIDES, SIDES[::-1])
    memory = bench.WORKLOADS[name].kind == "memory"
    units: dict[Side, int] = {}
    for side in orders[first]:
        reply = workers[side].ask(op="calibrate", workload=name, seconds=seconds / 10)
        if "error" in reply:
            return {"error": f"{side}: {reply['error']}"}
        units[side] = reply["units"]
    values: dict[Side, list[float]] = {side: [] for side in SIDES}
    ratios: list[float] = []
    # Peak memory is the same from one batch to the next.
    pairs = 1 if memory else MAX_PAIRS
    deadline = time.monotonic() + 2 * seconds
    while len(ratios) < min(MIN_PAIRS, pairs) or (
        len(ratios) < pairs and time.monotonic() < deadline
    ):
        for side in orders[(first + len(ratios)) % 2]:
            reply = workers[side].ask(op="run", workload=name, units=units[side])
            if "error" in reply:
                return {"error": f"{side}: {reply['error']}"}
            values[side].append(reply["value"])
        ratios.append(values["asgire"][-1] / values["upstream"][-1])
    low, _, high = (
        statistics.quantiles(ratios, n=4, method="inclusive")
        if len(ratios) > 1
        else ratios * 3
    )
    return {
        "unit": "bytes" if memory else "s/op",
        "upstream": statistics.median(values["upstream"]),
        "asgire": statistics.median(values["asgire"]),
        "ratio": statistics.median(ratios),
        "middle_half": [low, high],
        "pairs": len(ratios),
    }


def check_ours(env: dict[str, Any]) -> None:
    """Refuse to compare unless this interpreter's asgiref is asgire."""
    if env["provider"] != "asgire":
        raise SideBySideError(
            "this interpreter's `import asgiref` does not run asgire: it runs "
            f"{describe_provider(env)}. `python -m asgire info` says how to "
            "repair that."
        )


def check_upstream(env: dict[str, Any]) -> None:
    """Refuse to compare against anything but upstream asgiref itself."""
    if (env["provider"], env["asgiref_version"]) != ("asgiref", UPSTREAM_VERSION):
        raise SideBySideError(
            f"the upstream side runs asgiref {env['asgiref_version']} of "
            f"{describe_provider(env)}, not upstream asgiref {UPSTREAM_VERSION}"
        )


def estimate(names: Sequence[str], seconds: float) -> float:
    """Rough seconds the measuring takes: the alternating pairs get twice
    ``seconds`` per workload, calibrating and start-up about a fifth more."""
    return len(names) * seconds * 2.4 + 1.0


def measure(
    pythons: dict[Side, Path],
    names: Sequence[str],
    seconds: float,
    progress: Callable[[int, int, str], None] | None,
) -> dict[str, Any]:
    """Measure ``names`` side by side; the document ``--json`` prints."""
    workers: dict[Side, Worker] = {}
    try:
        for side in SIDES:
            # -P keeps the script's own folder (asgire/, whose info.py and
            # trace.py would shadow the standard library's) off sys.path.
            argv = [str(pythons[side]), "-P", bench.__file__, "--serve"]
            workers[side] = Worker(side, argv)
        environments = {side: w.environment for side, w in workers.items()}
        check_ours(environments["asgire"])
        check_upstream(environments["upstream"])
        results: dict[str, Any] = {}
        for index, name in enumerate(names):
            if progress is not None:
                progress(index, len(names), name)
            results[name] = compare_workload(workers, name, seconds, index % 2)
        if progress is not None:
            progress(len(names), len(names), "")
    finally:
        for worker in workers.values():
            worker.close()
    return {
        "schema": bench.SCHEMA_VERSION,
        "mode": "compare",
        "environment": environments,
        "seconds_per_workload": seconds,
        "results": results,
    }


def _value(result: dict[str, Any], side: Side) -> str:
    if result["unit"] == "bytes":
        return bench.format_bytes(result[side])
    return bench.format_time(result[side])


def format_table(document: dict[str, Any]) -> str:
    """Render a ``measure`` document as a plain-text table with its legend."""
    envs = document["environment"]
    ours, theirs = envs["asgire"], envs["upstream"]
    header = ("workload", "upstream", "asgire", "asgire/upstream", "middle half")
    rows: list[tuple[str, ...]] = [header]
    for name, result in document["results"].items():
        if "error" in result:
            rows.append((name, "error", "", "", result["error"]))
            continue
        low, high = result["middle_half"]
        rows.append(
            (
                name,
                _value(result, "upstream"),
                _value(result, "asgire"),
                f"{result['ratio']:.2f}",
                f"{low:.2f}-{high:.2f}",
            )
        )
    lines = [
        f"{describe_provider(ours)} against {describe_provider(theirs)}, side by "
        f"side; {describe_machine(ours)}",
        "",
        *bench.layout(rows),
    ]
    lines += ["", *LEGEND]
    return "\n".join(lines)


LEGEND = [
    "asgire/upstream: asgire's time (or memory) over upstream's, the median of",
    "  batches run back to back on each side: below 1 asgire is faster, 0.50",
    "  is twice as fast. middle half: where the middle half of those pair",
    "  ratios fell, this run's noise.",
    "bare_hop and bare_hop_back run no asgiref code, the same on both sides:",
    "  how far their ratios stray from 1.00 is what noise alone does here.",
]


def run(args: argparse.Namespace, names: Sequence[str], seconds: float) -> int:
    """Run ``bench --compare``; returns the exit status."""

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    try:
        check_python(sys.version_info[:2])
        # Before building anything: the workers check again.
        check_ours(bench.environment())
        with tempfile.TemporaryDirectory(prefix="asgire-upstream-") as scratch:
            venv = Path(scratch) / "venv"
            log(
                f"{len(names)} workloads, side by side with upstream asgiref "
                f"{UPSTREAM_VERSION}: about {estimate(names, seconds):.0f} s, "
                "after building upstream's throwaway environment"
            )
            started = time.monotonic()
            installer = build_upstream_with_what_is_at_hand(
                venv, args.installer, source=args.upstream_from, log=log
            )
            log(f"built with {installer} in {time.monotonic() - started:.1f} s")
            progress = None if args.quiet else bench._progress_printer(sys.stderr)
            pythons: dict[Side, Path] = {
                "upstream": _venv_python(venv),
                "asgire": Path(sys.executable),
            }
            document = measure(pythons, names, seconds, progress)
    except SideBySideError as exc:
        print(f"python -m asgire bench --compare: {exc}", file=sys.stderr)
        return 1
    document["installer"] = installer
    print(json.dumps(document, indent=2) if args.json else format_table(document))
    failed = any("error" in result for result in document["results"].values())
    return 1 if failed else 0
