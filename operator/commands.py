"""The one command line each child runs, whoever runs it.

A generator Deployment, the training Job, the evaluation Job and the local
subprocesses of `selfemo run` all run `python -m selfemo.<component> …` with
these arguments and nothing else (DESIGN.md, "Children"), so a round behaves
the same on a laptop and on a cluster.
"""
from __future__ import annotations


def component_args(intent, config_path: str, *, metrics_port: int | None = None) -> list[str]:
    """Arguments after the interpreter for a child (a `ChildIntent`), e.g.
    ``["-m", "selfemo.generator", "rollout", "--run-config", …]``."""
    common = ["--run-config", config_path, "--round", str(intent.round)]
    if intent.kind == "generator":
        if intent.shard is None or not intent.shards:
            raise ValueError(f"{intent.name}: a generator child needs its shard and the shard count")
        args = ["-m", "selfemo.generator", "rollout", *common, "--shard", f"{intent.shard}/{intent.shards}"]
    elif intent.kind == "trainer":
        args = ["-m", "selfemo.trainer", *common]
    elif intent.kind == "evaluator":
        args = ["-m", "selfemo.generator", "evaluate", *common]
    else:
        raise ValueError(f"{intent.name}: unknown child kind {intent.kind!r}")
    if metrics_port is not None:
        args += ["--metrics-port", str(metrics_port)]
    return args
