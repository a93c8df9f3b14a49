"""Child manifests (`selfemo.operator.children`): goldens, invariants, schema.

Each variant's objects (run ConfigMap, a round-1 generator, the round-1
trainer with its Service when multi-node, the round-1 evaluator) are compared
with `tests/golden/operator-<variant>.yaml`. After an intended change,
regenerate the goldens and review the diff:

    SELFEMO_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_operator_children.py

Every built object is also checked for the security invariants and validated
strictly against the newest Kubernetes schema `kubernetes-validate` ships.
"""
from __future__ import annotations

import os
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from selfemo.operator.children import BuilderSettings, build, build_config_map
from selfemo.operator.children.configmap import run_config_yaml
from selfemo.operator.round import ChildIntent, child_name
from selfemo.runfile import load_run
from selfemo.spec import SelfEmoRun

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
UPDATE = os.environ.get("SELFEMO_UPDATE_GOLDEN") == "1"
SETTINGS = BuilderSettings(generator_image="registry.example/selfemo/generator:test", trainer_image="registry.example/selfemo/trainer:test")
K8S_VERSION = ".".join(kubernetes_validate.utils.latest_version().split(".")[:2])
UID = "0b5ad8d4-3c1e-4a59-9a6e-2f1d7d0c9e11"


def example() -> dict:
    doc = yaml.safe_load((REPO / "examples" / "run.yaml").read_text())
    doc["metadata"]["uid"] = UID
    return doc


def multinode() -> dict:
    doc = example()
    doc["metadata"]["namespace"] = "research"
    res = doc["spec"]["resources"]
    res["trainer"].update({"nodes": 2, "gpusPerNode": 8, "cpu": "64", "memory": "900Gi"})
    doc["spec"]["scheduling"] = {"queueName": "gpu-team", "schedulerName": "volcano", "priorityClassName": "training"}
    doc["spec"]["images"] = {"pullPolicy": "Always", "pullSecrets": ["regcred"], "trainer": "registry.example/custom-trainer:1"}
    doc["spec"]["storage"].update({"endpoint": "http://seaweedfs.storage:8333", "region": "us-east-1"})
    return doc


def cpu() -> dict:
    doc = example()
    doc["metadata"]["name"] = "smol-cpu"
    doc["spec"]["model"] = {"base": "smollm2-135m-instruct", "dtype": "float32"}
    doc["spec"]["engine"] = {"backend": "vllm", "cpuKvCacheGib": 2}
    doc["spec"]["resources"] = {
        "generator": {"shards": 2, "gpus": 0, "cpu": "2", "memory": "4Gi"},
        "trainer": {"nodes": 1, "gpusPerNode": 0, "cpu": "2", "memory": "6Gi"},
        "evaluator": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
    }
    doc["spec"]["storage"] = {"uri": "s3://selfemo-runs/dev", "endpoint": "http://127.0.0.1:8333"}
    return doc


VARIANTS = {"run": example, "multinode": multinode, "cpu": cpu}


def objects(run: SelfEmoRun) -> list[dict]:
    name = run.metadata.name
    shards = run.spec.resources.generator.shards
    out = [build_config_map(run)]
    out += build(run, ChildIntent(child_name(name, "generator", 1, 0), "generator", 1, 0, shards), SETTINGS)
    out += build(run, ChildIntent(child_name(name, "trainer", 1), "trainer", 1), SETTINGS)
    out += build(run, ChildIntent(child_name(name, "evaluator", 1), "evaluator", 1), SETTINGS)
    return out


class _NoAliases(yaml.SafeDumper):
    """Readable goldens: no anchors, multi-line strings (the run config) as blocks."""

    def ignore_aliases(self, data):
        return True


_NoAliases.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)
)


def dump(objs: list[dict]) -> str:
    return yaml.dump_all(objs, Dumper=_NoAliases, sort_keys=False, allow_unicode=True, width=120)


def all_objects():
    for variant, make in VARIANTS.items():
        for obj in objects(SelfEmoRun.model_validate(make())):
            yield pytest.param(obj, id=f"{variant}-{obj['kind']}-{obj['metadata']['name']}")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_golden(variant):
    run = SelfEmoRun.model_validate(VARIANTS[variant]())
    text = dump(objects(run))
    path = GOLDEN / f"operator-{variant}.yaml"
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not UPDATE:
            pytest.fail(f"wrote missing golden {path}; review and commit it")
    assert text == path.read_text(), f"regenerate with SELFEMO_UPDATE_GOLDEN=1 and review: {path}"


@pytest.mark.parametrize("obj", list(all_objects()))
def test_valid_kubernetes_manifest(obj):
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def pods(obj: dict):
    if obj["kind"] in ("Deployment", "Job"):
        yield obj["spec"]["template"]


@pytest.mark.parametrize("obj", list(all_objects()))
def test_security_and_ownership_invariants(obj):
    meta = obj["metadata"]
    owner = meta["ownerReferences"]
    assert owner == [{"apiVersion": "selfemo.dev/v1alpha1", "kind": "SelfEmoRun", "name": meta["labels"]["selfemo.dev/run"],
                      "uid": UID, "controller": True, "blockOwnerDeletion": True}]
    assert meta["labels"]["app.kubernetes.io/name"] == "selfemo"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "selfemo-operator"
    assert meta["labels"]["app.kubernetes.io/instance"] == meta["labels"]["selfemo.dev/run"]
    for template in pods(obj):
        spec = template["spec"]
        assert template["metadata"]["labels"]["selfemo.dev/round"] == meta["labels"]["selfemo.dev/round"]
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 1000
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert all("emptyDir" in volumes[n] for n in ("tmp", "home", "dshm"))
        assert volumes["run-config"]["configMap"]["name"] == f"{meta['labels']['selfemo.dev/run']}-config"
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            assert mounts["/etc/selfemo"]["readOnly"] is True
            assert {"/tmp", "/home/selfemo", "/dev/shm"} <= set(mounts)
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["HOME"] == "/home/selfemo" and env["HF_HOME"].startswith("/home/selfemo/")
            # Credentials only by Secret reference, never as values.
            assert not any("SECRET" in n or "ACCESS_KEY" in n or "TOKEN" in n for n in env)
            assert c["command"][:1] in (["python"], ["torchrun"]) and "selfemo." in " ".join(c["command"])
            assert "--run-config" in c["command"] and "/etc/selfemo/run.yaml" in c["command"]


