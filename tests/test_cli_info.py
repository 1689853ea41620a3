"""``python -m asgire`` and its ``info`` command: spotting upstream asgiref over asgire.

The detection is tested on synthetic site directories (dist-info folders with
RECORD files, read through ``importlib.metadata.PathDistribution``), and once
for real: upstream asgiref installed over a wheel of asgire in a fresh venv.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import types
from importlib.metadata import PackageNotFoundError, PathDistribution, version
from pathlib import Path

import pytest

info = pytest.importorskip("asgire.info")
cli = pytest.importorskip("asgire.__main__")

pytestmark = pytest.mark.asgire_only

ROOT = Path(__file__).resolve().parents[1]
PYTHON = "/venv/bin/python"

INIT = b'__version__ = "3.13.0"\n'
OUR_FILES = {
    "asgiref/__init__.py": INIT,
    "asgiref/sync.py": b"# asgire's sync module\n",
    "asgiref/py.typed": b"",
    "asgire/__init__.py": b"",
}
UPSTREAM_FILES = {
    "asgiref/__init__.py": INIT,
    "asgiref/sync.py": b"# upstream's sync module\n",
    "asgiref/py.typed": b"",
}


def _record_hash(content: bytes) -> str:
    digest = hashlib.sha256(content).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def install(
    site: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    installer: str = "pip",
    direct_url: dict[str, object] | None = None,
) -> PathDistribution:
    """Lay out ``files`` in ``site`` the way an installer would, RECORD included."""
    dist_info = site / f"{name}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    (dist_info / "INSTALLER").write_text(f"{installer}\n")
    rows = []
    for relative, content in files.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        rows.append(f"{relative},{_record_hash(content)},{len(content)}")
    if direct_url is not None:
        (dist_info / "direct_url.json").write_text(json.dumps(direct_url))
    # Installers also record bytecode, without a hash.
    rows.append("asgiref/__pycache__/sync.cpython-311.pyc,,")
    rows.append(f"{dist_info.name}/RECORD,,")
    (dist_info / "RECORD").write_text("\n".join(rows) + "\n")
    return PathDistribution(dist_info)


def test_asgire_alone_is_clean(tmp_path: Path) -> None:
    ours = install(tmp_path, "asgire", "0.1.0", OUR_FILES)
    found = info.diagnose(tmp_path / "asgiref", [ours], python=PYTHON)
    assert not found.conflict, found.problems
    assert [p.name for p in found.providers] == ["asgire"]
    assert found.upstream == ()
    assert (found.replaced, found.missing, found.shared) == ((), (), ())
    assert found.fix == ()
    assert found.prevent == ()


def test_upstream_alone_is_a_conflict(tmp_path: Path) -> None:
    upstream = install(tmp_path, "asgiref", "3.13.0", UPSTREAM_FILES)
    found = info.diagnose(tmp_path / "asgiref", [upstream], python=PYTHON)
    assert found.conflict
    assert [p.name for p in found.providers] == ["asgiref"]
    assert [u.version for u in found.upstream] == ["3.13.0"]
    assert any("loads asgiref 3.13.0" in problem for problem in found.problems)
    assert found.fix == (
        (PYTHON, "-m", "pip", "uninstall", "-y", "asgiref"),
        (PYTHON, "-m", "pip", "install", "--force-reinstall", "--no-deps", "asgire"),
    )


def test_upstream_installed_over_asgire(tmp_path: Path) -> None:
    ours = install(tmp_path, "asgire", "0.1.0", OUR_FILES)
    upstream = install(tmp_path, "asgiref", "3.13.0", UPSTREAM_FILES)
    found = info.diagnose(tmp_path / "asgiref", [ours, upstream], python=PYTHON)
    assert found.conflict
    # Both RECORDs list the package; upstream's files are the ones on disk.
    assert [p.name for p in found.providers] == ["asgiref"]
    assert found.checked == 3
    assert found.replaced == ("asgiref/sync.py",)
    assert found.missing == ()
    assert set(found.shared) == {
        "asgiref/__init__.py",
        "asgiref/sync.py",
        "asgiref/py.typed",
    }
    text = "\n".join(found.problems)
    assert "loads asgiref 3.13.0" in text
    assert "asgiref/sync.py" in text
    assert found.fix == (
        (PYTHON, "-m", "pip", "uninstall", "-y", "asgiref"),
        (
            PYTHON, "-m", "pip", "install", "--force-reinstall", "--no-deps",
            "asgire==0.1.0",
        ),
    )  # fmt: skip
    assert any("override-dependencies" in advice for advice in found.prevent)


def test_asgire_reinstalled_over_upstream_still_shares_its_files(
    tmp_path: Path,
) -> None:
    # Upstream first, asgire second: our files are intact, but uninstalling or
    # upgrading upstream would delete or replace them.
    upstream = install(tmp_path, "asgiref", "3.13.0", UPSTREAM_FILES)
    ours = install(tmp_path, "asgire", "0.1.0", OUR_FILES)
    found = info.diagnose(tmp_path / "asgiref", [upstream, ours], python=PYTHON)
    assert [p.name for p in found.providers] == ["asgire"]
    assert (found.replaced, found.missing) == ((), ())
    assert len(found.shared) == 3
    assert found.conflict
    assert any("also installed 3 of asgire's files" in p for p in found.problems)
    assert [command[3] for command in found.fix] == ["uninstall", "install"]


def test_upstream_elsewhere_but_asgire_imported_is_not_a_conflict(
    tmp_path: Path,
) -> None:
    site, later_site = tmp_path / "site", tmp_path / "later"
    ours = install(site, "asgire", "0.1.0", OUR_FILES)
    upstream = install(later_site, "asgiref", "3.13.0", UPSTREAM_FILES)
    found = info.diagnose(site / "asgiref", [ours, upstream], python=PYTHON)
    assert not found.conflict, found.problems
    assert [p.name for p in found.providers] == ["asgire"]
    assert found.shared == ()
    assert any("also installed" in note for note in found.notes)
    # Removing the shadowed copy is still advised; nothing needs reinstalling.
    assert found.fix == ((PYTHON, "-m", "pip", "uninstall", "-y", "asgiref"),)


def test_deleted_file_is_reported_missing(tmp_path: Path) -> None:
    ours = install(tmp_path, "asgire", "0.1.0", OUR_FILES)
    (tmp_path / "asgiref" / "sync.py").unlink()
    found = info.diagnose(tmp_path / "asgiref", [ours], python=PYTHON)
    assert found.conflict
    assert found.missing == ("asgiref/sync.py",)
    assert found.fix == (
        (
            PYTHON, "-m", "pip", "install", "--force-reinstall", "--no-deps",
            "asgire==0.1.0",
        ),
    )  # fmt: skip


def test_missing_init_after_uninstalling_upstream(tmp_path: Path) -> None:
    ours = install(tmp_path, "asgire", "0.1.0", OUR_FILES)
    (tmp_path / "asgiref" / "__init__.py").unlink()
    found = info.diagnose(tmp_path / "asgiref", [ours], python=PYTHON)
    assert found.conflict
    assert any("namespace package" in problem for problem in found.problems)
    assert "asgiref/__init__.py" in found.missing


def test_asgiref_not_importable(tmp_path: Path) -> None:
    ours = install(tmp_path, "asgire", "0.1.0", OUR_FILES)
    found = info.diagnose(None, [ours], python=PYTHON)
    assert found.conflict
    assert any("fails" in problem for problem in found.problems)


def test_unrecorded_directory_shadowing_asgire(tmp_path: Path) -> None:
    ours = install(tmp_path / "site", "asgire", "0.1.0", OUR_FILES)
    stray = tmp_path / "project" / "asgiref"
    stray.mkdir(parents=True)
    (stray / "__init__.py").write_bytes(INIT)
    found = info.diagnose(stray, [ours], python=PYTHON)
    assert found.conflict
    assert found.providers == ()
    assert any("shadows asgire" in problem for problem in found.problems)
    assert found.fix == ()


def _editable(site: Path, source: Path) -> PathDistribution:
    """An editable asgire: its RECORD lists a .pth file, not the package."""
    (source / "asgiref").mkdir(parents=True)
    (source / "asgiref" / "__init__.py").write_bytes(INIT)
    site.mkdir(parents=True, exist_ok=True)
    return install(
        site,
        "asgire",
        "0.1.0",
        {"_editable_impl_asgire.pth": f"{source}\n".encode()},
        installer="uv",
        direct_url={"url": source.as_uri(), "dir_info": {"editable": True}},
    )


def test_editable_asgire_is_recognised(tmp_path: Path) -> None:
    ours = _editable(tmp_path / "site", tmp_path / "src")
    found = info.diagnose(tmp_path / "src" / "asgiref", [ours], python=PYTHON)
    assert not found.conflict, found.problems
    assert [p.name for p in found.providers] == ["asgire"]
    assert found.asgire is not None
    assert found.asgire.editable


def test_editable_finder_module_is_recognised(tmp_path: Path) -> None:
    # Some backends record a finder module mapping names to source paths.
    source = tmp_path / "src"
    (source / "asgiref").mkdir(parents=True)
    (source / "asgiref" / "__init__.py").write_bytes(INIT)
    finder = f"MAPPING = {{'asgiref': {str(source / 'asgiref')!r}}}\n"
    ours = install(
        tmp_path / "site",
        "asgire",
        "0.1.0",
        {
            "__editable__.asgire-0.1.0.pth": b"import __editable___asgire_finder\n",
            "__editable___asgire_finder.py": finder.encode(),
        },
        direct_url={"url": source.as_uri(), "dir_info": {"editable": True}},
    )
    found = info.diagnose(source / "asgiref", [ours], python=PYTHON)
    assert [p.name for p in found.providers] == ["asgire"]
    assert not found.conflict, found.problems


def test_upstream_shadowing_editable_asgire(tmp_path: Path) -> None:
    site = tmp_path / "site"
    ours = _editable(site, tmp_path / "src")
    upstream = install(site, "asgiref", "3.13.0", UPSTREAM_FILES, installer="uv")
    found = info.diagnose(site / "asgiref", [ours, upstream], python=PYTHON)
    assert found.conflict
    assert [p.name for p in found.providers] == ["asgiref"]
    # The sources are untouched: removing upstream is the whole fix.
    assert found.fix == (("uv", "pip", "uninstall", "--python", PYTHON, "asgiref"),)
    assert any("`uv sync`" in advice for advice in found.prevent)


def test_a_uv_project_is_told_the_lasting_fix_first(tmp_path: Path) -> None:
    # The uv pip commands alone are undone by the project's next `uv run`,
    # which syncs upstream back from the lock.
    project = tmp_path / "project"
    site = project / ".venv" / "site"
    ours, upstream = _with_upstream_over(site)
    found = info.diagnose(
        site / "asgiref", [ours, upstream], python=PYTHON, uv_project=project
    )
    assert found.lasting_fix == (
        f"add to {project / 'pyproject.toml'}, under [tool.uv]: {info.UV_OVERRIDE}",
        f"in {project}: uv sync --reinstall-package asgire",
    )
    assert [command[:3] for command in found.fix] == [
        ("uv", "pip", "uninstall"),
        ("uv", "pip", "install"),
    ]
    assert found.prevent == ()  # the override is the prevention
    text = info.to_text(found, info.python_facts())
    assert (
        text.index("Fix for good, in this uv project")
        < text.index("  1. add to")
        < text.index("  2. in ")
        < text.index("environment only")
        < text.index("uv pip uninstall")
    )
    document = info.to_json(found, info.python_facts())
    assert document["uv_project"] == str(project)
    assert document["lasting_fix"] == list(found.lasting_fix)


def test_an_editable_asgire_in_a_uv_project_needs_a_plain_sync(tmp_path: Path) -> None:
    site = tmp_path / "project" / ".venv" / "site"
    ours = _editable(site, tmp_path / "src")
    upstream = install(site, "asgiref", "3.13.0", UPSTREAM_FILES, installer="uv")
    found = info.diagnose(
        site / "asgiref", [ours, upstream], uv_project=tmp_path / "project"
    )
    assert found.lasting_fix[-1] == f"in {tmp_path / 'project'}: uv sync"


def test_the_override_leaves_asgiref_out_with_a_marker_that_never_holds() -> None:
    requirement = info.UV_OVERRIDE.partition("[")[2].rstrip("]")
    assert requirement == "\"asgiref ; python_version == '0'\""


def _project(folder: Path, *, lock: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text("[project]\n")
    if lock:
        (folder / "uv.lock").write_text("")
    return folder


def test_find_uv_project_beside_its_dot_venv(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    assert info.find_uv_project(project / ".venv", {}) == project
    # Not a uv project without a lock (another tool's .venv), nor another name.
    assert (
        info.find_uv_project(_project(tmp_path / "b", lock=False) / ".venv", {}) is None
    )
    assert info.find_uv_project(project / "venv", {}) is None


def test_find_uv_project_from_uv_project_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path / "project")
    monkeypatch.chdir(_project(project / "member", lock=False))
    elsewhere = tmp_path / "envs" / "3.12"
    named = {"UV_PROJECT_ENVIRONMENT": str(elsewhere)}
    # The nearest folder up from here with both files: a workspace's root.
    assert info.find_uv_project(elsewhere, named) == project
    assert info.find_uv_project(tmp_path / "envs" / "3.13", named) is None
    assert info.find_uv_project() == info.find_uv_project(
        Path(sys.prefix), dict(os.environ)
    )


def test_fix_reinstalls_from_the_wheel_asgire_came_from(tmp_path: Path) -> None:
    wheel = tmp_path / "asgire-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    site = tmp_path / "site"
    ours = install(
        site,
        "asgire",
        "0.1.0",
        OUR_FILES,
        installer="uv",
        direct_url={"url": wheel.as_uri(), "archive_info": {}},
    )
    upstream = install(site, "asgiref", "3.13.0", UPSTREAM_FILES, installer="uv")
    found = info.diagnose(site / "asgiref", [ours, upstream], python=PYTHON)
    assert found.fix[-1] == (
        "uv", "pip", "install", "--python", PYTHON, "--reinstall", "--no-deps",
        f"asgire @ {wheel.as_uri()}",
    )  # fmt: skip
    wheel.unlink()  # gone: fall back to the released version
    found = info.diagnose(site / "asgiref", [ours, upstream], python=PYTHON)
    assert found.fix[-1][-1] == "asgire==0.1.0"


def test_report_renders_problems_and_fix(tmp_path: Path) -> None:
    ours = install(tmp_path, "asgire", "0.1.0", OUR_FILES)
    upstream = install(tmp_path, "ASGIRef", "3.13.0", UPSTREAM_FILES)
    found = info.diagnose(tmp_path / "asgiref", [ours, upstream], python=PYTHON)
    python = info.python_facts()
    text = info.to_text(found, python)
    assert "PROBLEM:" in text
    assert "3 of asgire's under asgiref/, 1 replaced or missing" in text
    assert "CONFLICT" in text
    assert f"{PYTHON} -m pip uninstall -y ASGIRef" in text
    document = info.to_json(found, python)
    assert document["ok"] is False
    assert document["upstream"][0]["version"] == "3.13.0"
    assert document["replaced_files"] == ["asgiref/sync.py"]
    assert document["fix"][0] == [PYTHON, "-m", "pip", "uninstall", "-y", "ASGIRef"]
    json.dumps(document)  # serialisable as is


def test_python_facts_match_the_interpreter() -> None:
    facts = info.python_facts()
    assert facts["version"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    assert facts["executable"] == sys.executable
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    expected = is_gil_enabled() if is_gil_enabled is not None else True
    assert facts["gil_enabled"] is expected


def test_the_same_installation_seen_twice_counts_once(tmp_path: Path) -> None:
    # sys.path can list one directory twice.
    ours = install(tmp_path / "site", "asgire", "0.1.0", OUR_FILES)
    upstream = install(tmp_path / "later", "asgiref", "3.13.0", UPSTREAM_FILES)
    found = info.diagnose(
        tmp_path / "site" / "asgiref", [ours, upstream, upstream], python=PYTHON
    )
    assert [u.version for u in found.upstream] == ["3.13.0"]
    assert len(found.notes) == 1
    assert found.fix == ((PYTHON, "-m", "pip", "uninstall", "-y", "asgiref"),)


def test_unrecorded_directory_without_asgire_is_only_a_note(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout" / "asgiref"
    checkout.mkdir(parents=True)
    (checkout / "__init__.py").write_bytes(INIT)
    found = info.diagnose(checkout, [], python=PYTHON)
    assert found.problems == ()
    assert any("source checkout" in note for note in found.notes)
    assert any("not installed as a distribution" in note for note in found.notes)
    assert found.fix == ()


def _with_upstream_over(
    site: Path, direct_url: dict[str, object] | None = None
) -> tuple[PathDistribution, PathDistribution]:
    ours = install(
        site, "asgire", "0.1.0", OUR_FILES, installer="uv", direct_url=direct_url
    )
    upstream = install(site, "asgiref", "3.13.0", UPSTREAM_FILES, installer="uv")
    return ours, upstream


def test_fix_reinstalls_from_the_commit_asgire_came_from(tmp_path: Path) -> None:
    url = "https://example.invalid/asgire.git"
    vcs_info = {"vcs": "git", "commit_id": "0123abc"}
    dists = _with_upstream_over(tmp_path, {"url": url, "vcs_info": vcs_info})
    found = info.diagnose(tmp_path / "asgiref", dists, python=PYTHON)
    assert found.fix[-1][-1] == f"asgire @ git+{url}@0123abc"


def test_fix_pins_the_version_when_the_commit_is_unknown(tmp_path: Path) -> None:
    url = "https://example.invalid/asgire.git"
    dists = _with_upstream_over(tmp_path, {"url": url, "vcs_info": {"vcs": "git"}})
    found = info.diagnose(tmp_path / "asgiref", dists, python=PYTHON)
    assert found.fix[-1][-1] == "asgire==0.1.0"


def test_unreadable_direct_url_is_ignored(tmp_path: Path) -> None:
    ours, upstream = _with_upstream_over(tmp_path, {"url": "placeholder"})
    (tmp_path / "asgire-0.1.0.dist-info" / "direct_url.json").write_text("{broken")
    found = info.diagnose(tmp_path / "asgiref", [ours, upstream], python=PYTHON)
    assert found.asgire is not None
    assert found.asgire.source is None
    assert found.fix[-1][-1] == "asgire==0.1.0"


def test_blank_record_rows_and_unknown_hashes_are_skipped(tmp_path: Path) -> None:
    ours = install(tmp_path, "asgire", "0.1.0", OUR_FILES)
    record = tmp_path / "asgire-0.1.0.dist-info" / "RECORD"
    # A blank line, a row without a path, and a file hashed with an algorithm
    # this Python does not have (so it cannot be compared).
    (tmp_path / "asgiref" / "extra.py").write_bytes(b"# extra\n")
    with record.open("a") as rows:
        rows.write("\n,,\nasgiref/extra.py,sha3_4096=AAAA,8\n")
    found = info.diagnose(tmp_path / "asgiref", [ours], python=PYTHON)
    assert not found.conflict, found.problems
    assert found.checked == 4
    assert (found.replaced, found.missing) == ((), ())


def test_editable_asgire_whose_pth_file_is_gone_does_not_back_asgiref(
    tmp_path: Path,
) -> None:
    ours = _editable(tmp_path / "site", tmp_path / "src")
    (tmp_path / "site" / "_editable_impl_asgire.pth").unlink()
    found = info.diagnose(tmp_path / "src" / "asgiref", [ours], python=PYTHON)
    assert found.providers == ()
    assert any("shadows asgire" in problem for problem in found.problems)


def test_report_without_asgire_on_a_free_threaded_python(tmp_path: Path) -> None:
    upstream = install(tmp_path, "asgiref", "3.13.0", UPSTREAM_FILES)
    found = info.diagnose(tmp_path / "asgiref", [upstream], python=PYTHON)
    python = {**info.python_facts(), "free_threaded": True, "gil_enabled": False}
    text = info.to_text(found, python)
    assert "asgire:   not installed as a distribution" in text
    assert "free-threaded build, GIL disabled" in text
    assert info.to_json(found, python)["asgire"] is None


def test_find_asgiref_finds_the_package_directory() -> None:
    found = info.find_asgiref()
    assert found is not None
    assert (found / "__init__.py").is_file()


def test_find_asgiref_on_a_sys_path_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "asgiref")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert info.find_asgiref() is None
    # A lone module rather than a package: where the module is.
    (tmp_path / "asgiref.py").write_text("")
    importlib.invalidate_caches()  # the directory was listed before the file existed
    assert info.find_asgiref() == tmp_path


def test_find_asgiref_with_a_module_object_that_has_no_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a test double put in sys.modules looks like to the import system.
    monkeypatch.setitem(sys.modules, "asgiref", types.ModuleType("asgiref"))
    assert info.find_asgiref() is None


# The command line, in this (development) environment.


def test_info_in_the_dev_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is True, document["problems"]
    assert [p["name"] for p in document["asgiref_import"]["provided_by"]] == ["asgire"]
    assert document["python"]["executable"] == sys.executable
    assert cli.main(["info"]) == 0
    assert "OK: `import asgiref` runs asgire." in capsys.readouterr().out


def test_python_dash_m_asgire_info(tmp_path: Path) -> None:
    done = _run([sys.executable, "-m", "asgire", "info"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "provided by asgire" in done.stdout


@pytest.mark.parametrize(
    "argv", [[], ["nope"], ["info", "--bogus"], ["--json", "info"], ["info", "x"]]
)
def test_usage_errors_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        ([], "no command given"),
        (["--json"], "no command given (with --json)"),
        (["nope"], "unknown command 'nope'"),
        (["--bogus", "nope"], "unknown command 'nope'"),
    ],
)
def test_no_or_an_unknown_command_lists_the_commands(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"python -m asgire: error: {error}\n" in err
    listed = err.split("commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed[: len(cli.COMMANDS)]] == list(
        cli.COMMANDS
    )
    assert "`python -m asgire <command> --help`" in err


@pytest.mark.parametrize(
    ("argv", "corrected"),
    [
        (["--json", "info"], "python -m asgire info --json"),
        (
            ["--only", "x y", "bench", "--json"],
            "python -m asgire bench --only 'x y' --json",
        ),
        (
            ["--version", "--seconds", "1", "bench"],
            "python -m asgire bench --seconds 1",
        ),
    ],
)
def test_options_before_the_command_are_shown_where_they_go(
    argv: list[str], corrected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"a command's options go after it, as in `{corrected}`" in err


def test_help_documents_commands_and_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in ("info", "bench", "exit status", "conflict", "usage error"):
        assert text in out
    assert cli.main(["info", "--help"]) == 0
    assert "--json" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"asgire {version('asgire')}"


def test_version_when_asgire_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def not_installed(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "asgire unknown (not installed)"


def test_ctrl_c_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run", interrupted)
    assert cli.main(["info"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_a_reader_that_went_away_ends_the_command_quietly(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before anything is written, as with `| head -0`
    try:
        done = subprocess.run(
            [sys.executable, "-m", "asgire", "info"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env=_child_env(),
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert done.stderr == ""


def test_a_command_that_fails_to_import_does_not_break_the_others(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(
        cli.COMMANDS, "bench", ("asgire._no_such_module", "summary", "description")
    )
    assert cli.main(["info"]) == 0
    capsys.readouterr()
    assert cli.main(["bench", "--json"]) == 1
    err = capsys.readouterr().err
    assert "unavailable" in err
    assert "asgire._no_such_module" in err
    assert cli.main(["bench", "--help"]) == 0
    assert "UNAVAILABLE" in capsys.readouterr().out


# For real: upstream asgiref installed over asgire's wheel in a fresh venv.


def _uv() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("needs uv")
    return uv


def _child_env() -> dict[str, str]:
    """This environment, minus what would point a child at another interpreter's
    packages."""
    return {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def asgire_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = _run([_uv(), "build", "--wheel", "--quiet", "-o", str(out), str(ROOT)], out)
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("asgire-*.whl")
    return wheel


@pytest.mark.timeout(180)
@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="upstream asgiref 3.13.0 needs Python 3.11+"
)
def test_upstream_installed_over_asgire_for_real(
    asgire_wheel: Path, tmp_path: Path
) -> None:
    uv = _uv()
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    steps = [
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        [uv, "pip", "install", "--quiet", "--python", python, str(asgire_wheel)],
    ]
    for step in steps:
        done = _run(step, tmp_path)
        assert done.returncode == 0, done.stderr
    info_command = [python, "-m", "asgire", "info"]
    done = _run(info_command, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr

    # What `pip install django` does to an environment that has asgire.
    step = [uv, "pip", "install", "--quiet", "--python", python, "asgiref==3.13.0"]
    done = _run(step, tmp_path)
    assert done.returncode == 0, done.stderr
    done = _run(info_command, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "CONFLICT" in done.stdout
    assert "asgiref 3.13.0" in done.stdout
    done = _run([*info_command, "--json"], tmp_path)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["problems"]
    assert report["shared_files"]
    assert [u["version"] for u in report["upstream"]] == ["3.13.0"]
    # bench times upstream's code now, and says so.
    bench = [python, "-m", "asgire", "bench", "--quiet", "--only", "build_s2a"]
    done = _run([*bench, "--seconds", "0.05"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "asgiref 3.13.0 provided by upstream asgiref 3.13.0 (asgire "
        f"{version('asgire')}'s files were overwritten: "
    ), done.stdout

    for command in report["fix"]:
        argv = [uv, *command[1:]] if command[0] == "uv" else command
        done = _run(argv, tmp_path)
        assert done.returncode == 0, f"{argv}: {done.stderr}"
    done = _run([*info_command, "--json"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["upstream"] == []
    assert [p["name"] for p in report["asgiref_import"]["provided_by"]] == ["asgire"]


# Who `import asgiref` runs, as `python -m asgire bench` reports it.


def test_import_provider_names_asgire_in_place(tmp_path: Path) -> None:
    ours = install(tmp_path / "a", "asgire", "3.13.0.post1", OUR_FILES)
    found = info.diagnose(tmp_path / "a" / "asgiref", [ours], python=PYTHON)
    assert info.import_provider(found) == ("asgire", "3.13.0.post1", "")
    # Still asgire, but installed over upstream, which shares its files.
    site = tmp_path / "b"
    upstream = install(site, "asgiref", "3.13.0", UPSTREAM_FILES)
    ours = install(site, "asgire", "3.13.0.post1", OUR_FILES)
    shared = info.diagnose(site / "asgiref", [upstream, ours], python=PYTHON)
    assert shared.conflict
    name, _, caveat = info.import_provider(shared)
    assert (name, caveat) == ("asgire", "with a conflict: see `python -m asgire info`")


def test_import_provider_names_upstream_over_asgire(tmp_path: Path) -> None:
    ours = install(tmp_path, "asgire", "3.13.0.post1", OUR_FILES)
    upstream = install(tmp_path, "asgiref", "3.13.0", UPSTREAM_FILES)
    found = info.diagnose(tmp_path / "asgiref", [ours, upstream], python=PYTHON)
    assert info.import_provider(found) == (
        "asgiref",
        "3.13.0",
        "asgire 3.13.0.post1's files were overwritten: see `python -m asgire info`",
    )
    alone = info.diagnose(tmp_path / "asgiref", [upstream], python=PYTHON)
    assert info.import_provider(alone) == ("asgiref", "3.13.0", "")


def test_import_provider_names_upstream_shadowing_an_editable_asgire(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    ours = _editable(site, tmp_path / "src")
    upstream = install(site, "asgiref", "3.13.0", UPSTREAM_FILES)
    found = info.diagnose(site / "asgiref", [ours, upstream], python=PYTHON)
    assert info.import_provider(found)[2] == (
        "asgire 0.1.0 is installed but not imported: see `python -m asgire info`"
    )


def test_import_provider_of_an_unrecorded_directory(tmp_path: Path) -> None:
    checkout = tmp_path / "asgiref"
    checkout.mkdir()
    found = info.diagnose(checkout, [], python=PYTHON)
    assert info.import_provider(found) == (
        "unknown",
        "unknown",
        f"no installed distribution records {checkout}",
    )
    assert info.import_provider(info.diagnose(None, [], python=PYTHON))[2] == (
        "no installed distribution records asgiref"
    )
