"""Shared by the migration tests: offline wheels and the README's own commands."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import zipfile
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[3] / "README.md"

#: Run by an environment's Python: prints "N intact" when every file upstream
#: asgiref recorded under asgiref/ holds what it installed.
UPSTREAM_INTACT = """
import asgiref.sync, base64, hashlib, importlib.metadata as m
dist = m.distribution("asgiref")
checked = 0
for file in dist.files:
    if file.parts[0] == "asgiref" and file.hash:
        digest = hashlib.new(file.hash.mode, file.read_binary()).digest()
        assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == file.hash.value
        checked += 1
print(checked, "intact")
"""


def wheel_dirs(extra: Path) -> list[Path]:
    """Where the offline installs find their wheels: asgire built from this
    checkout and upstream asgiref 3.13.0 (filled by scripts/test-integration),
    plus ``extra``, which gets a stand-in for Django (see dependant_wheel)."""
    wheels = os.environ.get("ASGIRE_INTEGRATION_WHEELS")
    if not wheels:
        pytest.fail(
            "ASGIRE_INTEGRATION_WHEELS is not set: run scripts/test-integration"
        )
    extra.mkdir(parents=True, exist_ok=True)
    dependant_wheel(extra)
    return [Path(wheels) / "asgire", Path(wheels) / "upstream", extra]


def dependant_wheel(directory: Path) -> None:
    """A stand-in for Django: a distribution that requires upstream asgiref."""
    files = {
        "needs_asgiref/__init__.py": b"",
        "needs_asgiref-1.0.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: needs-asgiref\nVersion: 1.0\n"
            b"Requires-Dist: asgiref>=3.8\n"
        ),
        "needs_asgiref-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: asgire-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = []
    for name, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(content)}")
    record.append("needs_asgiref-1.0.dist-info/RECORD,,")
    files["needs_asgiref-1.0.dist-info/RECORD"] = "\n".join(record).encode() + b"\n"
    with zipfile.ZipFile(
        directory / "needs_asgiref-1.0-py3-none-any.whl", "w"
    ) as wheel:
        for name, content in files.items():
            wheel.writestr(name, content)


def readme_block(marker: str) -> str:
    """The fenced block between ``<!-- marker -->`` and ``<!-- /marker -->``."""
    found = re.search(
        rf"<!-- {marker} -->\n```\w+\n(.*?)```\n<!-- /{marker} -->",
        README.read_text(encoding="utf-8"),
        re.DOTALL,
    )
    assert found, f"README.md has no <!-- {marker} --> block with a fenced body"
    return found.group(1)


def readme_commands(marker: str) -> list[str]:
    """The commands of a README console block, comments left out."""
    lines = (
        line.partition("#")[0].strip() for line in readme_block(marker).splitlines()
    )
    return [line for line in lines if line]
