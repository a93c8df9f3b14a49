"""The `selfemo` command line.

Each feature module owns its sub-commands through a ``register(subparsers)``
function; this module only wires them together, importing lazily so that
`selfemo --help` stays fast and a CPU laptop without torch can still run
`selfemo validate` or `selfemo data stats`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (module, one-line help) per top-level command group. Modules expose
# ``register(subparsers)`` which adds their parsers and sets ``func``.
COMMAND_MODULES = (
    "selfemo.data.cli",
    "selfemo.spec_cli",
    "selfemo.models",
    "selfemo.selfcheck",
    "selfemo.run_cli",
    "selfemo.report_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfemo",
        description="SELF-EMO self-evolution for emotion recognition in conversation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `selfemo ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
