"""Where the shared benchmark data lives (never copied into the repo)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ERC = Path(os.environ.get("SELFEMO_ERC_DIR", REPO.parent / "shared" / "erc"))


@pytest.fixture(scope="session")
def erc_dir() -> Path:
    """The shared ERC corpora; a missing folder is a broken checkout, not a skip."""
    assert ERC.is_dir(), f"shared ERC data not found at {ERC} (set SELFEMO_ERC_DIR)"
    return ERC
