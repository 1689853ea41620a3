"""The uv migration the README documents, in a fresh uv project, offline.

The project starts as one that has upstream asgiref because something needs it
(a stand-in for Django), then follows the README's commands, read from the
README itself, to asgire and back.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from installs import UPSTREAM_INTACT, readme_block, readme_commands, wheel_dirs
from packaging.markers import Marker

from asgire.info import UV_OVERRIDE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PYPROJECT = """\
[project]
name = "app"
version = "0"
requires-python = ">=3.11"
dependencies = ["needs-asgiref"]
"""


class Project:
    """A uv project in ``path`` whose installs come from local wheels only."""

    def __init__(self, path: Path, find_links: list[Path], cache: Path) -> None:
        uv = os.environ.get("UV") or shutil.which("uv")
        if uv is None:
            pytest.fail("uv is not on PATH")
        self.uv_path = uv
        self.path = path
        path.mkdir()
        self.pyproject = path / "pyproject.toml"
        self.pyproject.write_text(PYPROJECT)
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
            and not key.startswith("UV_")
        }
        self.env |= {
            "UV_NO_INDEX": "1",
            "UV_FIND_LINKS": ",".join(str(p) for p in find_links),
            "UV_PYTHON_DOWNLOADS": "never",
            # Its own cache: asgire's wheel is rebuilt under the same name.
            "UV_CACHE_DIR": str(cache),
        }

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        argv = shlex.split(command)
        if argv[0] == "uv":
            argv[0] = self.uv_path
        elif argv[0] == "python":
            argv[0] = str(self.path / ".venv" / "bin" / "python")
        return subprocess.run(
            argv,
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, command: str) -> str:
        done = self.run(command)
        assert done.returncode == 0, f"{command}:\n{done.stdout}{done.stderr}"
        return done.stdout

    def installed(self) -> set[str]:
        listing = json.loads(self.ok("uv pip list --format json"))
        return {package["name"] for package in listing}

    def add_override(self) -> None:
        # The README's block, as a user would paste it at the end of the file.
        with self.pyproject.open("a") as pyproject:
            pyproject.write("\n" + readme_block("uv-override"))

    def remove_override(self) -> None:
        text = self.pyproject.read_text()
        text = re.sub(r"\n\[tool\.uv\]\noverride-dependencies = .*\n", "\n", text)
        assert "override-dependencies" not in text
        self.pyproject.write_text(text)

    def lock(self) -> dict[str, object]:
        return tomllib.loads((self.path / "uv.lock").read_text())


@pytest.fixture
def project(tmp_path: Path) -> Project:
    find_links = wheel_dirs(tmp_path / "dependant")
    project = Project(tmp_path / "app", find_links, tmp_path / "uv-cache")
    # The project's environment, on this interpreter; every uv command below
    # finds it there (a uv pip command given UV_PYTHON would not).
    project.ok(f"uv venv --quiet --python {shlex.quote(sys.executable)}")
    # As the project stands before migrating: its dependant brought upstream.
    project.ok("uv sync")
    assert {"asgiref", "needs-asgiref"} <= project.installed()
    return project


def test_the_documented_uv_migration_and_back(project: Project) -> None:
    project.add_override()
    for command in readme_commands("uv-migrate"):
        project.ok(command)  # the last is `python -m asgire info`: exit 0
    assert "asgiref" not in project.installed()
    assert "asgire" in project.installed()
    imported = project.ok("python -c 'import asgiref.sync; print(asgiref.__version__)'")
    assert imported == "3.13.0\n"
    # The override leaves no trace of asgiref in the lock but itself.
    lock = project.lock()
    packages = lock["package"]
    assert isinstance(packages, list)
    assert [p for p in packages if p["name"] == "asgiref"] == []
    assert not [
        dependency
        for package in packages
        for dependency in package.get("dependencies", ())
        if dependency["name"] == "asgiref"
    ]
    # As the README warns: uv's own check misses asgiref, like pip's.
    check = project.run("uv pip check")
    assert check.returncode != 0
    assert "asgiref" in check.stdout + check.stderr

    project.remove_override()
    for command in readme_commands("uv-revert"):
        project.ok(command)
    assert "asgire" not in project.installed()
    intact = project.ok(f"python -c {shlex.quote(UPSTREAM_INTACT)}")
    assert intact.split() == ["11", "intact"]


def test_asgire_added_before_the_override_gets_a_lasting_fix(project: Project) -> None:
    # The order that used to break: asgire next to upstream, files shared.
    project.ok("uv add asgire")
    found = project.run("uv run python -m asgire info --json")
    assert found.returncode == 1, found.stdout + found.stderr
    report = json.loads(found.stdout)
    assert report["shared_files"]
    assert report["uv_project"] == str(project.path.resolve())
    add_override, sync = report["lasting_fix"]
    assert add_override.endswith(UV_OVERRIDE)
    where, _, command = sync.partition(": ")
    assert where == f"in {project.path.resolve()}"
    assert command == "uv sync --reinstall-package asgire"
    text = project.run("uv run python -m asgire info").stdout
    assert text.index("Fix for good") < text.index("uv pip uninstall"), text

    # What the reinstall is for: a plain sync removes upstream and, with it,
    # the files it shared with asgire.
    project.add_override()
    project.ok("uv sync")
    assert project.run("python -c 'import asgiref.sync'").returncode != 0

    project.ok(command)
    project.ok("uv run python -m asgire info")
    assert "asgiref" not in project.installed()
    lock = project.lock()
    manifest = lock["manifest"]
    assert isinstance(manifest, dict)
    (override,) = manifest["overrides"]
    assert override["name"] == "asgiref"
    assert not Marker(override["marker"]).evaluate()
