"""The trainer child: an Indexed Job, plus a headless Service when multi-node.

Each of `nodes` pods runs torchrun for its node; pod `{job}-0` (completion
index 0) hosts the rendezvous, reachable as `{job}-0.{service}` through the
headless Service (the Job's `subdomain`), which publishes not-ready addresses
because rendezvous happens before any pod is ready. One node with at most
one GPU runs the trainer directly: torchrun would add nothing but a process.
`backoffLimit: 0`: the operator owns retries, and a retried training Job
resumes from its last checkpoint in the store.
"""
from __future__ import annotations

from selfemo.spec import SelfEmoRun

from ..commands import component_args
from ..round import ChildIntent
from .common import BuilderSettings, config_path, container, metadata, pod_spec, pod_template, selector

COMPONENT = "trainer"
INDEX_ENV = {
    # The Job controller injects this too; declaring it makes `$(…)` expansion
    # in the command explicit rather than dependent on injection order.
    "name": "JOB_COMPLETION_INDEX",
    "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}},
}


def service_name(intent: ChildIntent) -> str:
    return intent.name


def trainer_command(run: SelfEmoRun, intent: ChildIntent, settings: BuilderSettings) -> list[str]:
    res = run.spec.resources.trainer
    tail = component_args(intent, config_path())
    if res.nodes == 1 and res.gpus_per_node <= 1:
        return ["python", *tail]
    if res.nodes == 1:
        return ["torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", str(res.gpus_per_node), *tail]
    return [
        "torchrun",
        "--nnodes", str(res.nodes),
        "--nproc-per-node", str(res.gpus_per_node),
        "--node-rank", "$(JOB_COMPLETION_INDEX)",
        "--rdzv-endpoint", f"{intent.name}-0.{service_name(intent)}:{settings.rdzv_port}",
        *tail,
    ]


def build_trainer(run: SelfEmoRun, intent: ChildIntent, settings: BuilderSettings) -> list[dict]:
    """[Service, Job] for multi-node training, [Job] otherwise."""
    if intent.kind != COMPONENT:
        raise ValueError(f"not a trainer intent: {intent}")
    res = run.spec.resources.trainer
    multi = res.nodes > 1
    main = container(
        run, COMPONENT, settings, trainer_command(run, intent, settings), res, res.gpus_per_node,
        extra_env=[INDEX_ENV] if multi else None,
        ports=[{"name": "rdzv", "containerPort": settings.rdzv_port, "protocol": "TCP"}] if multi else None,
    )
    pod = pod_spec(run, main, res, restart_policy="Never")
    if multi:
        pod["subdomain"] = service_name(intent)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(run, intent.name, intent.round, COMPONENT),
        "spec": {
            "completionMode": "Indexed",
            "completions": res.nodes,
            "parallelism": res.nodes,
            "backoffLimit": 0,
            "template": pod_template(run, intent.round, COMPONENT, pod),
        },
    }
    if not multi:
        return [job]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(run, service_name(intent), intent.round, COMPONENT),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(run, intent.round, COMPONENT),
            "ports": [{"name": "rdzv", "port": settings.rdzv_port, "targetPort": settings.rdzv_port, "protocol": "TCP"}],
        },
    }
    return [service, job]
