"""The pip migration path the README documents, in a fresh virtual environment.

Wheels come from the directory scripts/test-integration fills: asgire built
from this checkout and upstream asgiref 3.13.0, so pip runs offline.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from installs import UPSTREAM_INTACT, readme_commands, wheel_dirs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _fix_commands(report: str) -> list[list[str]]:
    """The commands under "Fix (run in this order):" in info's report."""
    lines = report.splitlines()
    start = lines.index("Fix (run in this order):") + 1
    commands = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        commands.append(shlex.split(line))
    return commands


class Venv:
    def __init__(self, path: Path, find_links: list[Path]) -> None:
        subprocess.run(
            [sys.executable, "-m", "venv", str(path)], check=True, timeout=120
        )
        self.python = str(path / "bin" / "python")
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
            and not key.startswith(("PIP_", "UV_"))
        }
        # The documented commands, run offline against local wheels.
        self.env |= {
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": " ".join(str(p) for p in find_links),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
        }
        self.cwd = path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.python, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def pip(self, *args: str) -> None:
        done = self.run("-m", "pip", *args)
        assert done.returncode == 0, (
            f"pip {' '.join(args)}:\n{done.stdout}{done.stderr}"
        )

    def info(self) -> subprocess.CompletedProcess[str]:
        return self.run("-m", "asgire", "info")

    def distributions(self) -> set[str]:
        done = self.run(
            "-c",
            "import importlib.metadata as m\n"
            "print('\\n'.join(d.metadata['Name'].lower() for d in m.distributions()))",
        )
        return set(done.stdout.split())


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    find_links = wheel_dirs(tmp_path_factory.mktemp("dependant-wheel"))
    return Venv(tmp_path_factory.mktemp("pip-path") / "venv", find_links)


def test_pip_migration_and_its_failure_paths(venv: Venv) -> None:
    # A project as it stands before migrating: upstream installed.
    venv.pip("install", "asgiref==3.13.0")

    # The documented migration: remove upstream first, then install asgire.
    venv.pip("uninstall", "-y", "asgiref")
    venv.pip("install", "asgire")
    clean = venv.info()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "asgiref" not in venv.distributions()
    imported = venv.run(
        "-c", "import asgiref.sync, asgiref.wsgi; print(asgiref.__version__)"
    )
    assert imported.stdout == "3.13.0\n", imported.stderr

    # A dependant (Django, Channels...) installed later brings upstream back
    # over asgire's files: info must notice.
    venv.pip("install", "needs-asgiref")
    assert "asgiref" in venv.distributions()
    broken = venv.info()
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "asgiref 3.13.0" in broken.stdout

    # The repair info prints (the README documents the same two commands).
    fix = _fix_commands(broken.stdout)
    assert [command[1:4] for command in fix] == [
        ["-m", "pip", "uninstall"],
        ["-m", "pip", "install"],
    ], broken.stdout
    for command in fix:
        done = subprocess.run(
            command, env=venv.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
    repaired = venv.info()
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr

    # The wrong order: asgire over upstream, then upstream uninstalled, which
    # deletes the files the two shared.
    venv.pip("install", "--no-deps", "asgiref==3.13.0")
    assert venv.info().returncode == 1
    venv.pip("uninstall", "-y", "asgiref")
    gutted = venv.info()
    assert gutted.returncode == 1, gutted.stdout + gutted.stderr
    venv.pip("install", "--force-reinstall", "--no-deps", "asgire")
    assert venv.info().returncode == 0
    assert "asgiref" not in venv.distributions()

    # Back to upstream, as the README says.
    for command in readme_commands("pip-revert"):
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "pip"], command
        venv.pip(*argv[3:])
    assert "asgire" not in venv.distributions()
    assert "asgiref" in venv.distributions()
    # Every file upstream recorded is there with the content it installed.
    intact = venv.run("-c", UPSTREAM_INTACT)
    assert intact.stdout.split() == ["11", "intact"], intact.stdout + intact.stderr
