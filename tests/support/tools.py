"""Where the static checkers live: checkov and hadolint, in `.venv-tools`.

`make setup` (and so `make test` and CI) creates that venv from
requirements/tools.txt: checkov pins boto3 and others to versions that clash
with the product's pins, so it cannot share `.venv`. A missing tool fails the
test that needs it, naming the fix, rather than skipping it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tools_bin() -> Path:
    return Path(os.environ.get("SELFEMO_TOOLS_VENV") or REPO / ".venv-tools") / "bin"


def tool(name: str) -> str:
    path = tools_bin() / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run `make setup` (it creates .venv-tools from requirements/tools.txt)")
    return str(path)
