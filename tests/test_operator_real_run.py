"""A whole run on a make-believe cluster made of real parts, with faults.

The real kopf operator reconciles a `SelfEmoRun` in the API emulator; the
real kubelet (:mod:`support.real_kubelet`) runs each Job's and Deployment's
container command — the manifests the operator built, the entrypoints the
images run — as local processes; the artefact store is a real SeaweedFS S3
server whose keys reach the children only through the Secret named by
`spec.storage.credentialsSecret`. The model is the tiny random Llama, the
data a small slice of MELD. Two rounds, two generator shards.

Faults, in the same run (one run costs minutes; three would not fit CI):

- the round-1 generator of shard 0 is SIGKILLed right after committing its
  first chunk: the Deployment's pod restarts and resumes the shard, which
  ends with every seed's group exactly once;
- the round-1 trainer is SIGKILLed right after committing a training state:
  the Job fails, the operator recreates it after its back-off and the new
  trainer resumes from that state;
- SeaweedFS is down for 30 s while round 2 generates: children retry, the
  operator waits, the run goes on, and no prefix without its `_SUCCESS`
  is ever read as committed; every committed prefix is complete.
"""
from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from pathlib import Path

import pytest

from selfemo.operator.children import BuilderSettings
from selfemo.operator.kopf_app import OperatorApp, OperatorConfig, load_kube_configuration
from support.kube import KubeServer, wait_for
from support.kubelet import parse_run, run_doc, runs_path
from support.real_kubelet import RealKubelet
from support.seaweedfs import REGION

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

NS = "default"
NAME = "real"
SECRET = "s3-credentials"
EVENTS = f"/api/v1/namespaces/{NS}/events"
OUTAGE_SECONDS = 30.0
IMAGE_ENV = {
    # What the images' ENV lines would set; one thread per child on a 2-core machine.
    "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
    "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def cluster(tmp_path, seaweedfs_s3):
    """The emulator, the operator (with the store keys in its own environment,
    as its Deployment would have) and the real kubelet; logs printed at teardown."""
    from selfemo.crd import crd

    server = KubeServer([crd()]).start()
    kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
    config = OperatorConfig(builder=BuilderSettings(), namespaces=(NS,), metrics_port=0, metrics_host="127.0.0.1",
                            interval=1.0)
    app = OperatorApp(config, load_kube_configuration(str(kubeconfig)))
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=app.run, kwargs={"stop_flag": stop, "ready_flag": ready}, name="operator", daemon=True)
    thread.start()
    assert ready.wait(30), "the operator did not start"
    kubelet = RealKubelet(server.client(), tmp_path / "kubelet", ns=NS, image_env=IMAGE_ENV).start()
    try:
        yield server, kubelet
    finally:
        kubelet.stop()
        print(kubelet.dump_logs())  # shown by pytest only when the test failed
        stop.set()
        thread.join(30)
        server.stop()


def s3_run_doc(tmp_path: Path, erc_dir: Path, model: Path, s3) -> dict:
    doc = run_doc(NAME, tmp_path / "unused", maxRetries=3,
                  model={"base": str(model), "dtype": "float32"},
                  datasets={"train": [{"name": "meld", "format": "meld", "uri": str(erc_dir / "meld"), "maxDialogues": 12}],
                            "eval": [{"name": "meld", "format": "meld", "uri": str(erc_dir / "meld"), "maxUtterances": 16}]},
                  # 36 seeds a shard: two chunks of the generator's 32, so a shard can die between them
                  # free-text answers: the random-weight model's answers rarely parse, so no group has a reward
                  # spread and the round trains on exactly its 36 kept samples (label answers would add GRPO groups)
                  selfPlay={"tasks": ["recognition", "understanding"], "groupSize": 2, "maxTurns": 0,
                            "maxNewTokens": 4, "promptsPerRound": 72, "answers": "free"},
                  flywheel={"rounds": 2, "rewardThreshold": 0.0, "keepPerPrompt": 1},
                  # 36 kept samples a round in 3 steps: a training state after step 2 to die after and resume from
                  training={"microBatchSize": 24, "checkpointEvery": 2, "maxSeqLen": 256},
                  evaluation={"expressionSamples": 2, "batchSize": 8},
                  resources={"generator": {"shards": 2, "gpus": 0}, "trainer": {"nodes": 1, "gpusPerNode": 0},
                             "evaluator": {"gpus": 0}})
    doc["spec"]["storage"] = {"uri": f"s3://{s3.bucket}/runs", "endpoint": s3.endpoint, "region": REGION,
                              "credentialsSecret": SECRET}
    return doc


