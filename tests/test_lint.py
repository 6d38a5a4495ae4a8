"""ruff is the project's lint and format standard (pyproject.toml); the suite fails when the code drifts from it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed (pip install -e '.[dev]')")
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command):
    result = subprocess.run([RUFF, *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_file_points_outside_the_repository():
    """Docs live in docs/: comments and pages cite those, never a notes file beside the repository."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    outside = ("PITFALLS.md", "STYLE.md", "../shared")
    offenders = [
        name
        for name in tracked
        if name.endswith((".py", ".md", ".toml", "Makefile"))
        and name != "tests/test_lint.py"
        and (ROOT / name).is_file()
        for text in [(ROOT / name).read_text(encoding="utf-8", errors="replace")]
        if any(marker in text for marker in outside)
    ]
    assert offenders == []
    for page in ("docs/design.md", "docs/pitfalls.md"):
        assert (ROOT / page).is_file()
