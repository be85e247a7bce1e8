"""The install: every package of the source tree is in pyproject's list (setuptools installs only what is listed)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra installs tomli on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dtn_bench").rglob("__init__.py")}
    found |= {"dtn_bench._suites"}  # package-dir maps it to suites/ (the presets, data files only)
    assert listed == found, f"pyproject lists {sorted(listed - found)} extra, misses {sorted(found - listed)}"


def test_the_version_has_one_home():
    cfg = _pyproject()
    assert "version" not in cfg["project"] and "version" in cfg["project"]["dynamic"]
    text = (ROOT / "dtn_bench" / "__init__.py").read_text()
    literal = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    assert literal is not None, "dtn_bench/__init__.py must hold __version__ as a literal (setuptools reads it)"

    import dtn_bench

    assert dtn_bench.__version__ == literal.group(1)


def test_lint_rules_are_on_and_the_tree_is_clean():
    """pyproject's ruff rules (docstrings in the Google convention, complexity) hold on the whole tree."""
    import shutil
    import subprocess

    lint = _pyproject()["tool"]["ruff"]["lint"]
    assert {"D", "C901"} <= set(lint["select"]) and lint["pydocstyle"]["convention"] == "google"
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff (the dev extra) is not installed"
    done = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", str(ROOT)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
