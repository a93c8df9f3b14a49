"""Corpus statistics: how many dialogues, utterances and labels each split has.

Pure functions over dialogues, so the CLI, tests and benchmarks agree on the
numbers and the table is just one way of printing them.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from selfemo.data.model import SPLITS, Dialogue
from selfemo.data.vocab import LabelVocab


def compute_stats(dialogues: Iterable[Dialogue], vocab: LabelVocab | None = None) -> dict[str, dict]:
    """`{split: {"dialogues", "utterances", "labels": {label: count}, "unlabelled"}}`.

    Splits come in train, dev, test order, only those present. Labels follow
    the vocabulary's order (with zero counts) when one is given, else order of
    first appearance. A multi-label utterance counts once per label, and
    `unlabelled` counts utterances with no label, so the label counts add up
    to the utterances exactly when every utterance has one label.
    """
    dialogue_counts: Counter[str] = Counter()
    utterance_counts: Counter[str] = Counter()
    unlabelled: Counter[str] = Counter()
    labels: dict[str, Counter[str]] = {}
    for dialogue in dialogues:
        dialogue_counts[dialogue.split] += 1
        utterance_counts[dialogue.split] += len(dialogue.utterances)
        per_label = labels.setdefault(dialogue.split, Counter())
        for utterance in dialogue.utterances:
            per_label.update(utterance.labels)
            unlabelled[dialogue.split] += not utterance.labels
    order = list(vocab.labels) if vocab is not None else []
    for counts in labels.values():
        order += [label for label in counts if label not in order]
    return {
        split: {
            "dialogues": dialogue_counts[split],
            "utterances": utterance_counts[split],
            "labels": {label: labels[split][label] for label in order},
            "unlabelled": unlabelled[split],
        }
        for split in SPLITS
        if split in dialogue_counts
    }


def format_table(stats: dict[str, dict]) -> str:
    """A plain-text table, one column per split and one row per count.

    Rows rather than columns for labels, so corpora with many labels stay readable.
    """
    splits = list(stats)
    if not splits:
        return "no dialogues"
    labels = list(next(iter(stats.values()))["labels"])
    rows = [("", *splits)]
    rows += [(name, *(str(stats[s][name]) for s in splits)) for name in ("dialogues", "utterances")]
    rows += [(f"  {label}", *(str(stats[s]["labels"][label]) for s in splits)) for label in labels]
    if any(stats[s]["unlabelled"] for s in splits):
        rows.append(("  (no label)", *(str(stats[s]["unlabelled"]) for s in splits)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows
    )
