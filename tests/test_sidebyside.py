"""``python -m asgire bench --compare``: asgire and upstream side by side.

Upstream's throwaway environment is built offline here, from a wheel that
stands in for upstream asgiref 3.13.0 (it carries this checkout's modules
under upstream's distribution name): what is tested is the building, the
alternating and the report, never the speed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

import asgiref

bench = pytest.importorskip("asgire.bench")
sidebyside = pytest.importorskip("asgire.sidebyside")

pytestmark = pytest.mark.asgire_only

needs_311 = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="upstream asgiref 3.13.0 needs Python 3.11+"
)
needs_uv = pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv")


def _stand_in_wheel(folder: Path) -> Path:
    """A wheel named like upstream's (asgiref 3.13.0) holding this checkout's
    asgiref modules."""
    folder.mkdir(parents=True, exist_ok=True)
    info = "asgiref-3.13.0.dist-info"
    files = {
        f"asgiref/{path.name}": path.read_bytes()
        for path in sorted(Path(asgiref.__file__).parent.iterdir())
        if path.suffix == ".py" or path.name == "py.typed"
    }
    files[f"{info}/METADATA"] = (
        b"Metadata-Version: 2.1\nName: asgiref\nVersion: 3.13.0\n"
        b"Requires-Python: >=3.11\n"
    )
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: asgire-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    rows = []
    for name, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest())
        rows.append(f"{name},sha256={digest.rstrip(b'=').decode()},{len(content)}")
    files[f"{info}/RECORD"] = "\n".join([*rows, f"{info}/RECORD,,", ""]).encode()
    wheel = folder / "asgiref-3.13.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return wheel


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _stand_in_wheel(tmp_path_factory.mktemp("upstream-wheel"))


@pytest.fixture(autouse=True)
def own_uv_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The stand-in is named like the real wheel: keep it out of the user's cache.
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))


def _bench(*argv: str) -> int:
    return bench.main(list(argv))


# End to end, offline.


@needs_311
@needs_uv
@pytest.mark.timeout(120)
def test_compare_with_uv_prints_a_ratio_per_workload(
    stand_in: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only = ["--only", "bare_hop", "local_get", "--only", "pending_10k_memory"]
    status = _bench(
        "--compare", "--upstream-from", str(stand_in), *only, "--seconds", "0.05"
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith(
        f"asgire {bench.environment()['provider_version']} against upstream "
        "asgiref 3.13.0, side by side; "
    )
    header = lines[2].split()
    assert header == [
        "workload", "upstream", "asgire", "asgire/upstream", "middle", "half",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines[3:6]}
    assert list(rows) == ["bare_hop", "local_get", "pending_10k_memory"]
    for row in rows.values():
        low, high = map(float, row[-1].split("-"))
        assert 0 < low <= float(row[-2]) <= high
    assert rows["pending_10k_memory"][2] in ("KiB", "MiB")
    assert "noise alone" in captured.out
    # How long, then progress, on stderr.
    err = captured.err.splitlines()
    assert err[0].startswith("3 workloads, side by side with upstream asgiref 3.13.0:")
    assert err[1].startswith("built with uv in ")
    assert err[2:] == [
        "measuring [1/3] bare_hop",
        "measuring [2/3] local_get",
        "measuring [3/3] pending_10k_memory",
    ]


@needs_311
@pytest.mark.timeout(180)
def test_compare_falls_back_to_venv_and_pip_when_uv_fails(
    stand_in: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A uv on PATH that cannot run, as a pyenv shim for another version.
    broken_uv = tmp_path / "uv"
    broken_uv.write_text(
        "#!/bin/sh\necho 'pyenv: uv: command not found' >&2\nexit 127\n"
    )
    broken_uv.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name: str(broken_uv))
    argv = ["--compare", "--json", "--quiet", "--only", "local_get"]
    status = _bench(*argv, "--seconds", "0.05", "--upstream-from", str(stand_in.parent))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.err == ""
    document = json.loads(captured.out)
    assert document["mode"] == "compare"
    assert document["installer"] == "pip"
    assert document["environment"]["upstream"]["provider"] == "asgiref"
    assert document["environment"]["asgire"]["provider"] == "asgire"
    result = document["results"]["local_get"]
    assert result["pairs"] >= sidebyside.MIN_PAIRS
    assert result["ratio"] > 0


def test_a_named_installer_that_fails_ends_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/nonexistent/uv")
    monkeypatch.setattr(sys, "version_info", (3, 11, 0, "final", 0))
    status = _bench("--compare", "--installer", "uv", "--only", "local_get")
    assert status == 1
    err = capsys.readouterr().err
    assert "python -m asgire bench --compare: " in err
    assert "`/nonexistent/uv venv " in err
    assert "could not start" in err


@needs_uv
def test_a_failed_install_names_the_command_and_its_output(tmp_path: Path) -> None:
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    uv = shutil.which("uv")
    assert uv is not None
    with pytest.raises(sidebyside.SideBySideError) as failed:
        sidebyside.build_upstream(tmp_path / "venv", "uv", source=empty, uv=uv)
    message = str(failed.value)
    assert "--no-index --find-links" in message
    assert "asgiref==3.13.0" in message
    assert "failed with exit status" in message
    assert "\n  " in message  # uv's own explanation follows


def test_without_a_source_upstream_comes_from_the_index() -> None:
    assert sidebyside._install_arguments(None) == ["asgiref==3.13.0"]


def test_upstream_needs_python_311() -> None:
    sidebyside.check_python((3, 11))
    with pytest.raises(sidebyside.SideBySideError, match=r"needs Python 3\.11"):
        sidebyside.check_python((3, 10))


def test_compare_refuses_when_asgiref_here_is_not_asgire(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    overwritten = {
        **bench.environment(),
        "provider": "asgiref",
        "provider_version": "3.13.0",
        "provider_caveat": "asgire's files were overwritten",
    }
    monkeypatch.setattr(bench, "environment", lambda: overwritten)
    monkeypatch.setattr(sys, "version_info", (3, 11, 0, "final", 0))
    assert _bench("--compare", "--only", "local_get") == 1
    err = capsys.readouterr().err
    assert "does not run asgire: it runs upstream asgiref 3.13.0 (asgire's" in err
    assert "python -m asgire info" in err


@needs_311
@pytest.mark.timeout(60)
def test_the_workers_must_be_asgire_and_upstream() -> None:
    # Both sides on this interpreter: the "upstream" one runs asgire too.
    here = Path(sys.executable)
    with pytest.raises(sidebyside.SideBySideError, match="the upstream side runs"):
        sidebyside.measure(
            {"upstream": here, "asgire": here}, ["local_get"], 0.01, None
        )


def test_options_for_compare_alone_are_refused_without_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _bench("--installer", "pip", "--only", "local_get") == 2
    assert "go with --compare" in capsys.readouterr().err


# The alternation, with workers that answer at once.


class FakeWorker:
    def __init__(self, log: list[tuple[str, str]], side: str, value: float) -> None:
        self.log, self.side, self.value = log, side, value
        self.fail: str | None = None

    def ask(self, **request: Any) -> dict[str, Any]:
        self.log.append((self.side, request["op"]))
        if self.fail == request["op"]:
            return {"error": "ValueError: no"}
        if request["op"] == "calibrate":
            return {"units": 5}
        return {"value": self.value, "switches": None, "cpu": None}


def _fakes(log: list[tuple[str, str]]) -> dict[str, FakeWorker]:
    return {
        "upstream": FakeWorker(log, "upstream", 4.0),
        "asgire": FakeWorker(log, "asgire", 1.0),
    }


def test_batches_alternate_which_side_goes_first() -> None:
    log: list[tuple[str, str]] = []
    result = sidebyside.compare_workload(_fakes(log), "local_get", 0.0, 1)
    assert result == {
        "unit": "s/op",
        "upstream": 4.0,
        "asgire": 1.0,
        "ratio": 0.25,
        "middle_half": [0.25, 0.25],
        "pairs": sidebyside.MIN_PAIRS,
    }
    runs = [side[0] for side, op in log if op == "run"]
    assert "".join(runs) == "auuaau"
    assert log[:2] == [("asgire", "calibrate"), ("upstream", "calibrate")]


def test_memory_takes_one_pair() -> None:
    result = sidebyside.compare_workload(_fakes([]), "pending_10k_memory", 5.0, 0)
    assert (result["unit"], result["pairs"], result["ratio"]) == ("bytes", 1, 0.25)


@pytest.mark.parametrize("op", ["calibrate", "run"])
def test_a_side_that_fails_is_reported_for_that_workload(op: str) -> None:
    fakes = _fakes([])
    fakes["asgire"].fail = op
    result = sidebyside.compare_workload(fakes, "local_get", 0.0, 0)
    assert result == {"error": "asgire: ValueError: no"}


def test_the_table_reports_errors_and_sizes() -> None:
    env = bench.environment()
    document = {
        "environment": {"asgire": env, "upstream": {**env, "provider": "asgiref"}},
        "results": {
            "local_get": {"error": "upstream: ValueError: no"},
            "pending_10k_memory": {
                "unit": "bytes",
                "upstream": 3 * 2**20,
                "asgire": 2**20,
                "ratio": 1 / 3,
                "middle_half": [0.3, 0.34],
                "pairs": 1,
            },
        },
    }
    lines = sidebyside.format_table(document).splitlines()
    assert lines[3].split() == ["local_get", "error", "upstream:", "ValueError:", "no"]
    assert lines[4].split() == [
        "pending_10k_memory", "3", "MiB", "1", "MiB", "0.33", "0.30-0.34",
    ]  # fmt: skip


# The worker processes.


def _worker(script: str) -> Any:
    greeting = 'print(\'{"environment": {"provider": "x"}}\', flush=True)\n'
    return sidebyside.Worker("upstream", [sys.executable, "-c", greeting + script])


def test_a_worker_that_exits_is_reported_with_what_it_said() -> None:
    worker = _worker("import sys; sys.stderr.write('it broke'); sys.exit(3)")
    try:
        assert worker.environment == {"provider": "x"}
        with pytest.raises(sidebyside.SideBySideError) as failed:
            worker.ask(op="run", workload="local_get", units=1)
        assert str(failed.value) == (
            "the upstream worker exited with status 3:\nit broke"
        )
    finally:
        worker.close()


def test_a_worker_that_exits_silently() -> None:
    worker = _worker("")
    try:
        with pytest.raises(sidebyside.SideBySideError, match=r"status 0$"):
            worker.ask(op="run", workload="local_get", units=1)
    finally:
        worker.close()


def test_a_worker_that_hangs_times_out_and_is_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = _worker("import time; time.sleep(60)")
    # Once it has started (slowly, under coverage), it gets no more time.
    monkeypatch.setattr(sidebyside, "REPLY_TIMEOUT", 0.2)
    monkeypatch.setattr(sidebyside, "CLOSE_TIMEOUT", 0.2)
    try:
        with pytest.raises(sidebyside.SideBySideError, match="did not answer"):
            worker.ask(op="run", workload="local_get", units=1)
    finally:
        worker.close()
    assert worker._process.returncode is not None


@needs_311
def test_the_bench_worker_answers_over_the_pipes() -> None:
    worker = sidebyside.Worker(
        "asgire", [sys.executable, "-P", bench.__file__, "--serve"]
    )
    try:
        assert worker.environment["provider"] == "asgire"
        reply = worker.ask(op="run", workload="build_s2a", units=3)
        assert reply["value"] > 0
    finally:
        worker.close()
    assert worker._process.returncode == 0


def test_the_estimate_grows_with_workloads_and_time() -> None:
    one = sidebyside.estimate(["a"], 1.0)
    assert sidebyside.estimate(["a", "b"], 1.0) > one
    assert sidebyside.estimate(["a"], 2.0) > one
