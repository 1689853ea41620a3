"""``python -m asgire bench --compare`` against the real upstream asgiref 3.13.0.

Upstream's wheel comes from the folder scripts/test-integration fills, so the
throwaway environment is built offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_compare_measures_asgire_against_upstream(tmp_path: Path) -> None:
    wheels = os.environ.get("ASGIRE_INTEGRATION_WHEELS")
    if not wheels:
        pytest.fail(
            "ASGIRE_INTEGRATION_WHEELS is not set: run scripts/test-integration"
        )
    options = [
        "--json", "--seconds", "0.1", "--upstream-from", str(Path(wheels) / "upstream"),
        "--only", "bare_hop", "s2a_sensitive", "local_get",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "asgire", "bench", "--compare", *options],
        cwd=tmp_path,
        env={**os.environ, "UV_CACHE_DIR": str(tmp_path / "uv-cache")},
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    upstream = document["environment"]["upstream"]
    assert (upstream["provider"], upstream["provider_version"]) == ("asgiref", "3.13.0")
    # Upstream ran from the throwaway environment, asgire from this one.
    assert not upstream["module"].startswith(sys.prefix)
    assert document["environment"]["asgire"]["module"].startswith(sys.prefix)
    for name in ("bare_hop", "s2a_sensitive", "local_get"):
        result = document["results"][name]
        assert result["pairs"] >= 3, result
        assert result["ratio"] > 0
