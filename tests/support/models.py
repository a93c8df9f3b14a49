"""Model fixtures: the real built-in checkpoint and a tiny random Llama beside its tokenizer."""
from __future__ import annotations

from pathlib import Path

import pytest

from selfemo.models import DEFAULT_MODEL, pull_model
from selfemo.testing import build_tiny_model


@pytest.fixture(scope="session")
def builtin_model_dir() -> Path:
    """The built-in SmolLM2-135M-Instruct checkpoint.

    Pulled into the user cache (not a tmp dir) so a machine pays the download
    and conversion once, not once per test session. Treat it as read-only.
    """
    return pull_model(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tiny_model_dir(builtin_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with the SmolLM2 tokenizer (seed 0); read-only, copy it to modify."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), builtin_model_dir, seed=0)
