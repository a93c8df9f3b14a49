"""`python -m selfemo.trainer --run-config RUN.yaml --round R`: what the training
Job runs (alone, or on every rank under torchrun / the deepspeed launcher),
and what `selfemo run` runs as a local process.

Exit status: 0 trained (or the round's checkpoint was already committed),
2 bad run file or bad/missing groups, 3 no learning signal: no checkpoint,
and `round-RRR/no-signal/` committed instead so the operator ends the run
rather than retrying (rank 0 commits it).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from selfemo.runfile import RunFileError, load_run


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m selfemo.trainer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-config", required=True, metavar="RUN.yaml", help="the SelfEmoRun manifest")
    ap.add_argument("--round", type=int, required=True, help="flywheel round to train (1..R): π_{R-1} → π_R")
    ap.add_argument("--metrics-port", type=int, default=None,
                    help="serve /metrics and /healthz on this port (+ LOCAL_RANK, so ranks on one node do not collide)")
    ap.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)  # test hook: a kill
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        run = load_run(args.run_config)
    except RunFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {args.run_config}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    from selfemo.telemetry import MetricsServer, TrainerMetrics
    from selfemo.trainer.data import EXIT_NO_SIGNAL, commit_no_signal
    from selfemo.trainer.loop import TrainerError, train_round

    metrics = TrainerMetrics()
    server = None
    if args.metrics_port is not None:
        port = args.metrics_port + int(os.environ.get("LOCAL_RANK", "0")) if args.metrics_port else 0
        server = MetricsServer(metrics.registry, port)
        server.healthy.set()
    try:
        summary = train_round(run, args.round, metrics=metrics, stop_after_steps=args.stop_after_steps)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(summary, indent=2, sort_keys=True))
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.code == EXIT_NO_SIGNAL and int(os.environ.get("RANK", "0")) == 0:
            print(f"committed {commit_no_signal(run, args.round, str(exc))}", file=sys.stderr)
        return exc.code
    finally:
        if server:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
