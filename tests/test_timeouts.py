"""A hang fails fast: every test has a time limit (pyproject.toml), so a stuck loop fails its test instead of
burning CI's 90 minutes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_hanging_test_fails_with_a_timeout(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(
        "import time\nimport pytest\n\n\n@pytest.mark.timeout(1)\ndef test_hang():\n    time.sleep(30)\n"
    )
    run = subprocess.run(  # noqa: S603 (this interpreter's pytest)
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode != 0
    assert "Timeout" in run.stdout + run.stderr, run.stdout[-2000:]


def test_the_suite_has_a_time_limit() -> None:
    import tomllib

    from tests.conftest import ROOT_DIR

    options = tomllib.loads((ROOT_DIR / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < int(options["timeout"]) <= 300
