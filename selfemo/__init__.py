"""selfemo: SELF-EMO self-evolution for emotion recognition in conversation.

The core library every component imports (spec, data, rewards, metrics,
store, models, CLI). The components are subpackages: ``selfemo.generator``,
``selfemo.trainer`` and ``selfemo.operator``.
"""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# The component folders (operator/, generator/, trainer/) sit beside this one
# in the repository and are installed as subpackages of selfemo. `operator/`
# must not contain an __init__.py (it would shadow the standard library's
# `operator` for anything started from the repository root), and setuptools'
# editable finder cannot map a package without one; so when running from a
# source checkout we let Python look for subpackages in the repository root
# too. Installed wheels carry the folders inside selfemo/ and skip this.
_repo_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isdir(_os.path.join(_repo_root, "operator")) and not _os.path.isdir(
    _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "operator")
):
    __path__.append(_repo_root)  # type: ignore[name-defined]  # noqa: F821
