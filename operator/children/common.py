"""What every child pod shares: identity, ownership, security, config, store access.

Kept in one place so the three kinds cannot drift apart on the things a
cluster administrator audits: every pod runs as a non-root user with a
read-only root filesystem, no capabilities, RuntimeDefault seccomp and no
service-account token (children never talk to the API server); the only
writable paths are emptyDirs (`/tmp`, the home with its caches, `/dev/shm`);
store credentials arrive only through `envFrom` of the Secret the spec names,
never as literal values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from selfemo import __version__
from selfemo.spec import API_GROUP, API_VERSION, KIND, PodResources, SelfEmoRun

from ..labels import LABEL_QUEUE, LABEL_SHARD, child_labels

CONFIG_DIR = "/etc/selfemo"
CONFIG_KEY = "run.yaml"
HOME = "/home/selfemo"
USER_ID = 1000
GPU_RESOURCE = "nvidia.com/gpu"
ENDPOINT_ENV = "SELFEMO_S3_ENDPOINT"  # first of selfemo.store.keys.ENDPOINT_ENV


@dataclass(frozen=True)
class BuilderSettings:
    """Operator-level defaults the spec may leave open (images mostly).

    Read once at the edge (:meth:`from_env` with ``os.environ``), never inside
    a builder, so builders stay pure and goldens stable.
    """

    generator_image: str = f"ghcr.io/selfemo/generator:{__version__}"
    trainer_image: str = f"ghcr.io/selfemo/trainer:{__version__}"
    evaluator_image: str = ""  # empty: the generator image (the evaluator is `selfemo.generator evaluate`)
    metrics_port: int = 9400
    rdzv_port: int = 29500  # torchrun's conventional rendezvous port

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "BuilderSettings":
        """`SELFEMO_GENERATOR_IMAGE`, `SELFEMO_TRAINER_IMAGE`, `SELFEMO_EVALUATOR_IMAGE`,
        `SELFEMO_METRICS_PORT`; unset ones keep the defaults."""
        base = cls()
        return cls(
            generator_image=env.get("SELFEMO_GENERATOR_IMAGE") or base.generator_image,
            trainer_image=env.get("SELFEMO_TRAINER_IMAGE") or base.trainer_image,
            evaluator_image=env.get("SELFEMO_EVALUATOR_IMAGE") or base.evaluator_image,
            metrics_port=int(env.get("SELFEMO_METRICS_PORT") or base.metrics_port),
        )

    def image(self, run: SelfEmoRun, kind: str) -> str:
        """The spec's image for ``kind`` if set, else the operator's default."""
        images = run.spec.images
        if kind == "generator":
            return images.generator or self.generator_image
        if kind == "trainer":
            return images.trainer or self.trainer_image
        return images.evaluator or self.evaluator_image or images.generator or self.generator_image


def config_map_name(run: SelfEmoRun) -> str:
    return f"{run.metadata.name}-config"


def config_path() -> str:
    return f"{CONFIG_DIR}/{CONFIG_KEY}"


def owner_reference(run: SelfEmoRun) -> dict:
    """Children are garbage-collected with their run; `controller` makes the
    run the one owner kopf and `kubectl` report."""
    extra = run.metadata.model_extra or {}
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": run.metadata.name,
        "uid": str(extra.get("uid", "")),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(run: SelfEmoRun, round_: int, component: str, shard: int | None = None) -> dict[str, str]:
    out = child_labels(run.metadata.name, round_, component)
    if shard is not None:
        out[LABEL_SHARD] = str(shard)
    if run.spec.scheduling.queue_name:
        out[LABEL_QUEUE] = run.spec.scheduling.queue_name
    return out


def selector(run: SelfEmoRun, round_: int, component: str, shard: int | None = None) -> dict[str, str]:
    """Labels that pick exactly this child's pods (never the Kueue label, which may change)."""
    out = labels(run, round_, component, shard)
    out.pop(LABEL_QUEUE, None)
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/managed-by"):
        out.pop(key, None)
    return out


def metadata(run: SelfEmoRun, name: str, round_: int, component: str, shard: int | None = None) -> dict:
    return {
        "name": name,
        "namespace": run.metadata.namespace,
        "labels": labels(run, round_, component, shard),
        "ownerReferences": [owner_reference(run)],
    }


