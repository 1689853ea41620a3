import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.version import Version

import asgiref

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_version_mirrors_upstream_api_level() -> None:
    assert asgiref.__version__ == "3.13.0"


def _declared_version() -> Version:
    found = re.search(r'^version = "([^"]+)"$', PYPROJECT.read_text(), re.MULTILINE)
    assert found, "pyproject.toml declares no version"
    return Version(found.group(1))


@pytest.mark.asgire_only
def test_distribution_version_is_a_post_release_of_the_mirrored_level() -> None:
    # Releases of asgire are post-releases of the upstream level they mirror
    # (3.13.0.post1, .post2...), so each sorts above the asgire 3.13.0 already
    # published by the index and above upstream's own 3.13.0.
    declared = _declared_version()
    assert declared.is_postrelease
    assert declared.base_version == asgiref.__version__
    assert declared > Version(asgiref.__version__)
    assert Version(importlib.metadata.version("asgire")) == declared
