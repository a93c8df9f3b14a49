"""Generator logic without a model: parsing, prompts, self-play bookkeeping,
the flywheel filter and shard resumption, driven by a scripted backend (a
fake is fine here: these tests check our logic, not an engine's)."""
from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfemo.data import get_vocab
from selfemo.generator import prompts
from selfemo.generator.backends.base import Completion, Group, SamplingParams, Throughput
from selfemo.generator.flywheel import FilterConfig, FlywheelCounts, kept_indices, select
from selfemo.generator.parsing import MAX_ANSWER_CHARS, parse_labels
from selfemo.generator.selfplay import SelfPlay, index_dialogues, plan_seeds, shard_of
MELD = get_vocab("meld")


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "answer, labels, ok",
    [
        ("Joy", ("joy",), True),
        ("joy.", ("joy",), True),
        ("The emotion is: HAPPY", ("joy",), True),
        ("anger, disgust", ("anger", "disgust"), True),
        ("Sad and angry!", ("sadness", "anger"), True),
        ("neutral\n\nExplanation: he is sad", ("neutral",), True),
        ("none", (), True),
        ("", (), False),
        ("I like turtles", (), False),
        (None, (), False),
        (b"\xff\xfejoy", ("joy",), True),
        (b"\xff\xfe\xfa", (), False),
        ("x" * 100_000 + " joy", (), False),  # the label sits past the head: rambling earns nothing
        ("\x00joy", ("joy",), True),
    ],
)
def test_parse_examples(answer, labels, ok):
    p = parse_labels(answer, MELD)
    assert (p.labels, p.ok) == (labels, ok)


@given(st.text(max_size=400) | st.binary(max_size=400))
def test_parse_never_raises_and_stays_in_vocabulary(answer):
    p = parse_labels(answer, MELD)
    assert set(p.labels) <= set(MELD.labels)
    assert p.ok == bool(p.labels) or p.labels == ()


def test_first_mentioned_label_is_the_single_prediction():
    assert parse_labels("surprise, then joy", MELD).first == "surprise"


# ---------------------------------------------------------------- prompts


def test_prompts_bound_the_context_and_name_the_labels():
    turns = [prompts.Turn(f"S{i % 2}", f"line {i}") for i in range(20)]
    system, user = (m["content"] for m in prompts.recognition(turns, MELD, context_turns=4))
    assert "line 19" in user and "line 16" in user and "line 15" not in user
    assert all(label in system for label in MELD.labels)
    assert "S1 express" in user
    expr = prompts.expression(turns, "Ross", ("joy",), 4)[-1]["content"]
    assert "Ross" in expr and "joy" in expr


@pytest.mark.parametrize("window", [1, 2, 3, 4, 8])
def test_context_start_keeps_the_window_and_aligns_neighbours(window):
    starts = [prompts.context_start(n, window) for n in range(1, 40)]
    for n, s in zip(range(1, 40), starts):
        assert 0 <= s <= max(0, n - window)  # at least `window` turns, when there are that many
        assert n - s < window + (window + 1) // 2  # at most half a window more
    assert starts == sorted(starts)
    # consecutive utterances share their start in runs of ceil(window / 2)
    assert max(starts.count(s) for s in set(starts) if s > 0) == (window + 1) // 2


def test_neighbouring_prompts_share_everything_but_the_newest_turn_and_question():
    turns = [prompts.Turn(f"S{i % 2}", f"line {i}") for i in range(10)]
    a, b = (prompts.recognition(turns[:n], MELD, 4)[-1]["content"] for n in (6, 7))
    assert b.startswith(a[: a.index("line 5")] + "line 5")


def test_clean_reply():
    assert prompts.clean_reply('Ross: "Oh my god!"\nMonica: no', "Ross") == "Oh my god!"
    assert prompts.clean_reply("\n\n", "Ross") == ""


# ---------------------------------------------------------------- flywheel


def _record(totals, texts=None, task="recognition", prompt="p"):
    texts = texts or [f"t{i}" for i in range(len(totals))]
    return {
        "task": task, "prompt": prompt, "reference": ["joy"], "reward_std": float(np.std(totals)),
        "candidates": [{"text": t, "labels": ["joy"], "parsed": True, "reward": {"total": r}} for t, r in zip(texts, totals)],
    }


