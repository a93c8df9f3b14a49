"""`selfemo validate` and `selfemo crd`: the spec's command-line face."""
from __future__ import annotations

import argparse
import json
import sys

from selfemo.runfile import RunFileError, load_runs


def _validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            runs = load_runs(path)
        except RunFileError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        for run in runs:
            name = f"{run.metadata.namespace}/{run.metadata.name}"
            if args.show_defaults:
                print(json.dumps({"metadata": {"name": run.metadata.name, "namespace": run.metadata.namespace},
                                  "spec": run.spec.model_dump(by_alias=True, mode="json")}, indent=2))
            print(f"ok: {path}: SelfEmoRun {name} (model {run.spec.model.base}, {run.spec.flywheel.rounds} round{'s' if run.spec.flywheel.rounds != 1 else ''})")
    return 1 if failed else 0


def _crd(args: argparse.Namespace) -> int:
    from selfemo.crd import crd, crd_yaml

    sys.stdout.write(json.dumps(crd(), indent=2) + "\n" if args.output == "json" else crd_yaml())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check run files (SelfEmoRun manifests) and print every problem with its field path")
    p.add_argument("files", nargs="+", metavar="RUN.yaml")
    p.add_argument("--show-defaults", action="store_true", help="print each spec with every default filled in")
    p.set_defaults(func=_validate)

    p = sub.add_parser("crd", help="print the SelfEmoRun CustomResourceDefinition generated from the spec models")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    p.set_defaults(func=_crd)
