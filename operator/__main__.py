"""`python -m selfemo.operator`: run the SelfEmoRun operator.

The edge: flags and environment are read here and nowhere below, then
:class:`selfemo.operator.kopf_app.OperatorApp` does the rest.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from selfemo.operator.kopf_app import OperatorApp, OperatorConfig, load_kube_configuration, parse_priority


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m selfemo.operator",
        description="Drive SelfEmoRun resources: generator Deployments, training and evaluation Jobs, status, "
                    "events and metrics. Child images come from SELFEMO_GENERATOR_IMAGE, SELFEMO_TRAINER_IMAGE "
                    "and SELFEMO_EVALUATOR_IMAGE when a run does not set spec.images.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable; default: $SELFEMO_WATCH_NAMESPACE)")
    where.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (needs cluster-wide RBAC)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="port of /metrics and /healthz (default: $SELFEMO_OPERATOR_METRICS_PORT or 8080)")
    p.add_argument("--interval", type=float, default=None,
                   help="seconds between polls of each run's children and store (default: $SELFEMO_OPERATOR_INTERVAL or 10)")
    p.add_argument("--peering", default=None, metavar="NAME",
                   help="coordinate with other replicas through this kopf peering object (default: standalone, one replica)")
    p.add_argument("--priority", default=None, metavar="N|auto",
                   help="peering priority: the live replica with the highest acts, the others stand by; 'auto' derives "
                        "a distinct one from the pod name ($POD_ID, else the hostname) (default: $SELFEMO_OPERATOR_PRIORITY or 0)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    namespaces = tuple(args.namespace) or tuple(n for n in os.environ.get("SELFEMO_WATCH_NAMESPACE", "").split(",") if n)
    if not namespaces and not args.all_namespaces:
        print("error: give --namespace NS (or $SELFEMO_WATCH_NAMESPACE) or --all-namespaces", file=sys.stderr)
        return 2
    try:
        priority = parse_priority(args.priority or os.environ.get("SELFEMO_OPERATOR_PRIORITY", "0"),
                                  os.environ.get("POD_ID") or socket.gethostname())
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config = OperatorConfig.from_env(os.environ, namespaces=namespaces, all_namespaces=args.all_namespaces,
                                     metrics_port=args.metrics_port, interval=args.interval, peering=args.peering,
                                     priority=priority)
    OperatorApp(config, load_kube_configuration(args.kubeconfig)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