def test_keep_best_above_threshold_at_most_k_distinct():
    cfg = FilterConfig(threshold=0.6, keep_per_prompt=2)
    assert kept_indices(_record([0.9, 0.5, 0.95, 0.7]), cfg) == [0, 2]
    assert kept_indices(_record([0.9, 0.9, 0.2], texts=["same", "same ", "x"]), cfg) == [0]
    assert kept_indices(_record([0.1, 0.2]), cfg) == []


def test_select_drops_no_signal_groups_and_duplicates_and_counts():
    cfg = FilterConfig(threshold=0.6, keep_per_prompt=2)
    recs = [_record([0.3, 0.3], prompt="a"), _record([1.0, 1.0], prompt="b"), _record([0.9, 0.1], prompt="c"), _record([0.9, 0.1], prompt="c")]
    counts = FlywheelCounts()
    out = select(recs, cfg, counts)
    assert [(r["prompt"], r["kept"], r["grpo"]) for r in out] == [("b", [0, 1], False), ("c", [0], True)]
    assert counts.groups == 4 and counts.candidates == 8 and counts.kept == 3
    assert counts.grpo_groups == 1 and counts.duplicate_prompts == 1
    d = counts.to_dict()
    assert d["kept_ratio"] == pytest.approx(3 / 8)
    assert FlywheelCounts.from_dict(d).to_dict() == d


# ---------------------------------------------------------------- self-play with a scripted engine


