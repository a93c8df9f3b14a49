"""`selfemo run RUN.yaml`: run a whole SELF-EMO flywheel on this machine.

The same file `kubectl apply -f` takes: the rounds, their order, the store
layout and the commands are the cluster's; only the executor differs (local
processes instead of Deployments and Jobs). Run the same command again to
resume an interrupted run.
"""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("run", help="run a SelfEmoRun's flywheel rounds on this machine (resumable)",
                       description=__doc__)
    p.add_argument("run_file", metavar="RUN.yaml", help="the SelfEmoRun manifest (e.g. examples/quickstart.yaml)")
    p.add_argument("--max-parallel", type=int, default=1,
                   help="children (generator shards, …) alive at once; default 1 on a laptop")
    p.add_argument("--logs-dir", default=None,
                   help="where each child's log goes (default: <run dir>/logs for a local store, ./selfemo-logs for S3)")
    p.add_argument("--store", default=None, metavar="DIR_OR_URI",
                   help="artefact store root instead of spec.storage.uri (a directory, file:///abs or s3://bucket/prefix)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="resolve each dataset whose uri is a relative path as DIR/<its last component> "
                        "(e.g. --data-dir /data/erc for uri ../shared/erc/meld → /data/erc/meld)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between reconcile passes")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from selfemo.runfile import RunFileError, load_run

    try:
        run = load_run(args.run_file)
        if args.store or args.data_dir:
            run = with_overrides(run, store=args.store, data_dir=args.data_dir)
    except RunFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from selfemo.operator.local import EXIT_CODES, LocalExecutor

    config = args.run_file
    if args.store or args.data_dir:
        config = _write_effective(run, args.logs_dir)
    executor = LocalExecutor(run, config, logs_dir=args.logs_dir, max_parallel=args.max_parallel,
                             poll_seconds=args.poll)
    print(f"run {run.metadata.namespace}/{run.metadata.name}: artefacts in {executor.layout.uri}", file=sys.stderr)
    status = _stopped_by_sigterm_as_by_ctrl_c(executor.run_to_end)
    print(format_summary(status))
    return EXIT_CODES.get(status.phase, 1)


def _stopped_by_sigterm_as_by_ctrl_c(run_to_end):
    """`kill` (SIGTERM) takes the Ctrl-C path: children run in their own
    sessions, so without it they would outlive a terminated `selfemo run`."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
        return run_to_end()
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return run_to_end()
    finally:
        signal.signal(signal.SIGTERM, previous)


def with_overrides(run, *, store: str | None, data_dir: str | None):
    """The run with its store and/or relative dataset paths replaced (validated again)."""
    from pathlib import Path
    from urllib.parse import urlsplit

    from selfemo.runfile import RunFileError, check_manifest

    doc = run.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc.pop("status", None)
    if store:
        doc["spec"]["storage"]["uri"] = store if urlsplit(store).scheme else str(Path(store).resolve())
    if data_dir:
        for group in ("train", "eval"):
            for ref in doc["spec"]["datasets"].get(group, []):
                if not urlsplit(ref["uri"]).scheme and not Path(ref["uri"]).is_absolute():
                    ref["uri"] = str(Path(data_dir).resolve() / Path(ref["uri"]).name)
    new, problems = check_manifest(doc)
    if new is None:
        raise RunFileError("command-line overrides", problems)
    return new


def _write_effective(run, logs_dir: str | None) -> str:
    """Children read a file: write the overridden run where its logs go."""
    from pathlib import Path

    import yaml

    from selfemo.operator.local import default_logs_dir
    from selfemo.policy import run_layout

    folder = Path(logs_dir) if logs_dir else default_logs_dir(run, run_layout(run).uri)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "effective-run.yaml"
    doc = run.model_dump(by_alias=True, exclude_none=True, mode="json")
    doc.pop("status", None)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def format_summary(status) -> str:
    """The run's outcome: phase, best round and the eval scores of every round."""
    best = "-" if status.best_weighted_f1 is None else f"{status.best_weighted_f1:.2f}"
    lines = [f"phase {status.phase.value}, best round {status.best_round} (mean weighted-F1 {best})"]
    if status.message:
        lines.append(status.message)
    names = sorted({k for r in status.rounds for k in r.eval if k != "mean"})
    if names:
        lines.append("round  " + "  ".join(f"{n:>10}" for n in [*names, "mean"]) + "   kept/generated  reward")
        for r in status.rounds:
            scores = "  ".join(f"{r.eval[n]:10.2f}" if n in r.eval else f"{'-':>10}" for n in [*names, "mean"])
            reward = "-" if r.mean_reward is None else f"{r.mean_reward:.3f}"
            lines.append(f"{r.round:5d}  {scores}   {r.samples_kept:>6}/{r.samples_generated:<8} {reward}")
    return "\n".join(lines)
