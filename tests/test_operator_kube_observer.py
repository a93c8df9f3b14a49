"""Jobs and Deployments as the API returns them → the children the state machine sees."""
from __future__ import annotations

from selfemo.operator.kube_observer import deployment_state, job_state, observe_children
from selfemo.operator.observed import ChildState


def _meta(name: str, component: str, round_: int, run: str = "r", shard: int | None = None) -> dict:
    labels = {
        "app.kubernetes.io/component": component,
        "selfemo.dev/run": run,
        "selfemo.dev/round": str(round_),
    }
    if shard is not None:
        labels["selfemo.dev/shard"] = str(shard)
    return {"name": name, "namespace": "ns", "labels": labels}


def _job(name="r-r1-train", component="trainer", round_=1, conditions=None, run="r") -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(name, component, round_, run),
            "status": {"conditions": conditions} if conditions is not None else {}}


def _deployment(name="r-r1-gen-0", shard=0, conditions=None, run="r") -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, "generator", 1, run, shard),
            "status": {"conditions": conditions or []}}


def test_job_without_conditions_is_running():
    assert job_state(_job()) == ChildState("r-r1-train", "trainer", 1, None, "Running")
    assert job_state({**_job(), "status": None}).state == "Running"  # a fresh Job may have no status at all


def test_complete_job_succeeded():
    job = _job("r-r0-eval", "evaluator", 0, [{"type": "Complete", "status": "True"}])
    assert job_state(job) == ChildState("r-r0-eval", "evaluator", 0, None, "Succeeded")
    job = _job(conditions=[{"type": "SuccessCriteriaMet", "status": "True"}])
    assert job_state(job).state == "Succeeded"


def test_failed_job_carries_reason_and_message():
    conditions = [
        {"type": "FailureTarget", "status": "False"},
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"},
    ]
    state = job_state(_job(conditions=conditions))
    assert state.state == "Failed"
    assert state.message == "BackoffLimitExceeded: Job has reached the specified backoff limit"
    # The Job controller's early verdict counts too; an empty condition still says why.
    assert job_state(_job(conditions=[{"type": "FailureTarget", "status": "True", "reason": "PodFailed"}])).message == "PodFailed"
    assert job_state(_job(conditions=[{"type": "Failed", "status": "True"}])).message == "Job failed"


def test_false_conditions_do_not_count():
    assert job_state(_job(conditions=[{"type": "Complete", "status": "False"}, {"type": "Failed", "status": "False"}])).state == "Running"


def test_deployment_is_running_until_its_progress_deadline_passes():
    ok = [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
          {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]
    assert deployment_state(_deployment(conditions=ok)) == ChildState("r-r1-gen-0", "generator", 1, 0, "Running")
    stuck = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
              "message": 'ReplicaSet "r-r1-gen-0-5d4" has timed out progressing.'}]
    state = deployment_state(_deployment(conditions=stuck))
    assert state.state == "Failed" and state.message.startswith("ProgressDeadlineExceeded: ReplicaSet")


def test_observe_children_keys_by_name_and_skips_foreign_objects():
    jobs = [
        _job("r-r0-eval", "evaluator", 0, [{"type": "Complete", "status": "True"}]),
        _job("other-r1-train", run="other"),  # another run's child
        {"metadata": {"name": "unlabelled"}},
        _job("r-r1-weird", component="config"),  # not a child kind
        {**_job("r-r1-bad"), "metadata": {**_meta("r-r1-bad", "trainer", 1), "labels": {
            "app.kubernetes.io/component": "trainer", "selfemo.dev/run": "r", "selfemo.dev/round": "x"}}},
    ]
    deployments = [_deployment("r-r1-gen-0", 0), _deployment("r-r1-gen-1", 1)]
    children = observe_children("r", jobs, deployments)
    assert sorted(children) == ["r-r0-eval", "r-r1-gen-0", "r-r1-gen-1"]
    assert children["r-r1-gen-1"].shard == 1 and children["r-r1-gen-1"].kind == "generator"
    assert children["r-r0-eval"].state == "Succeeded"


# --------------------------------------------------------------------------- pods: crash loops and last exits

BORN = "2025-03-01T12:00:00Z"


