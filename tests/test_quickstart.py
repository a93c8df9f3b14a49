"""`selfemo run` with the real components: the quickstart run file on a tiny
model and a small MELD slice goes through the baseline evaluation, one round
of self-play, training and evaluation, as separate processes, and commits
every output the round promises; stopped with SIGTERM mid-round, the same
command resumes it."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from support.process_groups import alive, group_left_alive
from support.runs import write_quickstart


def write_tiny_run(tmp_path: Path, erc_dir: Path, tiny_model_dir: Path) -> Path:
    return write_quickstart(
        tmp_path, erc_dir, model=str(tiny_model_dir),
        selfPlay={"promptsPerRound": 12, "groupSize": 4, "maxTurns": 1, "maxNewTokens": 8},
        evaluation={"expressionSamples": 4, "batchSize": 8},
        training={"microBatchSize": 4, "checkpointEvery": 0},
        # a random-weight model rarely answers with a label: keep every candidate
        # so the round has samples to fine-tune on (the real model needs no such help)
        flywheel={"rewardThreshold": 0.0},
        datasets={"train": [{"name": "meld", "format": "meld", "uri": str(erc_dir / "meld"), "maxDialogues": 8}],
                  "eval": [{"name": "meld", "format": "meld", "uri": str(erc_dir / "meld"), "maxUtterances": 24}]},
    )


def test_selfemo_run_drives_a_real_round_to_success(tmp_path, erc_dir, tiny_model_dir):
    path = write_tiny_run(tmp_path, erc_dir, tiny_model_dir)
    proc = subprocess.run([sys.executable, "-m", "selfemo", "run", str(path), "--poll", "0.2"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = tmp_path / "runs" / "default" / "quickstart"
    for prefix in ("round-000/eval", "round-001/selected/shard-00000-of-00001", "round-001/checkpoint", "round-001/eval"):
        assert (root / prefix / "_SUCCESS").exists(), prefix
    status = json.loads((root / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    assert [r["round"] for r in status["rounds"]] == [0, 1]
    r1 = status["rounds"][1]
    assert r1["samplesGenerated"] > 0 and r1["checkpoint"].endswith("round-001/checkpoint")
    assert "meld" in r1["eval"] and "mean" in r1["eval"]
    # the printed summary carries the same numbers
    assert "phase Succeeded" in proc.stdout and f"{r1['eval']['meld']:10.2f}" in proc.stdout
    # the trained policy is a loadable Hugging Face checkpoint
    assert (root / "round-001/checkpoint/config.json").exists()


def test_sigterm_stops_the_running_child_and_the_same_command_resumes(tmp_path, erc_dir, tiny_model_dir):
    """`kill` of `selfemo run` while round 1's generator runs: the generator's
    whole process group is gone, the status is saved, the exit is non-zero
    with the command that resumes; that command skips the committed baseline
    and finishes the run. Not on a terminal, progress comes as log lines."""
    path = write_tiny_run(tmp_path, erc_dir, tiny_model_dir)
    root = tmp_path / "runs" / "default" / "quickstart"
    cmd = [sys.executable, "-m", "selfemo", "run", str(path), "--poll", "0.2", "--progress-every", "1"]
    with open(tmp_path / "first.out", "w") as out, open(tmp_path / "first.err", "w") as err:
        run = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=tmp_path)
        try:
            generator = wait_for_child(run, "rollout", after=root / "round-000/eval/_SUCCESS")
            time.sleep(1.0)  # into its model loading or self-play
            assert generator.is_running()
            run.send_signal(signal.SIGTERM)
            assert run.wait(timeout=60) == 130
        finally:
            if run.poll() is None:
                run.kill()
    first = (tmp_path / "first.err").read_text()
    assert not alive(generator.pid), first
    assert group_left_alive(generator.pid) == [], first
    assert "stopped: status saved in" in first and f"selfemo run {path}" in first, first
    status = json.loads((root / "status.json").read_text())
    assert (status["phase"], status["round"]) == ("Generating", 1)
    assert "round 1/1 Generating | shards 0/1 committed | W-F1 " in first, first  # the periodic progress line

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "started quickstart-r0-eval" not in again.stderr and "started quickstart-r1-gen-0" in again.stderr
    status = json.loads((root / "status.json").read_text())
    assert status["phase"] == "Succeeded" and [r["round"] for r in status["rounds"]] == [0, 1]
    assert (root / "round-001/eval/_SUCCESS").exists()


def wait_for_child(run: subprocess.Popen, word: str, *, after: Path, timeout: float = 600) -> psutil.Process:
    """The child of ``run`` whose command line has ``word``, once ``after`` exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.poll() is None, f"selfemo run exited early ({run.returncode})"
        if after.exists():
            for child in psutil.Process(run.pid).children():
                try:
                    if word in child.cmdline():
                        return child
                except psutil.NoSuchProcess:
                    continue
        time.sleep(0.1)
    raise AssertionError(f"no {word} child of selfemo run within {timeout} s")

