"""Evaluate a round's policy on every configured test split.

Recognition on each test utterance with its context, decoded greedily (the
model's free answer, parsed) or label-constrained (the label with the highest
log-likelihood as the whole answer); weighted-F1, accuracy, per-class F1,
confusion matrix and unparseable count per dataset and their mean; expression
consistency (the model writes a reply meant to carry the gold emotion and then
recognises it: mean sIoU of what it heard against what it meant). With
label-constrained decoding also `batch_calibrated`: the same metrics after the
label prior the model gives every utterance alike is divided out
(:func:`selfemo.metrics.batch_calibrate`), which separates a model that tells
emotions apart from one that answers one label everywhere.

Writes `round-{r:03d}/eval/` with `metrics.json` and `predictions.jsonl.gz`
(one line per utterance: id, gold, prediction, raw answer), atomically, so the
metrics can always be recomputed from the predictions.

Round 0 evaluates the base model, which is the same for every run that shares
a model and evaluation settings (the conditions of an experiment, a run
started again under a new name); with `evaluation.reuseBaseline` it is
computed once and shared under `{storage.uri}/baselines/{key}`, the key being
a digest of everything the result depends on (:func:`baseline_key`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfemo.data.model import Dialogue
from selfemo.data.vocab import LabelVocab
from selfemo.generator import prompts
from selfemo.generator.backends.base import Backend, SamplingParams
from selfemo.generator.corpora import file_path, is_remote, load_ref
from selfemo.generator.parsing import parse_labels
from selfemo.generator.rollout import encode_jsonl_gz
from selfemo.metrics import NO_LABEL, batch_calibrate, classification_report
from selfemo.policy import open_run_store, open_shared_store, policy_path, run_layout
from selfemo.progress import Progress
from selfemo.rewards import smoothed_iou_sets
from selfemo.spec import SelfEmoRun

log = logging.getLogger(__name__)
METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl.gz"
BASELINES = "baselines"
_CODE = ("prompts.py", "parsing.py", "backends/prefix_scoring.py")  # what turns a model into a baseline's numbers


@dataclass(frozen=True)
class Item:
    """One test utterance with the dialogue turns up to it."""

    id: str
    turns: tuple[prompts.Turn, ...]
    gold: str
    labels: tuple[str, ...]


def test_items(dialogues: Sequence[Dialogue], max_utterances: int, seed: int) -> list[Item]:
    """Every utterance (in corpus order), or a seeded sample of ``max_utterances``."""
    items = []
    for d in dialogues:
        turns = tuple(prompts.Turn(u.speaker, u.text) for u in d.utterances)
        for t, u in enumerate(d.utterances):
            if u.labels:  # "no emotion" rows carry no single-label gold
                items.append(Item(u.id, turns[: t + 1], u.labels[0], u.labels))
    if max_utterances and len(items) > max_utterances:
        keep = sorted(random.Random(seed).sample(range(len(items)), max_utterances))
        items = [items[i] for i in keep]
    return items


def predict(backend: Backend, items: Sequence[Item], vocab: LabelVocab, *, decoding: str, context_turns: int,
            max_tokens: int, batch_size: int, label: str = "eval") -> list[dict]:
    """A prediction record per item: gold, predicted label (or None) and the raw answer."""
    out = []
    with Progress(label, len(items), unit="utterances") as bar:
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            msgs = [prompts.recognition(list(it.turns), vocab, context_turns) for it in batch]
            if decoding == "constrained":
                scores = backend.score_choices(msgs, list(vocab.labels))
                for it, row in zip(batch, scores):
                    out.append({"id": it.id, "gold": it.gold, "pred": vocab.labels[int(np.argmax(row))], "answer": None,
                                "scores": [round(float(x), 4) for x in row]})
            else:
                groups = backend.generate(msgs, SamplingParams(n=1, temperature=0, max_tokens=max_tokens))
                for it, g in zip(batch, groups):
                    text = g.completions[0].text
                    out.append({"id": it.id, "gold": it.gold, "pred": parse_labels(text, vocab).first, "answer": text})
            bar.update(len(batch))
    return out


def report_from_predictions(predictions: Sequence[dict], vocab: LabelVocab) -> dict:
    """The metrics of one dataset, computed only from its prediction records."""
    index = {label: i for i, label in enumerate(vocab.labels)}
    pred = [index.get(p["pred"], NO_LABEL) if p["pred"] else NO_LABEL for p in predictions]
    return _report_in_points(predictions, pred, vocab.labels)


def _report_in_points(predictions: Sequence[dict], pred: Sequence[int], labels: Sequence[str]) -> dict:
    """The classification report of ``pred`` (label indices) against the records' gold labels, in points."""
    index = {label: i for i, label in enumerate(labels)}
    rep = classification_report([index[p["gold"]] for p in predictions], pred, labels).to_dict()
    rep["weighted_f1"] *= 100.0  # the papers' unit: points
    rep["accuracy"] *= 100.0
    return rep


