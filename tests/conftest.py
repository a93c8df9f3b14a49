"""Shared test configuration.

Fixtures that start real local servers or build models live in
``tests/support/`` and are registered here as plugins.
"""
from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))  # so tests can `import support.xyz`

pytest_plugins = ["support.paths", "support.seaweedfs", "support.models", "support.kube"]
