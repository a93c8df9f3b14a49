"""The test kubelet (`support.real_kubelet`) against the API emulator, on
toy containers: what the end-to-end run relies on, checked in seconds.

A container's mounts, environment and ports must arrive rewritten to its
sandbox; Jobs and Deployments must report what the Job and Deployment
controllers and the kubelet would, because the operator decides on it.
"""
from __future__ import annotations

import base64
import json
import signal
import sys
import time

import pytest

from support.kube import wait_for
from support.real_kubelet import RealKubelet, expand_vars, map_port, rewrite_paths

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NS = "default"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
PODS = f"/api/v1/namespaces/{NS}/pods"
LABELS = {"selfemo.dev/run": "toy", "selfemo.dev/round": "1"}

# Prints what the container sees, then exits with $EXIT (after an error line on stderr).
SHOW = """
import json, os, sys, tempfile
print(json.dumps({"config": open(sys.argv[1]).read(), "argv": sys.argv[1:], "cwd": os.getcwd(),
                  "tmp": tempfile.gettempdir(), "env": {k: os.environ.get(k) for k in
                  ("HOME", "KEY", "SECRET_ID", "INDEX", "POD", "LEAK", "CACHE")}}))
print("about to exit", os.environ["EXIT"], file=sys.stderr)
sys.exit(int(os.environ["EXIT"]))
"""


def pod_spec(command: list[str], env: list[dict], **container) -> dict:
    return {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "toy:1", "command": command, "env": env,
                            "envFrom": [{"secretRef": {"name": "creds"}}],
                            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/toy", "readOnly": True},
                                             {"name": "tmp", "mountPath": "/tmp"},
                                             {"name": "home", "mountPath": "/home/toy"}], **container}],
            "volumes": [{"name": "cfg", "configMap": {"name": "toy-config", "items": [{"key": "run.yaml", "path": "run.yaml"}]}},
                        {"name": "tmp", "emptyDir": {}}, {"name": "home", "emptyDir": {}}]}


def job(name: str, exit_code: int) -> dict:
    env = [{"name": "HOME", "value": "/home/toy"}, {"name": "CACHE", "value": "$(HOME)/.cache"},
           {"name": "EXIT", "value": str(exit_code)},
           {"name": "SECRET_ID", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "ID"}}},
           {"name": "INDEX", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
           {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS, "labels": LABELS},
            "spec": {"completionMode": "Indexed", "completions": 1, "parallelism": 1, "backoffLimit": 0,
                     "template": {"metadata": {"labels": LABELS},
                                  "spec": pod_spec(["python", "-c", SHOW, "/etc/toy/run.yaml", "--out=/tmp/x"], env)}}}


@pytest.fixture
def cluster(kube_api, tmp_path, monkeypatch):
    monkeypatch.setenv("LEAK", "the test's own environment")
    kube = kube_api.client()
    kube.create(f"/api/v1/namespaces/{NS}/configmaps", {"metadata": {"name": "toy-config"}, "data": {"run.yaml": "round: 1\n"}})
    kube.create(f"/api/v1/namespaces/{NS}/secrets", {"metadata": {"name": "creds"}, "data": {
        "ID": base64.b64encode(b"id-from-secret").decode(), "KEY": base64.b64encode(b"key-from-secret").decode()}})
    kubelet = RealKubelet(kube, tmp_path / "kubelet", poll=0.1, restart_delay=0.2, image_env={"PYTHONUNBUFFERED": "1"}).start()
    try:
        yield kube, kubelet
    finally:
        kubelet.stop()
        print(kubelet.dump_logs())


