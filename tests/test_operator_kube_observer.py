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