def resources(res: PodResources, gpus: int) -> dict:
    """Requests = limits (Guaranteed QoS for what is set): a GPU node's memory
    must not be overcommitted under a model that fills it."""
    limits: dict[str, Any] = {}
    if res.cpu:
        limits["cpu"] = res.cpu
    if res.memory:
        limits["memory"] = res.memory
    if gpus:
        limits[GPU_RESOURCE] = gpus
    return {"requests": dict(limits), "limits": dict(limits)} if limits else {}


def env(run: SelfEmoRun, extra: list[dict] | None = None) -> list[dict]:
    """Plain, non-secret settings only; credentials come from `envFrom`."""
    out = [
        {"name": "HOME", "value": HOME},
        {"name": "XDG_CACHE_HOME", "value": f"{HOME}/.cache"},
        {"name": "HF_HOME", "value": f"{HOME}/.cache/huggingface"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    storage = run.spec.storage
    if storage.endpoint:
        out.append({"name": ENDPOINT_ENV, "value": storage.endpoint})
    if storage.region:
        out.append({"name": "AWS_REGION", "value": storage.region})
    return out + list(extra or [])


def env_from(run: SelfEmoRun) -> list[dict]:
    secret = run.spec.storage.credentials_secret
    return [{"secretRef": {"name": secret}}] if secret else []


CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": USER_ID,
    "runAsGroup": USER_ID,
    "fsGroup": USER_ID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def container(
    run: SelfEmoRun,
    kind: str,
    settings: BuilderSettings,
    command: list[str],
    res: PodResources,
    gpus: int,
    *,
    extra_env: list[dict] | None = None,
    ports: list[dict] | None = None,
    probes: dict | None = None,
) -> dict:
    c: dict[str, Any] = {
        "name": kind,
        "image": settings.image(run, kind),
        "imagePullPolicy": run.spec.images.pull_policy,
        "command": command,
        "env": env(run, extra_env),
    }
    if env_from(run):
        c["envFrom"] = env_from(run)
    if ports:
        c["ports"] = ports
    c.update(probes or {})
    c["resources"] = resources(res, gpus)
    c["securityContext"] = dict(CONTAINER_SECURITY)
    # A crashed child's last log lines become its termination message, which
    # the operator reads from the pod status into the failure it reports
    # (no `pods/log` permission needed); see kube_observer.py.
    c["terminationMessagePolicy"] = "FallbackToLogsOnError"
    c["volumeMounts"] = [
        {"name": "run-config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "home", "mountPath": HOME},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    return c


def pod_spec(run: SelfEmoRun, main: dict, res: PodResources, *, restart_policy: str) -> dict:
    """The pod around ``main``: placement, scheduling pass-through, volumes."""
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": dict(POD_SECURITY),
        "containers": [main],
        "volumes": [
            {"name": "run-config", "configMap": {"name": config_map_name(run), "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "home", "emptyDir": {}},
            # NCCL, torch DataLoader workers and vLLM share tensors through
            # /dev/shm, which the runtime caps at 64 MiB by default.
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ],
    }
    if res.node_selector:
        spec["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        spec["tolerations"] = [_toleration(t) for t in res.tolerations]
    scheduling = run.spec.scheduling
    if scheduling.scheduler_name:
        spec["schedulerName"] = scheduling.scheduler_name
    if scheduling.priority_class_name:
        spec["priorityClassName"] = scheduling.priority_class_name
    if run.spec.images.pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in run.spec.images.pull_secrets]
    return spec


def _toleration(t) -> dict:
    out = {"operator": t.operator}
    if t.key:
        out["key"] = t.key
    if t.value:
        out["value"] = t.value
    if t.effect:
        out["effect"] = t.effect
    if t.toleration_seconds is not None:
        out["tolerationSeconds"] = t.toleration_seconds
    return out


def pod_template(run: SelfEmoRun, round_: int, component: str, spec: dict, *, shard: int | None = None,
                 annotations: dict | None = None) -> dict:
    meta: dict[str, Any] = {"labels": labels(run, round_, component, shard)}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": spec}