class CharTokenizer:
    """One token per character: enough to render and tokenise in a logic test."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(ch) for ch in text]}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class ScriptedBackend:
    """Answers recognition prompts with a fixed rotation of labels and writes
    replies that name the intended emotion; records every call."""

    name = "scripted"
    tokenizer = CharTokenizer()

    def __init__(self, answers=("joy", "joy", "anger", "nonsense")):
        self.answers = answers
        self.calls = []
        self.throughput = Throughput()

    def generate(self, msgs, params: SamplingParams):
        self.calls.append((len(msgs), params))
        rng = random.Random(params.seed)
        out = []
        for m in msgs:
            content = m[-1]["content"]
            if "Write the next line" in content:
                feeling = content.split("who feels ")[1].split(".")[0]
                texts = [f"I feel {feeling} #{rng.randint(0, 9)}" for _ in range(params.n)]
            else:
                texts = [self.answers[(i + rng.randint(0, 3)) % len(self.answers)] for i in range(params.n)]
            out.append(Group("P:" + content, 10, tuple(Completion(t, (1, 2), (-0.5, -0.25)) for t in texts)))
            self.throughput.generated_tokens += 2 * params.n
        return out

    def score_choices(self, msgs, choices):
        return np.tile(np.arange(len(choices), dtype=float), (len(msgs), 1))

    def close(self):
        pass


def _dialogues(erc_dir, n=6):
    from selfemo.data import load_dialogues

    return {"meld": list(itertools.islice(load_dialogues("meld", erc_dir / "meld", splits=["train"]), n))}


@pytest.fixture
def quick_run(tmp_path, erc_dir):
    from support.runs import quickstart_run

    # free-text answers (the quickstart file says `labels`): these tests drive the parser and rewards
    return quickstart_run(tmp_path, erc_dir, selfPlay={"answers": "free"})


def test_plan_seeds_is_deterministic_and_shards_partition(erc_dir):
    ds = _dialogues(erc_dir)
    a = plan_seeds(ds, ["recognition", "understanding", "expression"], 50, seed=7)
    assert a == plan_seeds(ds, ["recognition", "understanding", "expression"], 50, seed=7)
    assert a != plan_seeds(ds, ["recognition", "understanding", "expression"], 50, seed=8)
    assert len(set(a)) == 50 and all(s.turn >= 1 for s in a if s.task != "recognition")
    parts = [shard_of(a, i, 3) for i in range(3)]
    assert sorted(itertools.chain(*parts), key=a.index) == a


def test_label_balanced_sampling_evens_out_the_labels_of_the_same_positions(erc_dir):
    """`selfPlay.sampling: label-balanced` draws from the same positions as uniform sampling but
    deals them round-robin over the gold labels, so a small sample is not mostly `neutral`."""
    from collections import Counter

    ds = _dialogues(erc_dir)
    label = {(d.id, t): u.labels[0] for d in ds["meld"] for t, u in enumerate(d.utterances)}
    n_labels = len(set(label.values()))
    uniform = plan_seeds(ds, ["recognition"], 24, seed=3)
    balanced = plan_seeds(ds, ["recognition"], 24, seed=3, balanced=True)
    assert balanced == plan_seeds(ds, ["recognition"], 24, seed=3, balanced=True)
    count_u = Counter(label[s.dialogue_id, s.turn] for s in uniform)
    count_b = Counter(label[s.dialogue_id, s.turn] for s in balanced)
    whole = Counter(label.values())
    assert count_u.most_common(1)[0][0] == whole.most_common(1)[0][0]  # uniform mirrors the corpus
    # balanced: every label of the corpus, each as often as the rarest allows (one round = n_labels)
    assert set(count_b) == set(whole)
    first_round = [label[s.dialogue_id, s.turn] for s in balanced[:n_labels]]
    assert sorted(first_round) == sorted(whole)
    # round-robin: some depth r has each label min(its supply, r) or one more (the last, partial round)
    assert any(all(min(whole[k], r) <= count_b[k] <= min(whole[k], r + 1) for k in whole) for r in range(25))
    assert all(count_b[k] >= count_u[k] for k in whole if k != whole.most_common(1)[0][0])
    assert count_b[whole.most_common(1)[0][0]] < count_u[whole.most_common(1)[0][0]]
    # uniform sampling is what it was before the option existed (runs stay reproducible)
    import random

    from selfemo.generator.selfplay import Seed

    old = [Seed(n, d.id, t, "recognition") for n in sorted(ds) for d in ds[n] for t in range(len(d.utterances))]
    random.Random(3).shuffle(old)
    assert uniform == old[:24]


def test_self_play_records_rewards_and_synthetic_turns(erc_dir, quick_run):
    ds = _dialogues(erc_dir)
    seeds = plan_seeds(ds, ["recognition", "understanding", "expression"], 24, seed=1)
    backend = ScriptedBackend()
    play = SelfPlay(backend, quick_run.spec, index_dialogues(ds), {"meld": MELD})
    recs = play.run(seeds, seed=3)
    assert recs == SelfPlay(ScriptedBackend(), quick_run.spec, index_dialogues(ds), {"meld": MELD}).run(seeds, seed=3)
    g = quick_run.spec.self_play.group_size
    by_task = {t: [r for r in recs if r["task"] == t] for t in ("recognition", "understanding", "expression")}
    assert all(len(r["candidates"]) == g for r in recs)
    rec = by_task["recognition"][0]
    gold = set(rec["reference"])
    for c in rec["candidates"]:
        assert c["reward"]["alignment"] == pytest.approx((len(set(c["labels"]) & gold) + 0.1) / (len(set(c["labels"]) | gold) + 0.1))
        assert c["reward"]["format"] == float(c["parsed"])
    # the scripted responder always says what it meant: replies are heard and self-play goes on
    synthetic = [r for r in recs if r["synthetic"]]
    assert synthetic, "accepted replies must create synthetic recognition groups"
    assert all(r["reference_kind"] == "intended" for r in synthetic)
    assert max(r["selfplay_turn"] for r in recs) <= quick_run.spec.self_play.max_turns


def test_label_answers_sample_from_the_label_scores_and_hear_the_best_label(erc_dir, quick_run):
    """`selfPlay.answers: labels`: recognition and understanding candidates are label names drawn from the
    backend's label scores (none from free text), replies are heard as their most likely label."""
    from collections import Counter

    from selfemo.generator.label_answers import label_distribution, sample_label_indices

    ds = _dialogues(erc_dir)
    seeds = plan_seeds(ds, ["recognition", "understanding", "expression"], 24, seed=1)
    spec = quick_run.spec.model_copy(update={"self_play": quick_run.spec.self_play.model_copy(update={"answers": "labels"})})
    backend = ScriptedBackend()
    recs = SelfPlay(backend, spec, index_dialogues(ds), {"meld": MELD}).run(seeds, seed=3)
    answered = [r for r in recs if r["task"] in ("recognition", "understanding")]
    assert answered and all(c["parsed"] and c["text"] in MELD.labels and c["labels"] == [c["text"]] for r in answered for c in r["candidates"])
    assert all(c["token_ids"] == [ord(ch) for ch in c["text"]] and c["logprobs"] == [] for r in answered for c in r["candidates"])
    assert all(r["prompt"].endswith("<assistant>") for r in answered)
    # only the replies are free text: every generate call is an expression call
    assert backend.calls and all(params.max_tokens >= 48 for _, params in backend.calls)
    # the scripted scores rise with the label index, so sampling favours the last labels ...
    counts = Counter(c["text"] for r in answered for c in r["candidates"])
    assert counts[MELD.labels[-1]] > counts[MELD.labels[0]]
    # ... and hearing takes the best one: every expression candidate was heard as the last label
    expr = [r for r in recs if r["task"] == "expression"]
    assert expr and all(c["labels"] == [MELD.labels[-1]] for r in expr for c in r["candidates"])
    # the sampler itself: the empirical frequencies follow the softmax, and a seed fixes the draw
    scores = np.log(np.array([[1.0, 2.0, 7.0]]))
    draws = sample_label_indices(scores, 20000, 1.0, seed=5)[0]
    assert np.bincount(draws, minlength=3) / 20000 == pytest.approx([0.1, 0.2, 0.7], abs=0.02)
    assert (draws == sample_label_indices(scores, 20000, 1.0, seed=5)[0]).all()
    assert label_distribution(scores, 0.01)[0].argmax() == 2 and label_distribution(scores, 0.01)[0, 2] > 0.999
    with pytest.raises(ValueError, match="temperature"):
        label_distribution(scores, 0.0)


