"""A stand-in for the component entry points in fast executor tests.

Invoked as `python fake_child.py -m selfemo.<component> … --run-config F
--round R [--shard I/N]`, it commits the output the real component commits
(with made-up numbers: eval W-F1 = 10 + round) and nothing else, so the
executor, the state machine and the store markers are tested in seconds.
`FAKE_FAIL=<kind>:<times>` makes that kind exit 3 its first <times> attempts
(counted in files under `FAKE_STATE`).
"""
import argparse
import json
import os
import sys
from pathlib import Path

from selfemo.policy import open_run_store
from selfemo.runfile import load_run


def main(argv):
    assert argv[0] == "-m", argv
    module, rest = argv[1], argv[2:]
    kind = {"selfemo.trainer": "trainer"}.get(module) or ("generator" if rest[0] == "rollout" else "evaluator")
    if module == "selfemo.generator":
        rest = rest[1:]
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-config")
    ap.add_argument("--round", type=int)
    ap.add_argument("--shard", default="0/1")
    args = ap.parse_args(rest)
    print(f"fake {kind} round {args.round}", flush=True)
    fail = os.environ.get("FAKE_FAIL", "")
    if fail.startswith(kind + ":"):
        counter = Path(os.environ["FAKE_STATE"]) / f"{kind}-{args.round}"
        seen = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(seen + 1))
        if seen < int(fail.split(":")[1]):
            print(f"boom: simulated {kind} crash", flush=True)
            return 3
    run = load_run(args.run_config)
    store = open_run_store(run)
    r = args.round
    if kind == "generator":
        i, n = (int(x) for x in args.shard.split("/"))
        with store.commit(f"round-{r:03d}/selected/shard-{i:05d}-of-{n:05d}") as out:
            out.put_bytes("summary.json", json.dumps({"groups": 2, "candidates": 8, "kept": 3, "mean_reward": 0.5}).encode())
    elif kind == "trainer":
        with store.commit(f"round-{r:03d}/checkpoint") as out:
            out.put_bytes("model.safetensors", b"weights")
    else:
        score = 10.0 + r
        metrics = {"round": r, "datasets": {"meld": {"weighted_f1": score, "accuracy": score}},
                   "mean": {"weighted_f1": score, "accuracy": score}}
        with store.commit(f"round-{r:03d}/eval") as out:
            out.put_bytes("metrics.json", json.dumps(metrics).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
