"""`selfemo run`'s executor: real subprocesses, the real state machine and a
real file store; the children are stand-ins (tests/support/fake_child.py)
that commit what the components commit, so a whole run takes seconds.
The real components under `selfemo run` are tested in test_quickstart.py."""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
import yaml

from selfemo.operator.local import LocalExecutor
from selfemo.runfile import load_run
from selfemo.status import Phase

FAKE = Path(__file__).parent / "support" / "fake_child.py"


def write_run(tmp_path: Path, **spec) -> Path:
    doc = {
        "apiVersion": "selfemo.dev/v1alpha1",
        "kind": "SelfEmoRun",
        "metadata": {"name": "exec-test"},
        "spec": {
            "model": {"base": "smollm2-135m-instruct"},
            "flywheel": {"rounds": 2, "earlyStop": {"patience": 0}},
            "resources": {"generator": {"shards": 2, "gpus": 0}},
            "storage": {"uri": f"file://{tmp_path}/runs"},
            **spec,
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def fake_python(tmp_path: Path) -> str:
    """An 'interpreter' that runs the stand-in with the child's arguments."""
    exe = tmp_path / "fake-python"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    exe.chmod(0o755)
    return str(exe)


def executor(tmp_path, path, monkeypatch, lines, **env):
    monkeypatch.setenv("FAKE_STATE", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return LocalExecutor(load_run(path), path, python=fake_python(tmp_path), poll_seconds=0.05,
                         heartbeat_seconds=3600, echo=lines.append)


def test_a_run_goes_through_every_round_and_succeeds(tmp_path, monkeypatch):
    path, lines = write_run(tmp_path), []
    status = executor(tmp_path, path, monkeypatch, lines).run_to_end()
    assert status.phase == Phase.succeeded, status.message
    assert [r.round for r in status.rounds] == [0, 1, 2]
    assert status.best_round == 2 and status.best_weighted_f1 == pytest.approx(12.0)
    assert status.rounds[1].samples_generated == 16 and status.rounds[1].samples_kept == 6
    started = [ln.split()[1] for ln in lines if ln.startswith("started ")]
    # baseline eval, then per round: two shards, training, evaluation; nothing twice
    assert started == ["exec-test-r0-eval", "exec-test-r1-gen-0", "exec-test-r1-gen-1", "exec-test-r1-train",
                       "exec-test-r1-eval", "exec-test-r2-gen-0", "exec-test-r2-gen-1", "exec-test-r2-train",
                       "exec-test-r2-eval"]
    saved = json.loads((tmp_path / "runs/default/exec-test/status.json").read_text())
    assert saved["phase"] == "Succeeded" and saved["bestRound"] == 2
    assert (tmp_path / "runs/default/exec-test/logs/exec-test-r1-train.log").read_text().count("fake trainer round 1") == 1


def test_running_again_after_success_starts_nothing(tmp_path, monkeypatch):
    path = write_run(tmp_path)
    executor(tmp_path, path, monkeypatch, []).run_to_end()
    again: list[str] = []
    status = executor(tmp_path, path, monkeypatch, again).run_to_end()
    assert status.phase == Phase.succeeded
    assert not [ln for ln in again if ln.startswith("started ")]


def test_an_interrupted_run_resumes_from_the_store(tmp_path, monkeypatch):
    """Stop after round 1's training; a new executor (a new `selfemo run`)
    skips everything committed and only runs what is left."""
    path, lines = write_run(tmp_path), []
    first = executor(tmp_path, path, monkeypatch, lines)
    while not (tmp_path / "runs/default/exec-test/round-001/checkpoint/_SUCCESS").exists():
        assert not first.step()
        first_children = list(first.children.values())
        for c in first_children:
            c.proc.wait()
    for name in list(first.children):
        first.stop(name)
    rest: list[str] = []
    status = executor(tmp_path, path, monkeypatch, rest).run_to_end()
    assert status.phase == Phase.succeeded
    started = [ln.split()[1] for ln in rest if ln.startswith("started ")]
    assert started[0] == "exec-test-r1-eval" and "exec-test-r1-train" not in started and "exec-test-r0-eval" not in started


def test_a_failing_child_is_retried_after_backoff(tmp_path, monkeypatch):
    path, lines = write_run(tmp_path, flywheel={"rounds": 1}), []
    status = executor(tmp_path, path, monkeypatch, lines, FAKE_FAIL="trainer:1").run_to_end()
    assert status.phase == Phase.succeeded, status.message
    assert sum(ln.startswith("started exec-test-r1-train") for ln in lines) == 2
    assert status.retries.get("exec-test-r1-train") == 1


def test_a_child_failing_past_max_retries_fails_the_run_with_its_error(tmp_path, monkeypatch):
    path, lines = write_run(tmp_path, flywheel={"rounds": 1}, maxRetries=0), []
    status = executor(tmp_path, path, monkeypatch, lines, FAKE_FAIL="generator:9").run_to_end()
    assert status.phase == Phase.failed
    assert "exec-test-r1-gen-0" in status.message and "boom: simulated generator crash" in status.message
    failed = next(c for c in status.conditions if c.type == "Failed")
    assert failed.status == "True" and failed.reason == "ChildFailed"


def test_max_parallel_bounds_live_children(tmp_path, monkeypatch):
    path = write_run(tmp_path, flywheel={"rounds": 1})
    ex = executor(tmp_path, path, monkeypatch, [])
    peak = 0
    while not ex.step():
        peak = max(peak, sum(1 for c in ex.children.values() if c.proc.poll() is None))
    assert ex.status.phase == Phase.succeeded
    assert peak == 1


def test_status_and_report_read_a_finished_run(tmp_path, monkeypatch, capsys):
    from selfemo.cli import main

    path = write_run(tmp_path)
    executor(tmp_path, path, monkeypatch, []).run_to_end()
    run_dir = tmp_path / "runs/default/exec-test"
    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "phase Succeeded, best round 2 (mean weighted-F1 12.00)" in out
    assert main(["report", str(run_dir)]) == 0
    report = (run_dir / "report/report.md").read_text()
    assert "| 2 | 12.00 / 12.00 | 12.00 / 12.00 | 16 | 6 | 0.500 |" in report
    for png in ("wf1.png", "flywheel.png"):
        assert (run_dir / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for r in (0, 1, 2):  # the metrics travel with the report, equal to what the run committed
        committed = json.loads((run_dir / f"round-{r:03d}/eval/metrics.json").read_text())
        assert json.loads((run_dir / f"report/metrics/round-{r:03d}.json").read_text()) == committed
    assert main(["status", str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_report_adds_batch_calibrated_scores_to_rounds_evaluated_before_them(tmp_path):
    """A round committed without `batch_calibrated` (evaluated by an older
    version) gets it from its predictions' label scores: in the copied
    metrics and in report.md; the committed metrics are left as they were."""
    from selfemo.cli import main
    from selfemo.data.vocab import LabelVocab
    from selfemo.generator.evaluate import report_from_predictions
    from selfemo.generator.rollout import encode_jsonl_gz
    from selfemo.store import open_store

    vocab = LabelVocab("two", ("joy", "anger"))
    # the model prefers joy everywhere (raw argmax: all joy), but leans to anger exactly on the anger utterances
    preds = [{"dataset": "meld", "id": f"u{i}", "gold": gold, "pred": "joy", "answer": None, "scores": scores}
             for i, (gold, scores) in enumerate([("joy", [-0.1, -2.4]), ("joy", [-0.1, -2.5]), ("anger", [-0.3, -1.4])] * 2)]
    metrics = {"round": 0, "decoding": "constrained", "datasets": {"meld": report_from_predictions(preds, vocab)},
               "mean": {"weighted_f1": 0.0, "accuracy": 0.0}}
    run_dir = tmp_path / "run"
    with open_store(str(run_dir)).commit("round-000/eval") as out:
        out.put_bytes("metrics.json", json.dumps(metrics).encode())
        out.put_bytes("predictions.jsonl.gz", encode_jsonl_gz(preds))
    assert main(["report", str(run_dir), "-o", str(tmp_path / "report")]) == 0
    copied = json.loads((tmp_path / "report/metrics/round-000.json").read_text())
    assert copied["datasets"] == json.loads(json.dumps(metrics["datasets"]))
    assert metrics["datasets"]["meld"]["accuracy"] == pytest.approx(200 / 3)  # raw: every anger utterance missed
    assert copied["batch_calibrated"]["datasets"]["meld"]["accuracy"] == 100.0
    assert copied["batch_calibrated"]["mean"]["weighted_f1"] == 100.0
    assert "## Batch-calibrated scores" in (tmp_path / "report/report.md").read_text()
    assert "| 0 | 100.00 / 100.00 | 100.00 / 100.00 |" in (tmp_path / "report/report.md").read_text()
    assert "batch_calibrated" not in json.loads((run_dir / "round-000/eval/metrics.json").read_text())


def test_store_and_data_dir_overrides_are_validated_and_applied(tmp_path):
    from selfemo.run_cli import with_overrides

    run = load_run(write_run(tmp_path, datasets={"train": [{"name": "meld", "format": "meld", "uri": "../shared/erc/meld"}]}))
    new = with_overrides(run, store=str(tmp_path / "elsewhere"), data_dir="/data/erc")
    assert new.spec.storage.uri == str(tmp_path / "elsewhere")
    assert new.spec.datasets.train[0].uri == "/data/erc/meld"
    assert with_overrides(run, store="s3://bucket/p", data_dir=None).spec.storage.uri == "s3://bucket/p"


def test_the_real_trainer_finding_no_learning_signal_ends_the_run_without_a_retry(tmp_path, monkeypatch):
    """Round 1's shard is committed with no group kept: the real trainer exits 3
    and commits `no-signal/`; `selfemo run` ends Succeeded/NoLearningSignal
    with the baseline as its best round, and never starts the trainer again."""
    import gzip

    from selfemo.policy import open_run_store

    path, lines = write_run(tmp_path, flywheel={"rounds": 2, "earlyStop": {"patience": 0}},
                            resources={"generator": {"shards": 1, "gpus": 0}}, maxRetries=2), []
    with open_run_store(load_run(path)).commit("round-001/selected/shard-00000-of-00001") as out:
        out.put_bytes("groups.jsonl.gz", gzip.compress(b""))
        out.put_bytes("summary.json", json.dumps({"groups": 4, "candidates": 32, "kept": 0, "mean_reward": 0.2}).encode())
    python = tmp_path / "trainer-is-real"
    python.write_text(f'#!/bin/sh\nif [ "$2" = selfemo.trainer ]; then exec {sys.executable} "$@"; fi\n'
                      f'exec {sys.executable} {FAKE} "$@"\n')
    python.chmod(0o755)
    monkeypatch.setenv("FAKE_STATE", str(tmp_path))
    ex = LocalExecutor(load_run(path), path, python=str(python), poll_seconds=0.05, heartbeat_seconds=3600,
                       echo=lines.append)
    status = ex.run_to_end()
    assert status.phase == Phase.succeeded, status.message
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "NoLearningSignal")
    assert status.retries == {} and status.best_round == 0 and status.round == 1
    assert "0 of 32 samples kept" in status.message and "flywheel.rewardThreshold" in status.message
    started = [ln.split()[1] for ln in lines if ln.startswith("started ")]
    assert started == ["exec-test-r0-eval", "exec-test-r1-train"]
    assert any(ln.startswith("[Warning] NoLearningSignal: round 1") for ln in lines), lines
    assert not any("ChildFailed" in ln for ln in lines), lines
    log = (tmp_path / "runs/default/exec-test/logs/exec-test-r1-train.log").read_text()
    assert "no learning signal: the flywheel selected no group" in log
    assert (tmp_path / "runs/default/exec-test/round-001/no-signal/_SUCCESS").exists()


def test_run_refuses_missing_dataset_files_before_starting_anything(tmp_path, capsys, erc_dir):
    """Every local corpus a child would read is checked first, by the loaders
    themselves, after --data-dir: each problem names its field path, the
    resolved path and the missing file; s3:// corpora are the children's."""
    from selfemo.cli import main
    from selfemo.run_cli import missing_data
    from support.runs import quickstart_run

    (tmp_path / "data/iemocap").mkdir(parents=True)
    (tmp_path / "data/iemocap/train.jsonl").write_text("")  # the train split only: eval needs test
    path = write_run(tmp_path, datasets={
        "train": [{"name": "meld", "format": "meld", "uri": "../corpora/meld"}],
        "eval": [{"name": "meld", "format": "meld", "uri": "s3://corpora/meld"},
                 {"name": "iemocap", "format": "iemocap", "uri": str(tmp_path / "data/iemocap")}]})
    assert main(["run", str(path), "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert f"spec.datasets.train[0].uri: {tmp_path / 'data/meld'}: no such file or folder (the train split" in err
    assert f"spec.datasets.eval[1].uri: {tmp_path / 'data/iemocap'}: no iemocap file test.jsonl here" in err
    assert "eval[0]" not in err
    assert "--data-dir DIR" in err and "SELFEMO_ERC_DIR" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data/effective-run.yaml").exists()
    # the split files the real corpora have are found (the quickstart's train and eval refs)
    assert missing_data(quickstart_run(tmp_path, erc_dir)) == []


def progress_python(tmp_path: Path) -> str:
    """The stand-in children, each printing a progress line and working for a moment first."""
    exe = tmp_path / "slow-python"
    exe.write_text(f"#!/bin/sh\necho 'work: 3/8 prompts'\nsleep 0.6\nexec {sys.executable} {FAKE} \"$@\"\n")
    exe.chmod(0o755)
    return str(exe)


def test_progress_lines_show_round_phase_shards_child_progress_and_latest_wf1(tmp_path, monkeypatch):
    """Not on a terminal the view is plain periodic lines (every line here:
    heartbeat 0), each with everything a user watching a log needs."""
    monkeypatch.setenv("FAKE_STATE", str(tmp_path))
    path, lines, shown = write_run(tmp_path, flywheel={"rounds": 1}), [], []
    ex = LocalExecutor(load_run(path), path, python=progress_python(tmp_path), poll_seconds=0.1,
                       heartbeat_seconds=0, echo=lines.append, show=shown.append)
    assert ex.run_to_end().phase == Phase.succeeded

    def seen(pattern: str) -> bool:
        return any(re.fullmatch(pattern, ln) for ln in shown)

    assert seen(r"round 0/1 Evaluating \| exec-test-r0-eval 0m0\ds: work: 3/8 prompts"), shown
    assert seen(r"round 1/1 Generating \| shards 0/2 committed \| W-F1 10.00 \(round 0\) \| "
                r"exec-test-r1-gen-0 0m0\ds: work: 3/8 prompts"), shown
    assert seen(r"round 1/1 Generating \| shards 1/2 committed \| W-F1 10.00 \(round 0\) \| "
                r"exec-test-r1-gen-1 0m0\ds: work: 3/8 prompts"), shown
    assert seen(r"round 1/1 Training \| W-F1 10.00 \(round 0\) \| exec-test-r1-train 0m0\ds: .*"), shown
    assert shown[-1] == "round 1/1 Succeeded | W-F1 11.00 (round 1)"
    assert not set(shown) & set(lines)  # transitions and child starts go to echo, progress to show


def test_the_terminal_view_redraws_one_line_and_prints_messages_above_it():
    import io

    from selfemo.operator.progress_view import TerminalLine

    out = io.StringIO()
    view = TerminalLine(out)
    view.show("round 1/2 Generating")
    view.print("started r1-gen-0")
    view.show("round 1/2 Training")
    view.close()
    assert out.getvalue() == ("\rround 1/2 Generating\x1b[K"
                              "\r\x1b[Kstarted r1-gen-0\nround 1/2 Generating"
                              "\rround 1/2 Training\x1b[K\n")


def test_stopping_a_child_kills_its_whole_process_group(tmp_path, monkeypatch):
    """A worker that ignores SIGTERM (as vLLM or torchrun workers may) is
    SIGKILLed with its group even though the child itself exited."""
    import os

    from selfemo.operator.round import ChildIntent
    from support.process_groups import alive, group_left_alive

    pids = tmp_path / "worker.pid"
    exe = tmp_path / "forking-python"
    exe.write_text(f"#!/bin/sh\n(trap '' TERM; exec sleep 600) &\necho $! > {pids}\nexec sleep 600\n")
    exe.chmod(0o755)
    ex = LocalExecutor(load_run(write_run(tmp_path)), tmp_path / "run.yaml", python=str(exe), echo=lambda _: None)
    ex.start(ChildIntent(name="exec-test-r1-gen-0", kind="generator", round=1, shard=0, shards=1))
    leader = ex.children["exec-test-r1-gen-0"].proc.pid
    deadline = time.monotonic() + 30
    while not pids.exists() or not pids.read_text().strip():
        assert time.monotonic() < deadline, "the child never started its worker"
        time.sleep(0.05)
    worker = int(pids.read_text())
    assert os.getpgid(worker) == leader
    ex.stop("exec-test-r1-gen-0")
    assert not alive(leader)
    assert group_left_alive(leader) == [] and not alive(worker)


def test_a_requested_stop_stops_the_running_child_saves_the_status_and_raises(tmp_path, monkeypatch):
    """What `selfemo run`'s SIGINT/SIGTERM handler asks for, at a step boundary."""
    import signal

    monkeypatch.setenv("FAKE_STATE", str(tmp_path))
    path, started = write_run(tmp_path, flywheel={"rounds": 1}), []

    def echo(line: str) -> None:
        if line.startswith("started exec-test-r1-gen-0"):
            started.append(ex.children["exec-test-r1-gen-0"].proc)
            ex.request_stop()

    ex = LocalExecutor(load_run(path), path, python=progress_python(tmp_path), poll_seconds=0.05,
                       heartbeat_seconds=3600, echo=echo)
    with pytest.raises(KeyboardInterrupt):
        ex.run_to_end()
    assert started[0].returncode == -signal.SIGTERM and not ex.children
    saved = json.loads((tmp_path / "runs/default/exec-test/status.json").read_text())
    assert (saved["phase"], saved["round"]) == ("Generating", 1)
    assert not (tmp_path / "runs/default/exec-test/round-001/selected").exists()


def test_report_names_each_rounds_most_frequent_answer_and_marks_a_collapse():
    from selfemo.metrics import classification_report
    from selfemo.report_cli import predictions_markdown

    labels = ["joy", "anger", "fear"]
    collapsed = classification_report([0] * 4 + [1] * 3 + [2] * 3, [0] * 9 + [1], labels).to_dict()
    spread = classification_report([0, 1, 2, 2], [0, 1, 2, 2], labels).to_dict()
    evals = {0: {"datasets": {"meld": collapsed, "iemocap": spread}},
             1: {"datasets": {"meld": {"weighted_f1": 1.0, "accuracy": 1.0}}}}  # no confusion: older metrics
    md = predictions_markdown(evals, ["iemocap", "meld"])
    assert "| 0 | fear 2/4 (50%) | joy 9/10 (90%), **collapsed** |" in md
    assert "| 1 | - | - |" in md