def secret(s3) -> dict:
    b64 = lambda v: base64.b64encode(v.encode()).decode()  # noqa: E731
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": SECRET, "namespace": NS},
            "data": {"AWS_ACCESS_KEY_ID": b64(s3.access_key), "AWS_SECRET_ACCESS_KEY": b64(s3.secret_key)}}


class Outage:
    """Stop SeaweedFS (SIGKILL) and start it again on the same ports and data
    ``seconds`` later, from a thread; records when."""

    def __init__(self, s3, seconds: float):
        self.s3, self.seconds = s3, seconds
        self.started = self.ended = 0.0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="s3-outage", daemon=True)

    def begin(self, *_) -> None:
        if not self.thread.is_alive() and not self.started:
            self.thread.start()

    def _run(self) -> None:
        self.started = time.time()
        self.s3.stop()
        time.sleep(self.seconds)
        try:
            self.s3.start()
        except BaseException as exc:
            self.error = exc
        self.ended = time.time()


class CommitWatcher:
    """Reads the run's keys every second, as any reader could, while the run
    (and the outage) goes on: a `_SUCCESS` marker must never be visible
    before every file its manifest lists is there at its size. A marker that
    disappears again (a deleted scratch output: markers go first) is fine."""

    def __init__(self, s3, root: str):
        self.client = s3.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        self.bucket, self.root = s3.bucket, root
        self.verified: set[str] = set()
        self.violations: list[str] = []
        self.passes: list[float] = []  # time.time() of each complete pass
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="commit-watcher", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.check()
                self.passes.append(time.time())
            except Exception:  # the outage, or a key deleted under us: look again
                pass

    def listing(self) -> dict[str, int]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.root + "/")
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}

    def check(self) -> None:
        keys = self.listing()
        for marker in sorted(k for k in keys if k.endswith("/_SUCCESS") and k not in self.verified):
            prefix = marker[: -len("/_SUCCESS")]
            manifest = json.loads(self.client.get_object(Bucket=self.bucket, Key=marker)["Body"].read())
            missing = lambda listed: [n for n, e in manifest["files"].items()  # noqa: E731
                                      if listed.get(f"{prefix}/{n}") != e["size"]]
            if missing(keys) and missing(self.listing()) and marker in self.listing():
                self.violations.append(f"{prefix}: committed, but {missing(keys)} missing or short")
            self.verified.add(marker)


