"""Print the pip requirements of one image, read from pyproject.toml.

Usage (in an image's build stage, from the repository root):
    python images/requirements.py generator > /wheels/requirements.txt

pyproject.toml stays the one source of versions: an image installs the core
dependencies plus the `gpu` extra, less what it does not run — the trainer
never runs vLLM (it would drag a second CUDA torch in), the generator never
runs DeepSpeed. Python 3.11's tomllib only: this runs before anything is
installed.
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

EXCLUDE = {"generator": {"deepspeed"}, "trainer": {"vllm"}}


def requirement_name(requirement: str) -> str:
    """The distribution name of a PEP 508 requirement, normalised."""
    return re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def requirements(component: str, pyproject: Path) -> list[str]:
    if component not in EXCLUDE:
        raise SystemExit(f"unknown image {component!r}: one of {', '.join(sorted(EXCLUDE))}")
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = list(project["dependencies"]) + list(project["optional-dependencies"]["gpu"])
    return [r for r in wanted if requirement_name(r) not in EXCLUDE[component]]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parent.parent
    print("\n".join(requirements(argv[0], root / "pyproject.toml")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
