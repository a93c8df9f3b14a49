"""`selfemo data ...`: look at a corpus before training on it.

`selfemo data stats --format meld ../shared/erc/meld` loads it exactly as a run
would and prints what it holds per split, so a bad file or a wrong folder is
found here, with `file:line`, and not hours into a run.
"""
from __future__ import annotations

import argparse
import json
import sys

from selfemo.data.errors import LoadReport
from selfemo.data.loaders import FORMATS, load_dialogues
from selfemo.data.stats import compute_stats, format_table


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect ERC corpora", description=__doc__.split("\n\n")[0])
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND")
    commands.required = True

    stats = commands.add_parser(
        "stats",
        help="dialogues, utterances and label distribution per split",
        description="Load a corpus and print, per split, its dialogues, utterances and label distribution.",
    )
    stats.add_argument("--format", required=True, choices=FORMATS, help="corpus format")
    stats.add_argument("path", metavar="PATH", help="folder with the official file names, or one file")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument("--skip-bad-rows", action="store_true",
                       help="leave out bad rows (counted on stderr) instead of stopping at the first")
    stats.add_argument("--labels", metavar="A,B,C", help="label set of a jsonl corpus without a header line")
    stats.set_defaults(func=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    """Exit 0 with the statistics, or 2 with `error: file:line: ...` on stderr."""
    report = LoadReport()
    try:
        dialogues = load_dialogues(args.format, args.path, skip_bad_rows=args.skip_bad_rows,
                                   labels=args.labels, report=report)
        stats = compute_stats(dialogues, report.vocab)
    except ValueError as exc:  # DataError and bad arguments: the user's to fix, not a crash
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in report.summary():
        print(line, file=sys.stderr)
    if args.json:
        print(json.dumps({"format": args.format, "path": args.path, "splits": stats}, indent=2))
    else:
        print(format_table(stats))
    return 0