def test_calibrated_label_sampling_draws_each_label_where_the_model_leans_to_it(erc_dir, quick_run):
    """`selfPlay.labelSampling: calibrated`: the scripted backend prefers the last label for every prompt
    alike, so once that shared prior is divided out no label is favoured; per dataset, a prompt that leans
    to a label more than the others do is calibrated towards it."""
    from collections import Counter

    from selfemo.data import get_vocab
    from selfemo.generator.label_answers import calibrate_by_dataset

    ds = _dialogues(erc_dir)
    seeds = plan_seeds(ds, ["recognition", "understanding"], 24, seed=1)
    sp = quick_run.spec.self_play.model_copy(update={"answers": "labels", "label_sampling": "calibrated", "group_size": 8})
    recs = SelfPlay(ScriptedBackend(), quick_run.spec.model_copy(update={"self_play": sp}), index_dialogues(ds), {"meld": MELD}).run(seeds, seed=3)
    counts = Counter(c["text"] for r in recs for c in r["candidates"])
    total = sum(counts.values())
    assert total == 8 * len(recs) and set(counts) == set(MELD.labels)
    assert max(counts.values()) / total < 0.25  # policy sampling gives the last of 7 labels 63%
    # the pure step: datasets are calibrated apart, and the leaning prompt flips to its lean
    emory = get_vocab("emorynlp")
    rows = [np.log([0.9, 0.1, *[1e-3] * 5]), np.log([0.6, 0.4, *[1e-3] * 5]), np.arange(7.0), np.arange(7.0)]
    out = calibrate_by_dataset(rows, [MELD, MELD, emory, emory])
    assert [int(np.argmax(r)) for r in out[:2]] == [0, 1]
    assert out[2] == pytest.approx(np.zeros(7)) and out[3] == pytest.approx(np.zeros(7))  # identical rows: nothing to tell apart


def test_rollout_resumes_without_loss_or_duplicates(quick_run):
    from selfemo.generator import rollout

    full = rollout.rollout_shard(quick_run, 1, 0, 2, chunk_size=4, backend=ScriptedBackend())
    store = rollout.open_run_store(quick_run)
    keys = rollout.ShardKeys(1, 0, 2)
    want = rollout.decode_jsonl_gz(store.open_committed(keys.trajectories).get_bytes(rollout.GROUPS))
    store.delete("round-001")

    assert full["generation"]["chunks"] > 2, "the shard needs more chunks than the run stops after"
    partial = rollout.rollout_shard(quick_run, 1, 0, 2, chunk_size=4, backend=ScriptedBackend(), stop_after_chunks=2)
    assert partial == {"complete": False}
    assert not store.is_committed(keys.trajectories) and store.is_committed(keys.chunk(1))
    resumed_backend = ScriptedBackend()
    again = rollout.rollout_shard(quick_run, 1, 0, 2, chunk_size=4, backend=resumed_backend)
    got = rollout.decode_jsonl_gz(store.open_committed(keys.trajectories).get_bytes(rollout.GROUPS))
    assert got == want
    assert len({r["id"] for r in got}) == len(got)
    assert again["generation"]["chunks_generated_now"] == again["generation"]["chunks"] - 2
    assert {k: v for k, v in again.items() if k != "generation"} == {k: v for k, v in full.items() if k != "generation"}
    assert not store.list(keys.work + "/"), "chunk scratch space is removed after the shard commits"
    # a finished shard is not redone
    assert rollout.rollout_shard(quick_run, 1, 0, 2, chunk_size=4, backend=None)["groups"] == full["groups"]