def calibrated_metrics(predictions: Sequence[dict], labels: dict[str, Sequence[str]]) -> dict | None:
    """`batch_calibrated` of `eval/metrics.json`: per dataset the weighted-F1,
    accuracy and confusion matrix of the batch-calibrated argmax of the stored
    label scores (``labels`` gives each dataset's label order, the scores'
    axis), and their mean; None when the predictions carry no scores (free
    decoding). Computed from the prediction records alone, so `selfemo report`
    can add it to runs evaluated before it existed."""
    by_dataset: dict[str, list[dict]] = {}
    for p in predictions:
        by_dataset.setdefault(p["dataset"], []).append(p)
    if not by_dataset or any("scores" not in p for p in predictions):
        return None
    datasets = {}
    for name, preds in by_dataset.items():
        best = np.argmax(batch_calibrate(np.array([p["scores"] for p in preds])), axis=1)
        rep = _report_in_points(preds, best.tolist(), labels[name])
        datasets[name] = {k: rep[k] for k in ("weighted_f1", "accuracy", "confusion")}  # the rest follows from these
    mean = {k: float(np.mean([d[k] for d in datasets.values()])) for k in ("weighted_f1", "accuracy")}
    return {"datasets": datasets, "mean": mean}


def expression_consistency(backend: Backend, dialogues: Sequence[Dialogue], vocab: LabelVocab, *, samples: int,
                           context_turns: int, max_tokens: int, seed: int, batch_size: int = 64,
                           label: str = "expression") -> dict:
    """Mean sIoU between the emotion the model meant to express and what it
    recognises in its own reply, on ``samples`` test contexts (in batches of
    ``batch_size``, with progress: on a CPU this is minutes per dataset)."""
    spots = [(d, t) for d in dialogues for t in range(1, len(d.utterances)) if d.utterances[t].labels]
    if not spots or samples <= 0:
        return {"n": 0, "mean_siou": None, "exact": None}
    spots = random.Random(seed).sample(spots, min(samples, len(spots)))
    greedy = SamplingParams(n=1, temperature=0, max_tokens=max(max_tokens, 48))
    sets, meant = [], []
    with Progress(label, len(spots), unit="replies") as bar:
        for start in range(0, len(spots), batch_size):
            batch = spots[start : start + batch_size]
            ctxs = [[prompts.Turn(u.speaker, u.text) for u in d.utterances[:t]] for d, t in batch]
            whos = [d.utterances[t].speaker for d, t in batch]
            wants = [d.utterances[t].labels for d, t in batch]
            replies = backend.generate([prompts.expression(c, w, m, context_turns) for c, w, m in zip(ctxs, whos, wants)], greedy)
            texts = [prompts.clean_reply(g.completions[0].text, w) for g, w in zip(replies, whos)]
            heard = backend.generate([prompts.recognition(c + [prompts.Turn(w, x)], vocab, context_turns) for c, w, x in zip(ctxs, whos, texts)],
                                     SamplingParams(n=1, temperature=0, max_tokens=max_tokens))
            sets += [parse_labels(g.completions[0].text, vocab).labels for g in heard]
            meant += wants
            bar.update(len(batch))
    siou = [smoothed_iou_sets(h, m, 0.1) for h, m in zip(sets, meant)]
    return {"n": len(spots), "mean_siou": float(np.mean(siou)), "exact": float(np.mean([set(h) == set(m) for h, m in zip(sets, meant)]))}


def _located(ref: dict) -> dict:
    """A dataset reference with a local URI made absolute: `selfemo run --data-dir`
    rewrites `../shared/erc/meld` to `/work/shared/erc/meld`, the same data."""
    return ref if is_remote(ref["uri"]) else {**ref, "uri": str(file_path(ref["uri"]))}


