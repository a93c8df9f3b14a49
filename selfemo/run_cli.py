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
    p.add_argument("--poll", type=float, default=1.0, help="seconds between reconcile passes")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from selfemo.runfile import RunFileError, load_run

    try:
        run = load_run(args.run_file)
    except RunFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from selfemo.operator.local import EXIT_CODES, LocalExecutor

    executor = LocalExecutor(run, args.run_file, logs_dir=args.logs_dir, max_parallel=args.max_parallel,
                             poll_seconds=args.poll)
    print(f"run {run.metadata.namespace}/{run.metadata.name}: artefacts in {executor.layout.uri}", file=sys.stderr)
    status = executor.run_to_end()
    print(format_summary(status))
    return EXIT_CODES.get(status.phase, 1)


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
