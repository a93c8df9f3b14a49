"""Packaging: every source folder ships, and the component folders import as
subpackages of selfemo without shadowing the standard library."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP = {"selfemo": "selfemo", "generator": "selfemo.generator", "trainer": "selfemo.trainer", "operator": "selfemo.operator"}


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in TOP.items():
        for d in [REPO / folder, *(p for p in (REPO / folder).rglob("*") if p.is_dir())]:
            if "__pycache__" in d.parts or not any(d.glob("*.py")):
                continue
            found.add(".".join([name, *d.relative_to(REPO / folder).parts]) if d != REPO / folder else name)
    assert found == listed


def test_operator_folder_does_not_shadow_stdlib():
    assert not (REPO / "operator" / "__init__.py").exists()
    out = subprocess.run([sys.executable, "-c", "import operator, selfemo.operator; print(operator.__file__)"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "site-packages" not in out and "/operator/" not in out.replace("operator.py", "")


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "selfemo", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for command in ("validate", "crd", "data", "models", "selfcheck"):
        assert command in out.stdout


def test_component_packages_import():
    import selfemo.generator
    import selfemo.operator.labels as labels
    import selfemo.trainer

    assert labels.child_labels("r", 2, "trainer")["selfemo.dev/round"] == "2"
    assert selfemo.generator.__name__ == "selfemo.generator" and selfemo.trainer.__name__ == "selfemo.trainer"
