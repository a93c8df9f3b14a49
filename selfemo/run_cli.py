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
    p.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                   help="seconds between progress lines when stderr is not a terminal (a terminal gets a live line)")
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
    missing = missing_data(run)
    if missing:  # before anything is started or written: a child would only fail later, retried
        print(format_missing_data(args.run_file, missing), file=sys.stderr)
        return 2
    from selfemo.operator.local import EXIT_CODES, LocalExecutor
    from selfemo.operator.progress_view import TerminalLine

    config = args.run_file
    if args.store or args.data_dir:
        config = _write_effective(run, args.logs_dir)
    live = TerminalLine() if sys.stderr.isatty() else None
    view = {"echo": live.print, "show": live.show, "heartbeat_seconds": args.poll} if live else \
        {"heartbeat_seconds": args.progress_every}
    executor = LocalExecutor(run, config, logs_dir=args.logs_dir, max_parallel=args.max_parallel,
                             poll_seconds=args.poll, **view)
    print(f"run {run.metadata.namespace}/{run.metadata.name}: artefacts in {executor.layout.uri}", file=sys.stderr)
    status = None
    try:
        status = _stopped_by_signals(executor)
    except KeyboardInterrupt:
        pass
    finally:
        if live:
            live.close()
    if status is None:
        print(f"stopped: status saved in {executor.layout.uri}/status.json; committed work is kept. "
              f"To resume, run the same command again:\n  {resume_command(args)}", file=sys.stderr)
        return 130
    print(format_summary(status))
    return EXIT_CODES.get(status.phase, 1)


def _stopped_by_signals(executor):
    """Ctrl-C (SIGINT) and `kill` (SIGTERM) stop the run at its next step:
    children run in their own sessions, so they are stopped by the executor
    (never left running) and the status is saved. A second signal before
    the children are being stopped interrupts at once, for a step stuck on an
    unreachable store; once they are, the stop is let finish."""
    import signal
    import threading

    def stop(signum, frame):
        if executor.stop_requested and not executor.shutting_down:
            raise KeyboardInterrupt
        executor.request_stop()

    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
        return executor.run_to_end()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return executor.run_to_end()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def resume_command(args) -> str:
    """The `selfemo run` command line that resumes this run (same file, same overrides)."""
    import shlex

    words = ["selfemo", "run", args.run_file]
    for flag, value, default in (("--store", args.store, None), ("--data-dir", args.data_dir, None),
                                 ("--logs-dir", args.logs_dir, None), ("--max-parallel", args.max_parallel, 1)):
        if value != default:
            words += [flag, str(value)]
    return shlex.join(words)


def missing_data(run) -> list[tuple[str, str]]:
    """(field path, problem) for every local dataset a child would fail to open.

    Asks the loaders themselves (`load_dialogues` checks its folder and the
    split's official file names before reading a row), for the split each
    child reads: `train` (or `split`) of datasets.train, `test` (or `split`)
    of datasets.eval. `s3://` corpora are left to the children, which fetch them.
    """
    from selfemo.data import DataError, load_dialogues
    from selfemo.generator.corpora import file_path, is_remote

    problems = []
    for group, default_split in (("train", "train"), ("eval", "test")):
        for i, ref in enumerate(getattr(run.spec.datasets, group)):
            if is_remote(ref.uri):
                continue
            split = ref.split or default_split
            where = f"spec.datasets.{group}[{i}]"
            try:
                load_dialogues(ref.format, file_path(ref.uri), splits=[split], labels=ref.labels or None)
            except DataError as exc:  # no such folder, or not the split's file
                problems.append((f"{where}.uri", f"{exc} (the {split} split of {ref.format} {ref.name!r})"))
            except ValueError as exc:  # e.g. labels given for a format that has its own
                problems.append((where, str(exc)))
    return problems


def format_missing_data(run_file: str, problems: list[tuple[str, str]]) -> str:
    from pathlib import Path

    lines = [f"error: {run_file}: the children could not read these datasets; nothing was started"]
    lines += [f"  {path}: {message}" for path, message in problems]
    lines.append(f"hint: relative dataset paths resolve against the current directory ({Path.cwd()}); pass "
                 "--data-dir DIR to read each as DIR/<its last component> (`make run` passes $SELFEMO_ERC_DIR, "
                 "default ../shared/erc)")
    return "\n".join(lines)


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