def baseline_key(run: SelfEmoRun, backend_name: str) -> str:
    """Digest of everything a round-0 evaluation depends on: the base model, the
    evaluation datasets and settings, the prompt settings, the engine and the
    source of the prompt, parsing and label-scoring code. Batch size and the reuse
    switch itself are left out: they do not change the numbers."""
    spec = run.spec
    here = Path(__file__).parent
    doc = {
        "model": spec.model.model_dump(mode="json"),
        "eval": [_located(ref.model_dump(mode="json")) for ref in spec.datasets.eval],
        "evaluation": spec.evaluation.model_dump(mode="json", exclude={"batch_size", "reuse_baseline"}),
        "prompts": {"context_turns": spec.self_play.context_turns, "max_new_tokens": spec.self_play.max_new_tokens},
        "backend": backend_name,
        "code": {name: hashlib.sha256((here / name).read_bytes()).hexdigest() for name in _CODE},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def evaluate_round(run: SelfEmoRun, round_: int, *, backend: Backend | None = None) -> dict:
    """Evaluate π_round (round 0: the base model) and commit `eval/`; returns the metrics."""
    store = open_run_store(run)
    prefix = run_layout(run).eval_prefix(round_)
    if store.is_committed(prefix):
        log.info("round %d: evaluation already committed", round_)
        return json.loads(store.open_committed(prefix).get_bytes(METRICS))
    shared = key = None
    if round_ == 0 and run.spec.evaluation.reuse_baseline:
        from selfemo.generator.backends import resolve_backend_name

        shared = open_shared_store(run, BASELINES)
        key = baseline_key(run, backend.name if backend is not None else resolve_backend_name(run.spec.engine.backend))
        if shared.is_committed(key):
            found = shared.open_committed(key)
            log.info("round 0: reusing the baseline evaluation %s/%s", BASELINES, key)
            files = {name: found.get_bytes(name) for name in (PREDICTIONS, METRICS)}
            _commit_files(store, prefix, files)
            return json.loads(files[METRICS])
    spec = run.spec
    owned = backend is None
    if owned:
        from selfemo.generator.backends import open_backend

        backend = open_backend(spec.engine.backend, policy_path(run, round_ + 1), spec.engine, dtype=spec.model.dtype, seed=spec.evaluation.seed)
    t0 = time.perf_counter()
    metrics: dict = {"round": round_, "decoding": spec.evaluation.decoding, "datasets": {}, "expression_consistency": {}}
    all_predictions = []
    try:
        for ref in spec.datasets.eval:
            dialogues, vocab = load_ref(ref, "test", seed=spec.evaluation.seed, endpoint_url=spec.storage.endpoint or None)
            items = test_items(dialogues, ref.max_utterances, seed=spec.evaluation.seed)
            preds = predict(backend, items, vocab, decoding=spec.evaluation.decoding, context_turns=spec.self_play.context_turns,
                            max_tokens=spec.self_play.max_new_tokens, batch_size=spec.evaluation.batch_size, label=f"eval {ref.name}")
            metrics["datasets"][ref.name] = report_from_predictions(preds, vocab)
            all_predictions += [{"dataset": ref.name, **p} for p in preds]
            metrics["expression_consistency"][ref.name] = expression_consistency(
                backend, dialogues, vocab, samples=spec.evaluation.expression_samples, context_turns=spec.self_play.context_turns,
                max_tokens=spec.self_play.max_new_tokens, seed=spec.evaluation.seed, batch_size=spec.evaluation.batch_size,
                label=f"expression {ref.name}")
    finally:
        if owned:
            backend.close()
    ds = metrics["datasets"].values()
    metrics["mean"] = {"weighted_f1": float(np.mean([d["weighted_f1"] for d in ds])), "accuracy": float(np.mean([d["accuracy"] for d in ds]))}
    ec = [v["mean_siou"] for v in metrics["expression_consistency"].values() if v["mean_siou"] is not None]
    metrics["expression_consistency"]["mean"] = float(np.mean(ec)) if ec else None
    calibrated = calibrated_metrics(all_predictions, {n: d["labels"] for n, d in metrics["datasets"].items()})
    if calibrated is not None:
        metrics["batch_calibrated"] = calibrated
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    if key:
        metrics["baseline_key"] = key
    files = {PREDICTIONS: encode_jsonl_gz(all_predictions), METRICS: json.dumps(metrics, indent=2, sort_keys=True).encode()}
    for target, where in ((store, prefix), (shared, key)):
        if target is not None and not target.is_committed(where):  # another evaluator may have been first
            _commit_files(target, where, files)
    return metrics


def _commit_files(store, prefix: str, files: dict[str, bytes]) -> None:
    """Write ``files`` under ``prefix`` as one atomic commit."""
    with store.commit(prefix) as out:
        for name, data in files.items():
            out.put_bytes(name, data)


def format_table(metrics: dict) -> str:
    """A plain table of the per-dataset scores (points, 0–100)."""
    lines = [f"round {metrics['round']} ({metrics['decoding']} decoding)",
             f"{'dataset':<12}{'n':>7}{'W-F1':>8}{'acc':>8}{'unparsed':>10}{'expr-cons':>11}"]
    for name, d in metrics["datasets"].items():
        ec = metrics["expression_consistency"].get(name, {}).get("mean_siou")
        lines.append(f"{name:<12}{d['n']:>7}{d['weighted_f1']:>8.2f}{d['accuracy']:>8.2f}{d['unparseable']:>10}"
                     f"{'' if ec is None else f'{ec:.3f}':>11}")
    m = metrics["mean"]
    lines.append(f"{'mean':<12}{'':>7}{m['weighted_f1']:>8.2f}{m['accuracy']:>8.2f}")
    return "\n".join(lines)
