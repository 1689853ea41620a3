"""``python -m asgire info``: check which code ``import asgiref`` really loads.

asgire installs its modules under the ``asgiref`` import name, while the
upstream ``asgiref`` distribution installs its own under the same name. Python
installers know nothing of that: installing anything that requires ``asgiref``
(Django, Channels, Daphne...) installs upstream too, and its files silently
replace ours. This command reads the installed distributions' ``RECORD`` files
to find out whether that happened, and prints the commands that repair it.

Exit status: 0 when ``import asgiref`` loads asgire's intact files, 1 when it
does not or when another distribution shares asgire's files.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import sys
import sysconfig
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

OURS = "asgire"
UPSTREAM = "asgiref"
#: The import package both distributions install.
PACKAGE = "asgiref"

#: How a uv project keeps upstream out of its environment for good: every
#: dependant's asgiref requirement is replaced by one whose marker is never true,
#: so uv leaves asgiref out of uv.lock altogether.
UV_OVERRIDE = f"override-dependencies = [\"{UPSTREAM} ; python_version == '0'\"]"


@dataclass(frozen=True)
class Installed:
    """What this check needs to know about one installed distribution."""

    name: str
    version: str
    #: Directory the paths in its RECORD are relative to.
    location: Path
    #: Contents of its INSTALLER file, e.g. ``"pip"`` or ``"uv"``.
    installer: str | None
    editable: bool
    #: A requirement that reinstalls it from where it came from.
    requirement: str
    #: URL it was installed from (``direct_url.json``), if any.
    source: str | None = None


@dataclass(frozen=True)
class Diagnosis:
    """The findings of :func:`diagnose`; a conflict whenever ``problems`` is set."""

    #: Directory of the ``asgiref`` package Python would import, if any.
    asgiref_dir: Path | None
    #: Distributions whose files back that directory (usually exactly one).
    providers: tuple[Installed, ...]
    asgire: Installed | None
    upstream: tuple[Installed, ...]
    #: How many of asgire's files under asgiref/ were compared with its RECORD.
    checked: int = 0
    #: asgire's files (RECORD paths) whose content differs from what it installed.
    replaced: tuple[str, ...] = ()
    #: asgire's files (RECORD paths) that no longer exist.
    missing: tuple[str, ...] = ()
    #: asgire's files that another distribution's RECORD claims as well.
    shared: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: Shell commands (argument lists) that repair the environment, in order.
    fix: tuple[tuple[str, ...], ...] = ()
    #: Advice on keeping upstream from coming back.
    prevent: tuple[str, ...] = ()
    #: The uv project whose environment this is, if any.
    uv_project: Path | None = None
    #: For a uv project, the steps that repair it for good, shown before ``fix``
    #: (whose ``uv pip`` commands the project's next sync would undo).
    lasting_fix: tuple[str, ...] = ()

    @property
    def conflict(self) -> bool:
        return bool(self.problems)


def normalize(name: str) -> str:
    """Canonical form of a distribution name, so ``ASGIRef`` matches ``asgiref``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def find_asgiref() -> Path | None:
    """Directory of the ``asgiref`` package this interpreter would import.

    Uses the import system's search without executing the package.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or ())
    if locations:
        return Path(locations[0])
    # A plain asgiref.py module rather than a package: report where it is.
    return Path(spec.origin).parent if spec.origin else None


def find_uv_project(
    prefix: Path | None = None, environ: dict[str, str] | None = None
) -> Path | None:
    """The uv project whose environment ``prefix`` (default: this one) is.

    That is the folder holding the environment as ``.venv`` (uv's default), or
    the nearest folder up from the working directory when
    ``UV_PROJECT_ENVIRONMENT`` names the environment; either way with a
    ``pyproject.toml`` and a ``uv.lock`` beside it.
    """
    prefix = Path(sys.prefix if prefix is None else prefix).resolve()
    environ = dict(os.environ if environ is None else environ)
    candidates: list[Path] = []
    if prefix.name == ".venv":
        candidates.append(prefix.parent)
    named = environ.get("UV_PROJECT_ENVIRONMENT")
    if named and Path(named).resolve() == prefix:
        here = Path.cwd().resolve()
        candidates += [here, *here.parents]
    for folder in candidates:
        if (folder / "pyproject.toml").is_file() and (folder / "uv.lock").is_file():
            return folder
    return None


def diagnose(
    asgiref_dir: Path | None,
    distributions: Iterable[importlib.metadata.Distribution],
    *,
    python: str = sys.executable,
    uv_project: Path | None = None,
) -> Diagnosis:
    """Work out who provides ``asgiref_dir`` and whether asgire is intact.

    ``distributions`` are those installed, in ``sys.path`` order (as
    ``importlib.metadata.distributions()`` yields them); ``python`` is the
    interpreter the printed fix commands target; ``uv_project`` the uv project
    whose environment it is (see :func:`find_uv_project`), if any.
    """
    named = [(normalize(dist.name), dist) for dist in distributions if dist.name]
    ours = next((dist for name, dist in named if name == OURS), None)
    seen: set[tuple[str, Path]] = set()
    others: list[tuple[importlib.metadata.Distribution, Installed]] = []
    for name, dist in named:
        if name == OURS:
            continue
        info = _describe(dist)
        # sys.path may list a directory twice; count each installation once.
        if (name, info.location) not in seen:
            seen.add((name, info.location))
            others.append((dist, info))
    asgire = _describe(ours) if ours is not None else None
    upstream = tuple(info for _, info in others if normalize(info.name) == UPSTREAM)

    candidates = [(ours, asgire)] if ours is not None and asgire is not None else []
    candidates += others
    owners = [
        (dist, info)
        for dist, info in candidates
        if asgiref_dir is not None and _backs(dist, info, asgiref_dir)
    ]
    if len(owners) > 1:
        # Several RECORDs list the directory: whoever's files are on disk wins.
        intact = [(dist, info) for dist, info in owners if _intact(dist)]
        owners = intact or owners
    providers = tuple(info for _, info in owners)

    replaced: list[str] = []
    missing: list[str] = []
    shared: list[str] = []
    sharers: dict[str, Installed] = {}
    checked = 0
    if ours is not None and asgire is not None and not asgire.editable:
        claimed_by_others: dict[Path, Installed] = {}
        for dist, info in others:
            for entry in _package_entries(dist, hashed_only=False):
                claimed_by_others[_resolve(dist, entry)] = info
        for entry in _package_entries(ours, hashed_only=True):
            checked += 1
            state = _check(ours, entry)
            if state == "missing":
                missing.append(str(entry.path))
            elif state == "replaced":
                replaced.append(str(entry.path))
            sharer = claimed_by_others.get(_resolve(ours, entry))
            if sharer is not None:
                shared.append(str(entry.path))
                sharers[normalize(sharer.name)] = sharer

    problems: list[str] = []
    notes: list[str] = []
    if asgiref_dir is None:
        problems.append("`import asgiref` fails: no asgiref package on sys.path.")
    elif not (asgiref_dir / "__init__.py").is_file():
        problems.append(
            f"{asgiref_dir} has no __init__.py, so asgiref imports as an empty "
            "namespace package: its files were deleted, typically by "
            "uninstalling a distribution that shared them."
        )
    foreign_providers = [info for info in providers if info is not asgire]
    if asgiref_dir is not None and providers and asgire not in providers:
        problems.append(
            f"`import asgiref` loads {_names(providers)} from {asgiref_dir}, "
            "not asgire."
        )
    elif asgiref_dir is not None and not providers:
        unrecorded = (
            f"`import asgiref` loads {asgiref_dir}, which no installed "
            "distribution records"
        )
        if asgire is not None:
            problems.append(
                f"{unrecorded}; it shadows asgire. Remove or rename that "
                "directory, or take it off sys.path (PYTHONPATH, the current "
                "directory)."
            )
        else:
            notes.append(f"{unrecorded} (a source checkout on sys.path?).")
    if replaced:
        problems.append(
            f"{len(replaced)} of asgire's files hold other content than asgire "
            f"installed: {', '.join(replaced)}."
        )
    if missing:
        problems.append(
            f"{len(missing)} of asgire's files are missing: {', '.join(missing)}."
        )
    if shared:
        problems.append(
            f"{_names(sharers.values())} also installed {len(shared)} of asgire's "
            "files under asgiref/: upgrading it puts its files back over "
            "asgire's, uninstalling it deletes them."
        )
    if asgire is None:
        notes.append("asgire is not installed as a distribution.")

    # Everything else that installs the asgiref package has to go.
    rivals = {normalize(info.name): info for info in foreign_providers}
    rivals.update(sharers)
    for info in upstream:
        if normalize(info.name) not in rivals:
            notes.append(
                f"Upstream asgiref {info.version} is also installed, in "
                f"{info.location}. asgire is the one imported, but installers "
                "treat upstream as satisfying requirements on asgiref and may "
                "upgrade it over asgire later: uninstall it."
            )
            rivals[normalize(info.name)] = info

    fix: list[tuple[str, ...]] = []
    by_installer: dict[str | None, list[str]] = {}
    for info in rivals.values():
        by_installer.setdefault(info.installer, []).append(info.name)
    for installer, names in by_installer.items():
        fix.append(_uninstall_command(installer, names, python))
    if asgire is None and rivals:
        installer = next(iter(rivals.values())).installer
        fix.append(_install_command(installer, OURS, python))
    elif asgire is not None and not asgire.editable and (replaced or missing or shared):
        fix.append(_install_command(asgire.installer, asgire.requirement, python))

    prevent: list[str] = []
    lasting_fix: tuple[str, ...] = ()
    if rivals:
        # Removing upstream deletes the files it shares with asgire: the sync
        # has to put asgire's back (an editable asgire has none there).
        sync = "uv sync"
        if asgire is None or not asgire.editable:
            sync += " --reinstall-package asgire"
        if uv_project is not None:
            # The override keeps upstream out for good; nothing else to advise.
            lasting_fix = (
                f"add to {uv_project / 'pyproject.toml'}, under [tool.uv]: "
                f"{UV_OVERRIDE}",
                f"in {uv_project}: {sync}",
            )
        else:
            prevent = [
                "uv projects: add to pyproject.toml, under [tool.uv], "
                f"{UV_OVERRIDE}, then run `{sync}`; upstream asgiref is then "
                "never installed.",
                "pip: nothing tells pip that asgire provides asgiref, so any "
                "later install that requires asgiref brings upstream back (and "
                "`pip check` reports asgiref missing once it is gone). Run "
                "`python -m asgire info` after installing or upgrading "
                "dependencies, e.g. as a CI step.",
            ]
    return Diagnosis(
        asgiref_dir=asgiref_dir,
        providers=providers,
        asgire=asgire,
        upstream=upstream,
        checked=checked,
        replaced=tuple(replaced),
        missing=tuple(missing),
        shared=tuple(shared),
        problems=tuple(problems),
        notes=tuple(notes),
        fix=tuple(fix),
        prevent=tuple(prevent),
        uv_project=uv_project,
        lasting_fix=lasting_fix,
    )


def import_provider(diagnosis: Diagnosis) -> tuple[str, str, str]:
    """Who ``import asgiref`` really runs: ``(distribution, version, caveat)``.

    The caveat is empty when asgire is in place without conflict, and
    otherwise says in a few words what is wrong (``python -m asgire bench``
    prints it beside its figures).
    """
    asgire = diagnosis.asgire
    if diagnosis.providers and asgire in diagnosis.providers:
        caveat = "with a conflict: see `python -m asgire info`"
        return asgire.name, asgire.version, caveat if diagnosis.conflict else ""
    if diagnosis.providers:
        first = diagnosis.providers[0]
        if asgire is None:
            return first.name, first.version, ""
        if diagnosis.replaced or diagnosis.missing:
            caveat = f"asgire {asgire.version}'s files were overwritten"
        else:
            caveat = f"asgire {asgire.version} is installed but not imported"
        return first.name, first.version, f"{caveat}: see `python -m asgire info`"
    where = diagnosis.asgiref_dir or "asgiref"
    return "unknown", "unknown", f"no installed distribution records {where}"


def _names(infos: Iterable[Installed]) -> str:
    return " and ".join(f"{info.name} {info.version}" for info in infos)


def _describe(dist: importlib.metadata.Distribution) -> Installed:
    direct_url = _direct_url(dist) or {}
    dir_info = direct_url.get("dir_info")
    url = direct_url.get("url")
    installer = dist.read_text("INSTALLER")
    return Installed(
        name=dist.name,
        version=dist.version,
        location=Path(str(dist.locate_file(""))).resolve(),
        installer=(installer or "").strip().lower() or None,
        editable=isinstance(dir_info, dict) and dir_info.get("editable") is True,
        requirement=_requirement(dist, direct_url),
        source=url if isinstance(url, str) else None,
    )


def _direct_url(dist: importlib.metadata.Distribution) -> dict[str, Any] | None:
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _requirement(
    dist: importlib.metadata.Distribution, direct_url: dict[str, Any]
) -> str:
    """Reinstall from the same wheel, checkout or URL when that is still there."""
    pinned = f"{dist.name}=={dist.version}"
    url = direct_url.get("url")
    if not isinstance(url, str) or not url:
        return pinned
    vcs_info = direct_url.get("vcs_info")
    if isinstance(vcs_info, dict):
        vcs, commit = vcs_info.get("vcs"), vcs_info.get("commit_id")
        if isinstance(vcs, str) and isinstance(commit, str):
            return f"{dist.name} @ {vcs}+{url}@{commit}"
        return pinned
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file" and not os.path.exists(
        urllib.request.url2pathname(parsed.path)
    ):
        return pinned
    return f"{dist.name} @ {url}"


@dataclass(frozen=True)
class _Entry:
    """One row of a RECORD file."""

    path: PurePosixPath
    #: ``(algorithm, urlsafe-base64 digest)``, or None for unhashed rows.
    hash: tuple[str, str] | None


def _record(dist: importlib.metadata.Distribution) -> list[_Entry]:
    """Every row of ``dist``'s RECORD.

    Read directly because ``Distribution.files`` leaves out files that no
    longer exist on Python 3.12+, and missing files are what we look for.
    """
    entries = []
    for row in csv.reader((dist.read_text("RECORD") or "").splitlines()):
        if not row or not row[0]:
            continue
        algorithm, _, digest = (row[1] if len(row) > 1 else "").partition("=")
        hashed = (algorithm, digest) if algorithm and digest else None
        entries.append(_Entry(PurePosixPath(row[0]), hashed))
    return entries


def _package_entries(
    dist: importlib.metadata.Distribution, *, hashed_only: bool
) -> list[_Entry]:
    return [
        entry
        for entry in _record(dist)
        if entry.path.parts[:1] == (PACKAGE,)
        and "__pycache__" not in entry.path.parts
        and (entry.hash is not None or not hashed_only)
    ]


def _locate(dist: importlib.metadata.Distribution, entry: _Entry) -> Path:
    return Path(str(dist.locate_file(str(entry.path))))


def _resolve(dist: importlib.metadata.Distribution, entry: _Entry) -> Path:
    return _locate(dist, entry).resolve()


def _check(dist: importlib.metadata.Distribution, entry: _Entry) -> str:
    """``"ok"``, ``"replaced"`` or ``"missing"`` for one hashed RECORD entry."""
    assert entry.hash is not None
    algorithm, expected = entry.hash
    try:
        content = _locate(dist, entry).read_bytes()
    except OSError:
        return "missing"
    try:
        digest = hashlib.new(algorithm, content).digest()
    except ValueError:
        return "ok"  # an algorithm this Python lacks: nothing to compare with
    encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return "ok" if encoded == expected else "replaced"


def _intact(dist: importlib.metadata.Distribution) -> bool:
    return all(
        _check(dist, entry) == "ok"
        for entry in _package_entries(dist, hashed_only=True)
    )


def _backs(
    dist: importlib.metadata.Distribution, info: Installed, asgiref_dir: Path
) -> bool:
    """Whether ``dist`` installed the package directory ``asgiref_dir``."""
    target = asgiref_dir.resolve()
    for entry in _package_entries(dist, hashed_only=False):
        if len(entry.path.parts) == 2 and _resolve(dist, entry).parent == target:
            return True
    if info.editable:
        return any(target in (root, root / PACKAGE) for root in _editable_roots(dist))
    return False


#: Quoted strings in the small loader files editable installs leave behind.
_QUOTED = re.compile(r"""["']([^"'\n]+)["']""")


def _editable_roots(dist: importlib.metadata.Distribution) -> list[Path]:
    """Source directories an editable install points ``sys.path`` or a finder at.

    Editable installs record a ``.pth`` file (lines that are paths, or an
    import of a generated finder module) instead of the package's files;
    any absolute directory named in those top-level files is a candidate.
    """
    roots: list[Path] = []
    for entry in _record(dist):
        if len(entry.path.parts) != 1 or entry.path.suffix not in (".pth", ".py"):
            continue
        try:
            text = _locate(dist, entry).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        candidates = text.splitlines() if entry.path.suffix == ".pth" else []
        candidates += _QUOTED.findall(text)
        for candidate in candidates:
            candidate = candidate.strip()
            if os.path.isabs(candidate) and os.path.isdir(candidate):
                roots.append(Path(candidate).resolve())
    return roots


def _uninstall_command(
    installer: str | None, names: list[str], python: str
) -> tuple[str, ...]:
    if installer == "uv":
        return ("uv", "pip", "uninstall", "--python", python, *names)
    return (python, "-m", "pip", "uninstall", "-y", *names)


def _install_command(
    installer: str | None, requirement: str, python: str
) -> tuple[str, ...]:
    if installer == "uv":
        return (
            "uv", "pip", "install", "--python", python,
            "--reinstall", "--no-deps", requirement,
        )  # fmt: skip
    return (
        python, "-m", "pip", "install", "--force-reinstall", "--no-deps", requirement,
    )  # fmt: skip


# gil_enabled(): whether the GIL is on, sys._is_gil_enabled() (3.13+; a
#   free-threaded build can answer False). Fallback: True, all an older build
#   can be. Checked on 3.13-3.15. Can go: when sys offers it publicly. Here,
#   not in asgiref._compat: this check must run over upstream's asgiref,
#   which has none (asgire.bench, run alone, reads it on a marked line too).
#   tests/test_compat.py pins it live with the library's capabilities.
gil_enabled: Callable[[], bool] = getattr(
    sys,
    "_is_gil_enabled",  # cpython-private: _is_gil_enabled
    None,
) or (lambda: True)


def python_facts() -> dict[str, Any]:
    """Version, implementation and threading model of the running interpreter."""
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        # A free-threaded build re-enables the GIL for incompatible extensions.
        "gil_enabled": gil_enabled(),
    }


def _installed_json(info: Installed | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "name": info.name,
        "version": info.version,
        "location": str(info.location),
        "installer": info.installer,
        "editable": info.editable,
        "source": info.source,
    }


def to_json(diagnosis: Diagnosis, python: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` document."""
    return {
        "ok": not diagnosis.conflict,
        "asgire": _installed_json(diagnosis.asgire),
        "python": python,
        "asgiref_import": {
            "path": str(diagnosis.asgiref_dir) if diagnosis.asgiref_dir else None,
            "provided_by": [_installed_json(info) for info in diagnosis.providers],
        },
        "upstream": [_installed_json(info) for info in diagnosis.upstream],
        "checked_files": diagnosis.checked,
        "replaced_files": list(diagnosis.replaced),
        "missing_files": list(diagnosis.missing),
        "shared_files": list(diagnosis.shared),
        "problems": list(diagnosis.problems),
        "notes": list(diagnosis.notes),
        "uv_project": str(diagnosis.uv_project) if diagnosis.uv_project else None,
        "lasting_fix": list(diagnosis.lasting_fix),
        "fix": [list(command) for command in diagnosis.fix],
        "prevent": list(diagnosis.prevent),
    }


def to_text(diagnosis: Diagnosis, python: dict[str, Any]) -> str:
    """The human-readable report."""
    asgire = diagnosis.asgire
    lines = []
    if asgire is None:
        lines.append("asgire:   not installed as a distribution")
    else:
        by = f" by {asgire.installer}" if asgire.installer else ""
        if asgire.editable:
            how = f"editable install of {asgire.source or '?'}{by}"
        else:
            how = f"installed{by} in {asgire.location}"
        lines.append(f"asgire:   {asgire.version} ({how})")
    threading_model = "GIL enabled" if python["gil_enabled"] else "GIL disabled"
    if python["free_threaded"]:
        threading_model = f"free-threaded build, {threading_model}"
    lines.append(
        f"Python:   {python['version']} ({python['implementation']}, "
        f"{threading_model}) {python['executable']}"
    )
    where = diagnosis.asgiref_dir if diagnosis.asgiref_dir else "not importable"
    lines.append(f"asgiref:  {where}")
    provided = (
        _names(diagnosis.providers) if diagnosis.providers else "nothing recorded"
    )
    lines.append(f"          provided by {provided}")
    lines += [
        f"upstream: asgiref {info.version} installed in {info.location}"
        for info in diagnosis.upstream
    ] or ["upstream: asgiref not installed"]
    if asgire is not None and not asgire.editable:
        damaged = len(diagnosis.replaced) + len(diagnosis.missing)
        state = f"{damaged} replaced or missing" if damaged else "all intact"
        lines.append(
            f"files:    {diagnosis.checked} of asgire's under asgiref/, {state}"
        )
    lines.append("")
    lines += [f"PROBLEM: {problem}" for problem in diagnosis.problems]
    lines += [f"note: {note}" for note in diagnosis.notes]
    if diagnosis.lasting_fix:
        lines += ["", "Fix for good, in this uv project (in this order):"]
        lines += [
            f"  {number}. {step}"
            for number, step in enumerate(diagnosis.lasting_fix, start=1)
        ]
    if diagnosis.fix and diagnosis.lasting_fix:
        lines += [
            "",
            "Or for this environment only, until the project's next `uv sync` "
            "or `uv run` installs upstream again (in this order):",
        ]
        lines += [f"  {shlex.join(command)}" for command in diagnosis.fix]
    elif diagnosis.fix:
        lines += ["", "Fix (run in this order):"]
        lines += [f"  {shlex.join(command)}" for command in diagnosis.fix]
    if diagnosis.prevent:
        lines += ["", "Keep it fixed:"]
        lines += [f"  - {advice}" for advice in diagnosis.prevent]
    if diagnosis.problems or diagnosis.notes or diagnosis.fix:
        lines.append("")
    if diagnosis.conflict:
        lines.append("CONFLICT: `import asgiref` does not run asgire as installed.")
    else:
        lines.append("OK: `import asgiref` runs asgire.")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``info`` command's options to ``parser``."""
    parser.add_argument(
        "--json", action="store_true", help="print a JSON document instead of text"
    )


def run(args: argparse.Namespace) -> int:
    """Print the report; return 1 on a conflict, else 0."""
    diagnosis = diagnose(
        find_asgiref(),
        importlib.metadata.distributions(),
        uv_project=find_uv_project(),
    )
    python = python_facts()
    if args.json:
        print(json.dumps(to_json(diagnosis, python), indent=2))
    else:
        print(to_text(diagnosis, python))
    return 1 if diagnosis.conflict else 0
