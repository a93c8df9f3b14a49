"""The evaluator child: one Job per round (round 0 evaluates the base model).

`backoffLimit: 0` because retries belong to the operator (counted in status,
with back-off, bounded by `maxRetries`); a Job retrying on its own would
hide failures from that count.
"""
from __future__ import annotations

from selfemo.spec import SelfEmoRun

from ..commands import component_args
from ..round import ChildIntent
from .common import BuilderSettings, config_path, container, metadata, pod_spec, pod_template

COMPONENT = "evaluator"


def evaluator_command(intent: ChildIntent) -> list[str]:
    return ["python", *component_args(intent, config_path())]


def build_evaluator(run: SelfEmoRun, intent: ChildIntent, settings: BuilderSettings) -> dict:
    if intent.kind != COMPONENT:
        raise ValueError(f"not an evaluator intent: {intent}")
    res = run.spec.resources.evaluator
    main = container(run, COMPONENT, settings, evaluator_command(intent), res, res.gpus)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(run, intent.name, intent.round, COMPONENT),
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "template": pod_template(run, intent.round, COMPONENT, pod_spec(run, main, res, restart_policy="Never")),
        },
    }