def test_parse_shard():
    from selfemo.generator.rollout import parse_shard

    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_rollout_exports_metrics_and_health(quick_run):
    import urllib.request

    from selfemo.generator import rollout
    from selfemo.telemetry import GeneratorMetrics, MetricsServer

    metrics = GeneratorMetrics()
    server = MetricsServer(metrics.registry, 0, host="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{server.port}"
        try:
            urllib.request.urlopen(base + "/healthz")
            raise AssertionError("not healthy before start")
        except urllib.error.HTTPError as err:
            assert err.code == 503
        server.healthy.set()
        assert urllib.request.urlopen(base + "/healthz").read() == b"ok\n"
        summary = rollout.rollout_shard(quick_run, 1, 0, 1, chunk_size=8, backend=ScriptedBackend(), metrics=metrics)
        text = urllib.request.urlopen(base + "/metrics").read().decode()
    finally:
        server.close()
    prompts_done = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("selfemo_generator_prompts_total{"))
    assert prompts_done == summary["groups"]
    assert f"selfemo_generator_reward_count {float(summary['candidates'])}" in text
    assert f"selfemo_generator_kept_ratio {summary['kept_ratio']}" in text


def test_choice_trie_lists_every_prefix_and_its_next_tokens():
    from selfemo.generator.backends.vllm_backend import choice_trie

    trie = choice_trie([(5,), (7, 1), (7, 2, 9)])
    assert trie == {(): {5, 7}, (7,): {1, 2}, (7, 2): {9}}
    with pytest.raises(ValueError):
        choice_trie([()])


# ---------------------------------------------------------------- gold shards (selfPlay.source: gold)


@pytest.mark.parametrize("corpus", ["meld", "iemocap", "emorynlp"])
def test_gold_answer_parses_back_to_the_gold_labels(corpus):
    from selfemo.generator.gold import gold_answer

    vocab = get_vocab(corpus)
    subsets = [(label,) for label in vocab.labels] + [(), tuple(reversed(vocab.labels[:3])), vocab.labels]
    for gold in subsets:
        text = gold_answer(gold, vocab)
        parsed = parse_labels(text, vocab)
        assert parsed.ok and set(parsed.labels) == set(gold), (gold, text, parsed)
    assert gold_answer(["Happy"], MELD) == "joy"  # a synonym is written as the canonical name evaluation scores
    assert gold_answer(["surprise", "joy"], MELD) == "joy, surprise"
    assert gold_answer([], MELD) == "none"


def test_gold_answer_refuses_labels_the_parser_would_misread():
    from selfemo.data.vocab import vocab_from_labels
    from selfemo.generator.gold import gold_answer

    vocab = vocab_from_labels("mine", ["love or hate", "calm"])
    with pytest.raises(ValueError, match="parses as"):
        gold_answer(["love or hate"], vocab)
    with pytest.raises(ValueError, match="not all in the vocabulary"):
        gold_answer(["joy"], vocab)


