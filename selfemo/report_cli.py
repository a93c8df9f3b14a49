"""`selfemo status` and `selfemo report`: what a run did, read from its directory.

Both read only what the run committed (`status.json` beside the run, each
round's `eval/metrics.json` and `selected/*/summary.json`), so they work on a
finished run, on a running one, and on a copy of a cluster run's store.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    s = sub.add_parser("status", help="print a run's phase, best round and per-round scores")
    s.add_argument("run_dir", metavar="DIR", help="the run's directory, e.g. selfemo-runs/default/quickstart")
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    s.set_defaults(func=_status)
    r = sub.add_parser("report", help="write PNG plots and a Markdown summary of a run, with each round's most frequent answer and batch-calibrated scores per dataset")
    r.add_argument("run_dir", metavar="DIR", help="the run's directory, e.g. selfemo-runs/default/quickstart")
    r.add_argument("-o", "--out", default=None, help="output folder (default: DIR/report)")
    r.set_defaults(func=_report)


def read_run(run_dir: Path):
    """(status, {round: eval metrics}, {round: flywheel totals}) of a local run directory."""
    from selfemo.operator.store_observer import read_store_state
    from selfemo.status import RunStatus
    from selfemo.store import open_store

    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    store = open_store(str(run_dir.resolve()))
    status = RunStatus()
    if store.exists("status.json"):
        status = RunStatus.model_validate(json.loads(store.get_bytes("status.json")))
    state = read_store_state(store)
    if not store.exists("status.json") and not state.committed:
        raise FileNotFoundError(f"{run_dir}: not a run directory (no status.json and no committed output)")
    return status, {r: with_calibration(store, r, m) for r, m in state.eval_metrics.items()}, state.flywheel


def with_calibration(store, round_: int, metrics: dict) -> dict:
    """``metrics`` with `batch_calibrated` computed from the round's committed
    predictions when the evaluation predates it (label-constrained runs only;
    a round without readable predictions is returned as it is)."""
    from selfemo.generator.evaluate import PREDICTIONS, calibrated_metrics
    from selfemo.generator.rollout import decode_jsonl_gz
    from selfemo.store.layout import eval_prefix

    if "batch_calibrated" in metrics or metrics.get("decoding") != "constrained":
        return metrics
    try:
        predictions = decode_jsonl_gz(store.open_committed(eval_prefix(round_)).get_bytes(PREDICTIONS))
    except Exception as exc:  # a report lacks a column rather than failing
        print(f"warning: round {round_}: cannot read its predictions ({exc}); no calibrated scores", file=sys.stderr)
        return metrics
    calibrated = calibrated_metrics(predictions, {n: d["labels"] for n, d in metrics.get("datasets", {}).items()})
    return metrics if calibrated is None else {**metrics, "batch_calibrated": calibrated}


def _status(args) -> int:
    from selfemo.run_cli import format_summary

    try:
        status, _, _ = read_run(Path(args.run_dir))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(status.model_dump_json(by_alias=True, indent=2) if args.json else format_summary(status))
    return 0


def _report(args) -> int:
    run_dir = Path(args.run_dir)
    try:
        status, evals, flywheel = read_run(run_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    written = write_report(status, evals, flywheel, out)
    for path in written:
        print(path)
    return 0


def score_table(evals: dict[int, dict]) -> tuple[list[str], list[tuple[int, dict[str, float], dict[str, float]]]]:
    """Dataset names and, per round, weighted-F1 and accuracy per dataset (and `mean`)."""
    names = sorted({n for m in evals.values() for n in m.get("datasets", {})})
    rows = []
    for r in sorted(evals):
        ds = evals[r].get("datasets", {})
        wf1 = {n: float(ds[n]["weighted_f1"]) for n in names if n in ds}
        acc = {n: float(ds[n]["accuracy"]) for n in names if n in ds}
        mean = evals[r].get("mean") or {}
        if "weighted_f1" in mean:
            wf1["mean"], acc["mean"] = float(mean["weighted_f1"]), float(mean.get("accuracy", float("nan")))
        rows.append((r, wf1, acc))
    return names, rows


def write_report(status, evals: dict[int, dict], flywheel: dict[int, dict], out: Path) -> list[Path]:
    """`wf1.png`, `flywheel.png`, `report.md` and `metrics/round-RRR.json` in ``out``; returns their paths.

    Each round's `eval/metrics.json` is copied beside the plots so a report kept
    in a repository (docs/results/) stays traceable to the exact numbers after
    the run directory is gone: local stores are not kept between machines.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    names, rows = score_table(evals)
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in [*names, "mean"]:
        pts = [(r, wf1[n]) for r, wf1, _ in rows if n in wf1]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=n, linewidth=2.5 if n == "mean" else 1.5)
    ax.set(xlabel="round (0 = base model)", ylabel="weighted-F1 (points)", title="Evaluation per round")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend()
        ax.set_xticks([r for r, _, _ in rows])
    fig.tight_layout()
    written.append(out / "wf1.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fly = sorted(flywheel)
    fig, ax = plt.subplots(figsize=(6, 4))
    if fly:
        ax.plot(fly, [flywheel[r]["mean_reward"] or 0.0 for r in fly], marker="o", label="mean reward")
        ax.plot(fly, [flywheel[r]["kept"] / flywheel[r]["candidates"] if flywheel[r]["candidates"] else 0.0 for r in fly],
                marker="s", label="kept ratio")
        ax.set_xticks(fly)
        ax.legend()
    ax.set(xlabel="round", title="Flywheel per round")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out / "flywheel.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    (out / "metrics").mkdir(exist_ok=True)
    for r in sorted(evals):
        written.append(out / "metrics" / f"round-{r:03d}.json")
        written[-1].write_text(json.dumps(evals[r], indent=1, sort_keys=True) + "\n")

    written.append(out / "report.md")
    written[-1].write_text(markdown(status, names, rows, flywheel) + predictions_markdown(evals, names)
                          + calibrated_markdown(evals, names))
    return written


def markdown(status, names: list[str], rows, flywheel: dict[int, dict]) -> str:
    best = "-" if status.best_weighted_f1 is None else f"{status.best_weighted_f1:.2f}"
    lines = ["# Run report", "", f"Phase **{status.phase.value}**, best round {status.best_round} "
             f"(mean weighted-F1 {best}).", ""]
    if status.message:
        lines += [status.message, ""]
    cols = [*names, "mean"]
    lines += ["| round | " + " | ".join(f"{c} W-F1 / acc" for c in cols) + " | generated | kept | mean reward |",
              "|---:|" + "---:|" * (len(cols) + 3)]
    for r, wf1, acc in rows:
        cells = [f"{wf1[c]:.2f} / {acc[c]:.2f}" if c in wf1 else "-" for c in cols]
        f = flywheel.get(r, {})
        reward = "-" if f.get("mean_reward") is None else f"{f['mean_reward']:.3f}"
        lines.append(f"| {r} | " + " | ".join(cells) + f" | {f.get('candidates', '-')} | {f.get('kept', '-')} | {reward} |")
    lines += ["", "Each round's evaluation, as the run committed it: `metrics/round-RRR.json`.",
              "", "![weighted-F1 per round](wf1.png)", "", "![flywheel per round](flywheel.png)", ""]
    return "\n".join(lines)


def predictions_markdown(evals: dict[int, dict], names: list[str]) -> str:
    """Per round and dataset, the label the evaluation answered most often and
    its share, with a collapse (one label for ≥ COLLAPSE_SHARE of a corpus) in
    bold: next to weighted-F1 it tells a model that recognises emotions from
    one that answers a label prior (issue 7's runs on the built-in model)."""
    from selfemo.metrics import COLLAPSE_SHARE, most_predicted

    lines = ["", "## Most frequent answer", "",
             f"Per round and dataset: the label the evaluation gave most often, and to what share of the "
             f"utterances. **collapsed** marks one label for at least {COLLAPSE_SHARE:.0%} of a dataset: its "
             "weighted-F1 then says which label the model settled on (the majority label scores its "
             "frequency, a rare one almost nothing), not how well it recognises emotions.", "",
             "| round | " + " | ".join(names) + " |", "|---:|" + "---|" * len(names)]
    for r in sorted(evals):
        ds = evals[r].get("datasets", {})
        cells = []
        for n in names:
            if "confusion" not in ds.get(n, {}):
                cells.append("-")
                continue
            top = most_predicted(ds[n])
            cells.append(f"{top.label} {top.count}/{top.n} ({top.share:.0%})" + (", **collapsed**" if top.collapsed else ""))
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def calibrated_markdown(evals: dict[int, dict], names: list[str]) -> str:
    """Per round, weighted-F1 / accuracy after batch calibration (empty when no
    round has it, e.g. free decoding): beside the raw scores it tells what a
    model learnt about telling emotions apart from the label prior it learnt."""
    if not any("batch_calibrated" in m for m in evals.values()):
        return ""
    cols = [*names, "mean"]
    lines = ["", "## Batch-calibrated scores", "",
             "The same label scores with the label prior the model gives every utterance alike divided out "
             "(each label's mean probability over the dataset; no gold label used; "
             "`selfemo.metrics.batch_calibrate`). A model that only learnt a prior scores here what the "
             "base model does; one that learnt to tell emotions apart scores more.", "",
             "| round | " + " | ".join(f"{c} W-F1 / acc" for c in cols) + " |", "|---:|" + "---:|" * len(cols)]
    for r in sorted(evals):
        cal = evals[r].get("batch_calibrated")
        if cal is None:
            lines.append(f"| {r} | " + " | ".join("-" for _ in cols) + " |")
            continue
        scores = {**cal["datasets"], "mean": cal["mean"]}
        lines.append(f"| {r} | " + " | ".join(
            f"{scores[c]['weighted_f1']:.2f} / {scores[c]['accuracy']:.2f}" if c in scores else "-" for c in cols) + " |")
    return "\n".join(lines) + "\n"
