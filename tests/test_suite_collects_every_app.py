"""`make test` (and CI) runs pytest with the project's ``testpaths``: an app whose tests lie outside them is
never run. analytics/ and engagement/ were left out that way until the thirteenth session of issue 15."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIPPED = {".venv", ".git", ".run", "node_modules", "static", "media"}


def test_every_test_file_of_the_project_lies_under_a_testpath():
    testpaths = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["testpaths"]
    roots = [ROOT / path for path in testpaths]
    test_files = [
        path
        for path in ROOT.rglob("test_*.py")
        if not SKIPPED & set(path.relative_to(ROOT).parts) and "scratch" not in path.parts
    ]
    assert any(path.is_relative_to(ROOT / "analytics") for path in test_files)
    outside = sorted(
        str(path.relative_to(ROOT)) for path in test_files if not any(path.is_relative_to(r) for r in roots)
    )
    assert outside == []