def committed_prefixes(client, bucket: str, root: str) -> dict[str, dict]:
    """prefix → manifest, for every `_SUCCESS` under ``root``."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root + "/"):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/_SUCCESS"):
                prefix = obj["Key"][: -len("/_SUCCESS")]
                out[prefix] = json.loads(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    return out


def assert_commits_complete(client, bucket: str, root: str) -> dict[str, dict]:
    """Every committed prefix holds exactly what its manifest lists, byte for byte."""
    import hashlib

    commits = committed_prefixes(client, bucket, root)
    for prefix, manifest in commits.items():
        for name, entry in manifest["files"].items():
            body = client.get_object(Bucket=bucket, Key=f"{prefix}/{name}")["Body"].read()
            assert len(body) == entry["size"] and hashlib.sha256(body).hexdigest() == entry["sha256"], f"{prefix}/{name}"
    return commits


def read_groups(client, bucket: str, key: str) -> list[dict]:
    data = gzip.decompress(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def test_two_rounds_through_real_children_survive_killed_pods_and_a_store_outage(
        cluster, tmp_path, erc_dir, tiny_model_dir, seaweedfs_s3):
    server, kubelet = cluster
    kube, s3 = server.client(), seaweedfs_s3
    client = s3.client()
    t0 = time.monotonic()
    doc = s3_run_doc(tmp_path, erc_dir, tiny_model_dir, s3)
    root = f"runs/{NS}/{NAME}"

    # Kills inside the first pod of each child, right after the S3 write that
    # makes the moment (a commit's marker); the outage when a round-2
    # generator opens the store (botocore logs finding its credentials).
    kubelet.inject(f"{NAME}-r1-gen-0", {"SELFEMO_FAULT_KILL_AFTER_PUT": r"/round-001/work/shard-00000-of-00002/chunk-00000/_SUCCESS$"})
    kubelet.inject(f"{NAME}-r1-train", {"SELFEMO_FAULT_KILL_AFTER_PUT": r"/round-001/train-state/step-\d+/_SUCCESS$"})
    outage = Outage(s3, OUTAGE_SECONDS)
    kubelet.on_line(f"{NAME}-r2-gen-", r"Found credentials in environment variables", outage.begin)

    watcher = CommitWatcher(s3, root)
    watcher.thread.start()
    kube.create(f"/api/v1/namespaces/{NS}/secrets", secret(s3))
    kube.create(runs_path(NS), doc)

    def status() -> dict:
        try:
            return (kube.get(f"{runs_path(NS)}/{NAME}") or {}).get("status") or {}
        except OSError:  # the emulator shares a loaded machine: a slow answer is not a failure
            return {"phase": phases[-1][1], "round": phases[-1][2]} if phases else {}

    phases: list[tuple[float, str, int]] = []  # (seconds, phase, round): printed with the logs on failure

    def ended() -> dict | None:
        st = status()
        now = (st.get("phase", ""), st.get("round", -1))
        if not phases or phases[-1][1:] != now:
            phases.append((time.monotonic() - t0, *now))
            print(f"{phases[-1][0]:6.1f}s phase {now[0]} round {now[1]}")
        return st if now[0] in ("Succeeded", "Failed") else None

    final = wait_for(ended, timeout=540, interval=0.5, what="the run to end")
    watcher.stop.set()
    watcher.thread.join(10)
    watcher.check()  # one last look, so the final commits are checked too
    print(f"run took {time.monotonic() - t0:.0f}s")
    print(kubelet.timeline())
    assert final["phase"] == "Succeeded", final.get("message")
    assert not kubelet.errors
    assert outage.error is None

    # Rounds 0..2 evaluated, checkpoints of rounds 1 and 2 recorded.
    assert final["round"] == 2
    rounds = {r["round"]: r for r in final["rounds"]}
    assert sorted(rounds) == [0, 1, 2]
    for r in (0, 1, 2):
        assert "meld" in rounds[r]["eval"] and "mean" in rounds[r]["eval"], rounds[r]
    for r in (1, 2):
        assert rounds[r]["samplesGenerated"] > 0 and rounds[r]["samplesKept"] > 0
        assert rounds[r]["checkpoint"].endswith(f"round-{r:03d}/checkpoint")

    # The store: every committed prefix complete; the outputs the rounds promise are committed.
    commits = assert_commits_complete(client, s3.bucket, root)
    for r in (0, 1, 2):
        assert f"{root}/round-{r:03d}/eval" in commits
        metrics = json.loads(client.get_object(Bucket=s3.bucket, Key=f"{root}/round-{r:03d}/eval/metrics.json")["Body"].read())
        assert metrics["mean"]["weighted_f1"] == pytest.approx(rounds[r]["eval"]["mean"], abs=0.01)
    from transformers import AutoModelForCausalLM

    for r in (1, 2):
        prefix = f"{root}/round-{r:03d}/checkpoint"
        assert prefix in commits
        local = tmp_path / f"ckpt-{r}"
        for name in commits[prefix]["files"]:
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            client.download_file(s3.bucket, f"{prefix}/{name}", str(local / name))
        model = AutoModelForCausalLM.from_pretrained(local)
        assert model.config.num_hidden_layers == 2
    assert not [k for k in commits if "/train-state/" in k], "training states are deleted once π_r commits"

    # Fault 1: the killed generator restarted in place and resumed its shard.
    (gen_pod,) = kubelet.pods_of(f"{NAME}-r1-gen-0")
    assert gen_pod.name in kubelet.injected
    assert gen_pod.exit_codes[0] == -9 and gen_pod.restarts == 1
    restarted = (kubelet.log_dir / f"{gen_pod.name}.restart-1.stderr").read_text()
    assert "resuming, 1 of 2 chunks already committed" in restarted
    run = parse_run(doc)
    from selfemo.generator.rollout import load_training_corpora, shard_seeds

    dialogues, _ = load_training_corpora(run)
    want = [s.id for s in shard_seeds(run, 1, 0, 2, dialogues)]
    got = [g["id"] for g in read_groups(client, s3.bucket, f"{root}/round-001/trajectories/shard-00000-of-00002/groups.jsonl.gz")]
    assert len(got) == len(set(got)), "a prompt group was committed twice"
    assert sorted(got) == sorted(want), "a prompt group was lost (or one appeared from nowhere)"
    gen_summary = json.loads(client.get_object(
        Bucket=s3.bucket, Key=f"{root}/round-001/trajectories/shard-00000-of-00002/summary.json")["Body"].read())
    assert gen_summary["chunks"] == 2 and gen_summary["chunks_generated_now"] == 1

    # Fault 2: the killed trainer's Job failed, was retried, and the retry resumed.
    trainer_pods = kubelet.pods_of(f"{NAME}-r1-train")
    assert [p.exit_codes for p in trainer_pods] == [[-9], [0]] and trainer_pods[0].name in kubelet.injected
    assert final["retries"].get(f"{NAME}-r1-train") == 1
    # checkpointEvery 2 of 3 steps: killed after the state of step 2, resumed at step 2
    assert "train-state/step-000002/_SUCCESS" in (kubelet.log_dir / f"{trainer_pods[0].name}.stdout").read_text()
    assert "resuming round 1 at step 2 of 3" in (kubelet.log_dir / f"{trainer_pods[1].name}.stderr").read_text()
    train_summary = json.loads(client.get_object(
        Bucket=s3.bucket, Key=f"{root}/round-001/checkpoint/training/summary.json")["Body"].read())
    assert train_summary["resumed_from_step"] == 2 and train_summary["steps"] == 3
    events = [e for e in kube.list(EVENTS) if e.get("involvedObject", {}).get("name") == NAME]
    failed = [e["message"] for e in events if e["reason"] == "ChildFailed"]
    assert any(f"{NAME}-r1-train" in m for m in failed), failed

    # Fault 3: the outage hit round 2's generators mid-shard; they retried
    # their store calls through it (no crash, no restart) and the run went on.
    assert outage.started and outage.ended - outage.started >= OUTAGE_SECONDS
    assert any(e["reason"] == "StoreUnavailable" for e in events)  # the operator saw it, and waited
    r2_gen = [p for p in kubelet.pods.values() if p.owner.startswith(f"{NAME}-r2-gen-")]
    assert len(r2_gen) == 2 and all(p.exit_codes[:1] in ([0], [-15]) and p.restarts == 0 for p in r2_gen), \
        [(p.name, p.exit_codes) for p in r2_gen]
    retried = [p.name for p in r2_gen if "unreachable" not in (text := (kubelet.log_dir / f"{p.name}.stderr").read_text())
               and "EndpointConnectionError); retry" in text]
    assert retried, "no generator was caught by the outage"
    # Nothing half-written was ever visible: not during the run, not after it.
    assert not watcher.violations, watcher.violations
    # The watcher really watched: it checked every commit that stands at the end
    # (scratch commits — chunks, training states — come and go faster than
    # its 1 s passes on a busy machine, so their number is not a measure).
    assert {f"{p}/_SUCCESS" for p in commits} <= watcher.verified, sorted({f"{p}/_SUCCESS" for p in commits} - watcher.verified)
    assert any(t > outage.ended for t in watcher.passes)
    print(f"done in {time.monotonic() - t0:.0f}s")
