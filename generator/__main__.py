"""`python -m selfemo.generator rollout|evaluate …`: what generator and
evaluator pods run (and `selfemo run` runs as local processes).

vLLM spawns worker processes, so everything happens under the main guard.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from selfemo.runfile import RunFileError, load_run


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m selfemo.generator", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run-config", required=True, metavar="RUN.yaml", help="the SelfEmoRun manifest")
    common.add_argument("--round", type=int, required=True, help="flywheel round (rollout: 1..R; evaluate: 0..R, 0 = base model)")
    common.add_argument("--metrics-port", type=int, default=None, help="serve /metrics and /healthz on this port")
    common.add_argument("--backend", choices=("auto", "vllm", "transformers"), default=None, help="override engine.backend")
    r = sub.add_parser("rollout", parents=[common], help="self-play one shard, write trajectories and selected groups")
    r.add_argument("--shard", default="0/1", metavar="I/N", help="this shard's index and the shard count (0-based)")
    r.add_argument("--chunk-size", type=int, default=32, help="seeds per committed chunk (the unit of resumption)")
    sub.add_parser("evaluate", parents=[common], help="evaluate the round's policy on the test splits")
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        run = load_run(args.run_config)
    except RunFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.backend:
        run = run.model_copy(update={"spec": run.spec.model_copy(update={"engine": run.spec.engine.model_copy(update={"backend": args.backend})})})
    from selfemo.telemetry import GeneratorMetrics, MetricsServer

    metrics = GeneratorMetrics()
    server = MetricsServer(metrics.registry, args.metrics_port) if args.metrics_port is not None else None
    try:
        if server:
            server.healthy.set()
        if args.command == "rollout":
            from selfemo.generator.rollout import parse_shard, rollout_shard

            i, n = parse_shard(args.shard)
            summary = rollout_shard(run, args.round, i, n, chunk_size=args.chunk_size, metrics=metrics)
            print(json.dumps(summary, indent=2, sort_keys=True))
        else:
            from selfemo.generator.evaluate import evaluate_round, format_table

            print(format_table(evaluate_round(run, args.round)))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if server:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