def _at(obj: dict, created: str = BORN) -> dict:
    return {**obj, "metadata": {**obj["metadata"], "creationTimestamp": created}}


def _pod(name="r-r1-gen-0-7f9c-x2x", component="generator", shard=0, restarts=0, state=None, last=None,
         created="2025-03-01T12:00:05Z", run="r", deleting=False, conditions=None) -> dict:
    meta = _meta(name, component, 1, run, shard)
    meta["creationTimestamp"] = created
    if deleting:
        meta["deletionTimestamp"] = "2025-03-01T12:30:00Z"
    cs = {"name": component, "restartCount": restarts, "state": state or {"running": {}}}
    if last:
        cs["lastState"] = {"terminated": last}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "status": {"containerStatuses": [cs], "conditions": conditions or []}}


OOM = {"reason": "OOMKilled", "exitCode": 137,
       "message": "loading shard\nchunk 3/9\n\ntorch.OutOfMemoryError: CUDA out of memory\nkilled\n"}


def test_a_crash_looping_generator_fails_with_its_last_exit():
    dep = _at(_deployment())
    looping = _pod(restarts=5, state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}}, last=OOM)
    state = deployment_state(dep, [looping])
    assert state.state == "Failed"
    assert state.message == ("CrashLoopBackOff: pod r-r1-gen-0-7f9c-x2x container generator restarted 5 times; last exit: "
                             "OOMKilled, exit code 137: chunk 3/9 | torch.OutOfMemoryError: CUDA out of memory | killed")
    # A few restarts are a pod resuming its shard, not a failure.
    assert deployment_state(dep, [_pod(restarts=4, last=OOM)]).state == "Running"


def test_pods_of_other_attempts_shards_or_runs_are_not_blamed():
    dep = _at(_deployment())
    bad = dict(restarts=9, last=OOM)
    others = [
        _pod(created="2025-03-01T11:59:59Z", **bad),  # the previous attempt's pod, same labels
        _pod(deleting=True, **bad),  # terminating
        _pod("r-r1-gen-1-aa", shard=1, **bad),  # another shard
        _pod(run="other", **bad),  # another run
        _pod("r-r1-train-0-bb", component="trainer", shard=None, **bad),  # another child of the run
    ]
    assert deployment_state(dep, others).state == "Running"
    assert observe_children("r", [], [dep], others)["r-r1-gen-0"].state == "Running"


def test_a_progress_deadline_failure_says_what_the_pod_waits_for():
    stuck = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
              "message": 'ReplicaSet "r-r1-gen-0-5d4" has timed out progressing.'}]
    dep = _at(_deployment(conditions=stuck))
    pulling = _pod(state={"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "ghcr.io/x/gen:9"'}})
    assert deployment_state(dep, [pulling]).message == (
        'ProgressDeadlineExceeded: ReplicaSet "r-r1-gen-0-5d4" has timed out progressing.; '
        'pod r-r1-gen-0-7f9c-x2x: ImagePullBackOff: Back-off pulling image "ghcr.io/x/gen:9"')
    pending = _pod(state={"waiting": {"reason": "ContainerCreating"}}, conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/4 nodes: 4 Insufficient nvidia.com/gpu"}])
    assert deployment_state(dep, [pending]).message.endswith(
        "pod r-r1-gen-0-7f9c-x2x: Unschedulable: 0/4 nodes: 4 Insufficient nvidia.com/gpu")
    assert deployment_state(dep).message.startswith("ProgressDeadlineExceeded: ")  # no pods listed: still a reason


def test_a_failed_job_carries_its_pods_last_exit():
    job = _at(_job(conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                "message": "Job has reached the specified backoff limit"}]))
    pod = _pod("r-r1-train-0-q7", component="trainer", shard=None, state={"terminated": {
        "reason": "Error", "exitCode": 1, "message": "Traceback (most recent call last):\nRuntimeError: NCCL timeout\n"}})
    assert job_state(job, [pod]).message == ("BackoffLimitExceeded: Job has reached the specified backoff limit; "
                                             "pod r-r1-train-0-q7: Error, exit code 1: Traceback (most recent call last): | "
                                             "RuntimeError: NCCL timeout")
    assert job_state(job, []).message == "BackoffLimitExceeded: Job has reached the specified backoff limit"