def test_helpers_rewrite_like_a_container_runtime():
    mounts = [("/etc/selfemo", "/sandbox/cfg"), ("/tmp", "/sandbox/tmp")]
    assert rewrite_paths("/etc/selfemo/run.yaml", mounts) == "/sandbox/cfg/run.yaml"
    assert rewrite_paths("--run-config=/etc/selfemo/run.yaml", mounts) == "--run-config=/sandbox/cfg/run.yaml"
    assert rewrite_paths("/etc/selfemo", mounts) == "/sandbox/cfg"
    assert rewrite_paths("/etc/selfemox/a", mounts) == "/etc/selfemox/a"  # a prefix of a name is not a mount
    assert expand_vars("$(A)/x $$(A) $(B)", {"A": "1"}) == "1/x $(A) $(B)"
    assert map_port("9400", {9400: 31000}) == "31000" and map_port("--metrics-port=9400", {9400: 31000}) == "--metrics-port=31000"
    assert map_port("94000", {9400: 31000}) == "94000"


def test_a_job_runs_its_container_in_a_sandbox_and_reports_like_the_job_controller(cluster, tmp_path):
    kube, kubelet = cluster
    kube.create(JOBS, job("toy-ok", 0))
    done = wait_for(lambda: (j := kube.get(f"{JOBS}/toy-ok")).get("status", {}).get("conditions") and j, what="the Job to finish")
    status = done["status"]
    assert [c["type"] for c in status["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    assert status["succeeded"] == 1 and status["active"] == 0 and status["completedIndexes"] == "0"
    assert status["startTime"] <= status["completionTime"]
    (pod,) = kubelet.pods_of("toy-ok")
    seen = json.loads((kubelet.log_dir / f"{pod.name}.stdout").read_text())
    sandbox = tmp_path / "kubelet" / pod.name
    assert seen["config"] == "round: 1\n"  # the ConfigMap's key, as a file at the rewritten mount path
    assert seen["argv"] == [str(sandbox / "volumes/cfg/run.yaml"), f"--out={sandbox / 'volumes/tmp/x'}"]
    assert seen["tmp"] == str(sandbox / "volumes/tmp") and seen["cwd"] == str(sandbox)
    assert seen["env"] == {"HOME": str(sandbox / "volumes/home"), "CACHE": str(sandbox / "volumes/home/.cache"),
                           "KEY": "key-from-secret", "SECRET_ID": "id-from-secret", "INDEX": "0", "POD": pod.name,
                           "LEAK": None}  # only the image env and the container's own reach it
    api_pod = kube.get(f"{PODS}/{pod.name}")
    assert api_pod["metadata"]["labels"] == LABELS and api_pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert api_pod["status"]["phase"] == "Succeeded"
    assert api_pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_a_failed_job_reports_backoff_limit_and_the_pods_last_words(cluster):
    kube, kubelet = cluster
    kube.create(JOBS, job("toy-bad", 3))
    done = wait_for(lambda: (j := kube.get(f"{JOBS}/toy-bad")).get("status", {}).get("conditions") and j, what="the Job to fail")
    assert [(c["type"], c["reason"]) for c in done["status"]["conditions"]] == \
        [("FailureTarget", "BackoffLimitExceeded"), ("Failed", "BackoffLimitExceeded")]
    assert done["status"]["failed"] == 1 and not done["status"]["succeeded"]
    (pod,) = kubelet.pods_of("toy-bad")
    terminated = kube.get(f"{PODS}/{pod.name}")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    assert terminated["message"].endswith("about to exit 3")  # FallbackToLogsOnError: the log's tail


def test_a_deployment_restarts_its_container_in_place_and_stops_when_deleted(cluster):
    kube, kubelet = cluster
    # Crashes once (a marker in the pod's emptyDir survives the restart, as on a node), then runs.
    script = ("import os, sys, time; m = os.path.join(os.environ['HOME'], 'crashed')\n"
              "if not os.path.exists(m): open(m, 'w').close(); print('boom', file=sys.stderr); sys.exit(1)\n"
              "print('serving', file=sys.stderr); time.sleep(600)")
    spec = pod_spec(["python", "-c", script], [{"name": "HOME", "value": "/home/toy"}])
    spec["restartPolicy"] = "Always"
    kube.create(DEPLOYMENTS, {"apiVersion": "apps/v1", "kind": "Deployment",
                              "metadata": {"name": "toy-gen", "namespace": NS, "labels": LABELS},
                              "spec": {"replicas": 1, "selector": {"matchLabels": LABELS},
                                       "template": {"metadata": {"labels": LABELS}, "spec": spec}}})
    dep = wait_for(lambda: (d := kube.get(f"{DEPLOYMENTS}/toy-gen")).get("status", {}).get("readyReplicas") == 1 and d,
                   what="the Deployment ready after one restart")
    status = dep["status"]
    assert status["availableReplicas"] == 1 and status["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Available": "True", "Progressing": "True"}
    (pod,) = kubelet.pods_of("toy-gen")
    container = wait_for(lambda: (c := kube.get(f"{PODS}/{pod.name}")["status"]["containerStatuses"][0])
                         .get("state", {}).get("running") and c, what="the container running again")
    assert container["restartCount"] == 1
    assert container["lastState"]["terminated"]["exitCode"] == 1 and "boom" in container["lastState"]["terminated"]["message"]
    proc = pod.proc
    assert proc.poll() is None

    # Scaled to 0: the process stops and the pod goes; back to 1: a new pod.
    kube.patch(f"{DEPLOYMENTS}/toy-gen", {"spec": {"replicas": 0}})
    wait_for(lambda: proc.poll() is not None, what="the process stopped on scale-down")
    assert proc.returncode == -signal.SIGTERM
    wait_for(lambda: kube.get(f"{PODS}/{pod.name}") is None, what="the pod deleted on scale-down")
    kube.patch(f"{DEPLOYMENTS}/toy-gen", {"spec": {"replicas": 1}})
    second = wait_for(lambda: (p := kubelet.pods_of("toy-gen"))[1:] and p[1], what="a new pod on scale-up")
    wait_for(lambda: second.proc is not None and second.proc.poll() is None, what="its process running")
    assert second.name != pod.name and second.dir != pod.dir  # a new sandbox: emptyDirs start empty again

    kube.delete(f"{DEPLOYMENTS}/toy-gen")
    wait_for(lambda: not any(p.proc.poll() is None for p in kubelet.pods_of("toy-gen")),
             what="every process stopped with its Deployment")
    wait_for(lambda: kube.get(f"{PODS}/{second.name}") is None, what="the pod deleted with its owner")
    assert not kubelet.errors


def test_an_injected_fault_kills_the_child_right_after_the_chosen_write(cluster, seaweedfs_s3):
    kube, kubelet = cluster
    s3 = seaweedfs_s3
    script = ("import boto3, os\n"
              "c = boto3.client('s3', endpoint_url=os.environ['ENDPOINT'], region_name='us-east-1')\n"
              "for key in ('fault/first', 'fault/second'): c.put_object(Bucket=os.environ['BUCKET'], Key=key, Body=b'x')\n")
    env = [{"name": "ENDPOINT", "value": s3.endpoint}, {"name": "BUCKET", "value": s3.bucket},
           {"name": "AWS_ACCESS_KEY_ID", "value": s3.access_key}, {"name": "AWS_SECRET_ACCESS_KEY", "value": s3.secret_key}]
    manifest = job("toy-fault", 0)
    manifest["spec"]["template"]["spec"] = pod_spec(["python", "-c", script], env)
    kubelet.inject("toy-fault", {"SELFEMO_FAULT_KILL_AFTER_PUT": r"/fault/first$"})
    kube.create(JOBS, manifest)
    done = wait_for(lambda: (j := kube.get(f"{JOBS}/toy-fault")).get("status", {}).get("conditions") and j,
                    what="the Job to fail")
    assert done["status"]["conditions"][-1]["type"] == "Failed"
    (pod,) = kubelet.pods_of("toy-fault")
    assert pod.exit_codes == [-signal.SIGKILL] and kubelet.injected == [pod.name]
    assert kube.get(f"{PODS}/{pod.name}")["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
    client = s3.client()
    assert client.get_object(Bucket=s3.bucket, Key="fault/first")["Body"].read() == b"x"  # written, then killed
    assert "Contents" not in client.list_objects_v2(Bucket=s3.bucket, Prefix="fault/second")