def test_credentials_come_only_from_the_named_secret():
    run = SelfEmoRun.model_validate(example())
    for obj in objects(run):
        for template in pods(obj):
            assert template["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    cpu_run = SelfEmoRun.model_validate(cpu())
    for obj in objects(cpu_run):
        for template in pods(obj):
            assert "envFrom" not in template["spec"]["containers"][0]


def test_generator_deployment_shape():
    run = SelfEmoRun.model_validate(example())
    (dep,) = build(run, ChildIntent("qwen3-8b-erc-r2-gen-3", "generator", 2, 3, 4), SETTINGS)
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    assert dep["spec"]["replicas"] == 1
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 == c["resources"]["requests"]["nvidia.com/gpu"]
    assert c["command"] == ["python", "-m", "selfemo.generator", "rollout", "--run-config", "/etc/selfemo/run.yaml",
                            "--round", "2", "--shard", "3/4", "--metrics-port", "9400"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9400"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["spec"]["tolerations"] == [{"operator": "Exists", "key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_gold_generator_rounds_claim_no_gpu():
    """Round 1 of a gold warm-up writes gold answers without a model: its generator asks for no GPU; round 2 does."""
    doc = example()
    doc["spec"]["flywheel"] = {**doc["spec"]["flywheel"], "goldWarmup": 64}
    run = SelfEmoRun.model_validate(doc)
    gpus = {}
    for round_ in (1, 2):
        (dep,) = build(run, ChildIntent(f"qwen3-8b-erc-r{round_}-gen-0", "generator", round_, 0, 4), SETTINGS)
        c = dep["spec"]["template"]["spec"]["containers"][0]
        gpus[round_] = [c["resources"].get(k, {}).get("nvidia.com/gpu") for k in ("requests", "limits")]
    assert gpus == {1: [None, None], 2: [1, 1]}


def test_trainer_single_and_multi_node_commands():
    single = SelfEmoRun.model_validate(example())
    (job,) = build(single, ChildIntent("qwen3-8b-erc-r1-train", "trainer", 1), SETTINGS)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:6] == [
        "torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", "8"]
    multi = SelfEmoRun.model_validate(multinode())
    svc, job = build(multi, ChildIntent("qwen3-8b-erc-r1-train", "trainer", 1), SETTINGS)
    assert svc["kind"] == "Service" and svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == ("Indexed", 2, 2, 0)
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == svc["metadata"]["name"] and pod["schedulerName"] == "volcano"
    cmd = pod["containers"][0]["command"]
    assert cmd[cmd.index("--node-rank") + 1] == "$(JOB_COMPLETION_INDEX)"
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == "qwen3-8b-erc-r1-train-0.qwen3-8b-erc-r1-train:29500"
    assert pod["containers"][0]["image"] == "registry.example/custom-trainer:1"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-team"
    cpu_run = SelfEmoRun.model_validate(cpu())
    (job,) = build(cpu_run, ChildIntent("smol-cpu-r1-train", "trainer", 1), SETTINGS)
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["python", "-m", "selfemo.trainer", "--run-config", "/etc/selfemo/run.yaml", "--round", "1"]
    assert c["resources"] == {"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"cpu": "2", "memory": "6Gi"}}


def test_evaluator_image_falls_back_to_generator():
    run = SelfEmoRun.model_validate(example())
    (job,) = build(run, ChildIntent("qwen3-8b-erc-r0-eval", "evaluator", 0), SETTINGS)
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == SETTINGS.generator_image
    assert c["command"] == ["python", "-m", "selfemo.generator", "evaluate", "--run-config", "/etc/selfemo/run.yaml", "--round", "0"]
    assert job["spec"]["backoffLimit"] == 0


def test_config_map_round_trips_without_status():
    doc = example()
    doc["status"] = {"phase": "Training"}
    run = SelfEmoRun.model_validate(doc)
    cm = build_config_map(run)
    assert cm["metadata"]["name"] == "qwen3-8b-erc-config"
    text = cm["data"]["run.yaml"]
    assert text == run_config_yaml(run) and "status" not in yaml.safe_load(text) and UID not in text
    again = SelfEmoRun.model_validate(yaml.safe_load(text))
    assert again.spec == run.spec and again.metadata.name == run.metadata.name


def test_config_map_loads_with_the_run_file_reader(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(build_config_map(SelfEmoRun.model_validate(cpu()))["data"]["run.yaml"])
    assert load_run(path).spec.resources.generator.shards == 2


def test_settings_from_env():
    s = BuilderSettings.from_env({"SELFEMO_GENERATOR_IMAGE": "g:1", "SELFEMO_TRAINER_IMAGE": "t:1"})
    assert (s.generator_image, s.trainer_image, s.evaluator_image, s.metrics_port) == ("g:1", "t:1", "", 9400)
    assert BuilderSettings.from_env({}) == BuilderSettings()
