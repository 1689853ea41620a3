"""The environment itself, as uv built it from env/pyproject.toml.

asgire must provide ``asgiref`` with no upstream distribution installed, and
the README's uv instructions must be the override this environment uses.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest
import tomllib
from installs import readme_block
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ENV_PYPROJECT = HERE / "env" / "pyproject.toml"


def _installed() -> dict[str, importlib.metadata.Distribution]:
    return {
        canonicalize_name(dist.metadata["Name"]): dist
        for dist in importlib.metadata.distributions()
    }


def test_no_upstream_asgiref_distribution_is_installed() -> None:
    installed = _installed()
    assert "asgiref" not in installed
    assert "asgire" in installed
    # The override is what keeps it out: these all ask for asgiref.
    for name in ("django", "channels", "daphne"):
        requirements = [Requirement(r) for r in installed[name].requires or ()]
        assert any(r.name == "asgiref" for r in requirements), name


def test_asgiref_is_imported_from_asgire() -> None:
    import asgiref.sync
    import asgiref.wsgi

    asgire = importlib.metadata.distribution("asgire")
    owned = {Path(str(asgire.locate_file(f))).resolve() for f in asgire.files or ()}
    for module in (asgiref, asgiref.sync, asgiref.wsgi):
        assert module.__file__ is not None
        assert Path(module.__file__).resolve() in owned, module.__file__


def test_lock_leaves_asgiref_out() -> None:
    lock_path = Path(
        os.environ.get("ASGIRE_INTEGRATION_LOCK", HERE / "env" / "uv.lock")
    )
    lock = tomllib.loads(lock_path.read_text())
    names = {package["name"] for package in lock["package"]}
    # Locked, and each of them asks for asgiref...
    assert {"django", "channels", "daphne"} <= names
    # ...yet the override keeps asgiref out of the lock, edges included.
    assert "asgiref" not in names
    edges = [
        dependency
        for package in lock["package"]
        for dependency in package.get("dependencies", ())
        if dependency["name"] == "asgiref"
    ]
    assert edges == []
    (override,) = lock["manifest"]["overrides"]
    assert override["name"] == "asgiref"
    assert not Marker(override["marker"]).evaluate()
    (asgire,) = [p for p in lock["package"] if p["name"] == "asgire"]
    assert "directory" in asgire["source"], asgire["source"]


def _override_line(text: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith("override-dependencies")]
    return line


def test_readme_uv_snippet_is_the_one_used_here() -> None:
    snippet_text = readme_block("uv-override")
    env_text = ENV_PYPROJECT.read_text()
    assert _override_line(snippet_text) == _override_line(env_text)
    snippet = tomllib.loads(snippet_text)
    env = tomllib.loads(env_text)
    overrides = snippet["tool"]["uv"]["override-dependencies"]
    assert overrides == env["tool"]["uv"]["override-dependencies"]
    # `python -m asgire info` tells uv users the very same line.
    from asgire.info import UV_OVERRIDE

    assert _override_line(snippet_text) == UV_OVERRIDE