def test_gold_shard_commits_gold_answers_of_the_model_shards_prompts_without_a_backend(tmp_path, erc_dir, tiny_model_dir,
                                                                                         monkeypatch):
    from transformers import AutoTokenizer

    from selfemo.generator import backends, rollout
    from selfemo.generator.backends import hf
    from selfemo.generator.backends.base import render_prompt
    from selfemo.generator.gold import gold_answer
    from support.runs import quickstart_run

    def no_backend(*args, **kwargs):
        raise AssertionError("a gold shard must not construct a backend")

    monkeypatch.setattr(backends, "open_backend", no_backend)
    monkeypatch.setattr(hf.TransformersBackend, "__init__", no_backend)
    gold_run = quickstart_run(tmp_path / "gold", erc_dir, model=str(tiny_model_dir),
                              selfPlay={"tasks": ["recognition"], "source": "gold", "promptsPerRound": 12},
                              training={"algorithm": "sft"})
    keys = rollout.ShardKeys(1, 0, 1)
    assert rollout.rollout_shard(gold_run, 1, 0, 1, chunk_size=5, stop_after_chunks=1) == {"complete": False}
    summary = rollout.rollout_shard(gold_run, 1, 0, 1, chunk_size=5)  # resumes after the committed chunk
    assert summary["groups"] == summary["kept"] == 12 and summary["grpo_groups"] == 0
    gen = summary["generation"]
    assert gen["source"] == gen["backend"] == "gold" and gen["tokens"] == 0 and gen["chunks_generated_now"] == 2
    store = rollout.open_run_store(gold_run)
    assert store.is_committed(keys.trajectories) and store.is_committed(keys.selected)
    recs = rollout.read_round_groups(gold_run, 1)

    # the same seeds and prompts a model shard of the same spec asks (a scripted engine answers there)
    model_run = quickstart_run(tmp_path / "model", erc_dir, selfPlay={"tasks": ["recognition"], "promptsPerRound": 12})
    rollout.rollout_shard(model_run, 1, 0, 1, chunk_size=5, backend=ScriptedBackend())
    asked = rollout.read_round_groups(model_run, 1, selected=False)
    assert [(r["id"], r["messages"]) for r in recs] == [(r["id"], r["messages"]) for r in asked]

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    weights = gold_run.spec.rewards.weights
    corpora, vocabs = rollout.load_training_corpora(gold_run)
    dialogues = index_dialogues(corpora)
    for r in recs:
        gold = dialogues[(r["dataset"], r["dialogue_id"])].utterances[r["turn"]].labels
        assert r["source"] == "gold" and r["reference"] == list(gold) and r["reference_kind"] == "gold"
        assert r["kept"] == [0] and r["grpo"] is False
        assert r["prompt"] == render_prompt(tok, r["messages"])
        assert r["prompt_tokens"] == len(tok(r["prompt"], add_special_tokens=False)["input_ids"])
        (c,) = r["candidates"]
        assert c["text"] == gold_answer(gold, vocabs[r["dataset"]]) and c["labels"] == list(gold) and c["parsed"]
        assert c["token_ids"] == tok(c["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert c["logprobs"] == []
        assert c["reward"]["alignment"] == c["reward"]["consistency"] == c["reward"]["format"] == pytest.approx(1.0)
        assert c["reward"]["total"] == pytest.approx(weights.total)


# ---------------------------------------------------------------- prefix-sharing label scoring (layout only)


def test_common_prefix():
    from selfemo.generator.backends.prefix_scoring import common_prefix

    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([7, 8], [7, 8]) == 2


def test_segment_branches_see_the_prompt_and_only_themselves():
    from selfemo.generator.backends.prefix_scoring import build_segment

    # 2 cached tokens, a 3-token prompt tail, choices of 1, 3 and 2 tokens
    seg = build_segment([10, 11, 12], 2, [[20], [30, 31, 32], [40, 41]])
    assert seg.input_ids == [10, 11, 12, 30, 31, 40]  # a choice's last token is never fed
    assert seg.positions == [2, 3, 4, 5, 6, 5]  # branches restart right after the prompt
    a = seg.allowed
    assert a.shape == (6, 8)
    assert a[:, :2].all()  # everyone sees the cache
    assert a[0, 2] and not a[0, 3] and a[2, 2:5].all()  # the prompt tail is causal
    assert a[3, 2:6].all() and not a[3, 6:].any()  # choice 2's first fed token: prompt + itself
    assert a[4, 5:7].all() and not a[4, 7]  # choice 2's second: sees its first, not choice 3
    assert a[5, 2:5].all() and not a[5, 5:7].any() and a[5, 7]  # choice 3: prompt + itself only
    # choice 1 is read at the prompt's last row; choice 2's tokens at rows 2, 3, 4
    assert seg.readout == [[(2, 20)], [(2, 30), (3, 31), (4, 32)], [(2, 40), (5, 41)]]
    with pytest.raises(ValueError, match="at least one token"):
        build_segment([], 2, [[1]])
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        build_segment([1], 0, [[]])
