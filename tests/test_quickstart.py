"""`selfemo run` with the real components: the quickstart run file on a tiny
model and a small MELD slice goes through the baseline evaluation, one round
of self-play, training and evaluation, as separate processes, and commits
every output the round promises."""
from __future__ import annotations

import json
import subprocess
import sys

from support.runs import write_quickstart


def test_selfemo_run_drives_a_real_round_to_success(tmp_path, erc_dir, tiny_model_dir):
    path = write_quickstart(
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
