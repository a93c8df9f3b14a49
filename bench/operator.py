"""The operator at scale: N concurrent SelfEmoRuns against the Kubernetes API emulator.

    .venv/bin/python bench/operator.py [--runs 200] [--rounds 2] [--shards 2] [--interval 10]

1. Starts the kmock API emulator (tests/support/kube.py) in this process
   with the SelfEmoRun CRD, and the real operator as a subprocess
   (`python -m selfemo.operator --kubeconfig …`), so its peak RSS (VmHWM)
   and CPU time are its own.
2. Starts the test kubelet (tests/support/kubelet.py): every Job and
   Deployment the operator creates is completed at once — store markers
   committed into a `file://` store under a temp dir, Jobs marked Complete.
3. Creates N runs at once (the quickstart manifest with `--rounds` rounds
   and `--shards` generator shards) and waits until all are Succeeded.

Prints: wall time from the first create until the last run's status says
Succeeded; the operator's API reads (gets and lists; watch requests
apart) and writes (POST/PUT/PATCH/DELETE it sent, as
logged by the emulator) per round per run, rounds counting the baseline
evaluation (round 0); latency from a child's completion (the kubelet's
clock, after its last write) to the status patch that moves that run to the
next phase (trainer → Evaluating, evaluator → Generating/Succeeded, the last
shard of a round → Training), p50/p95/max; the operator's peak RSS; and
each goal (≤ 20 writes per round per run, p95 ≤ 2 s, RSS ≤ 300 MB) met or not.
"""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.kube import KubeServer  # noqa: E402
from support.kubelet import NS, Kubelet, run_doc, runs_path  # noqa: E402

GOAL_WRITES, GOAL_P95, GOAL_RSS_MB = 20.0, 2.0, 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in lines if ":" in line)


def kib(value: str) -> float:
    return float(value.split()[0]) if value else 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def next_phase(kind: str, round_: int) -> tuple[tuple[str, int | None], ...]:
    """The (phase, round) transitions that end the step of a ``kind`` child of
    ``round_`` (None: any round): trainer → Evaluating, evaluator → the next
    round's Generating or Succeeded, the last shard of a round → Training."""
    if kind == "trainer":
        return (("Evaluating", round_),)
    if kind == "evaluator":
        return (("Generating", round_ + 1), ("Succeeded", None))
    return (("Training", round_),)


def phase_latencies(completions, writes) -> tuple[list[tuple[float, object]], list[tuple], int]:
    """For each completion that ends a step, seconds until the operator's
    status patch moving that run on, with the completion; the completions
    never followed; and how many were followed before the kubelet's last
    write (the operator saw the commit first: counted as 0 s).

    Status patches are merge patches: `round` appears only when it changes,
    so each run's patches are replayed to know the round of each transition.
    """
    transitions: dict[str, list[tuple[float, str, int]]] = collections.defaultdict(list)
    current: dict[str, int] = {}
    for w in writes:
        if w.by_tests or w.resource != "selfemoruns" or w.subresource != "status":
            continue
        if w.round is not None:
            current[w.name] = w.round
        if w.phase:
            transitions[w.name].append((w.time, w.phase, current.get(w.name, 0)))
    # Of a round's shards, only the one completed last ends the Generating phase.
    last_shard: dict[tuple[str, int], object] = {}
    for c in completions:
        if c.kind == "generator" and ((c.run, c.round) not in last_shard or c.time > last_shard[(c.run, c.round)].time):
            last_shard[(c.run, c.round)] = c
    enders = [c for c in completions if c.kind != "generator"] + list(last_shard.values())
    latencies, missing, ahead = [], [], 0
    for c in enders:
        wanted = next_phase(c.kind, c.round)
        nxt = next((t for t, phase, r in transitions[c.run]
                    if any(phase == p and (want_r is None or r == want_r) for p, want_r in wanted)), None)
        if nxt is None:
            missing.append((c.run, c.child))
            continue
        ahead += nxt < c.time
        latencies.append((max(0.0, nxt - c.time), c))
    return latencies, missing, ahead


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--interval", type=float, default=10.0, help="the operator's --interval (its default: 10 s)")
    p.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (operator log, store)")
    args = p.parse_args(argv)

    from selfemo.crd import crd

    tmp = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    server = KubeServer([crd()]).start()
    kube = server.client()
    kubeconfig = server.kubeconfig(tmp / "kubeconfig")
    kubelet = Kubelet(server.client()).start()
    port = free_port()
    log_path = tmp / "operator.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        operator = subprocess.Popen(
            [sys.executable, "-m", "selfemo.operator", "--kubeconfig", str(kubeconfig), "-n", NS,
             "--metrics-port", str(port), "--interval", str(args.interval)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    if resp.read() == b"ok\n":
                        break
            except OSError:
                pass
            if operator.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text()[-3000:], file=sys.stderr)
                raise SystemExit("the operator did not become healthy")
            time.sleep(0.2)
        rss_idle = kib(proc_status(operator.pid).get("VmRSS", ""))
        cpu_idle = cpu_seconds(operator.pid)

        names = [f"bench-{i:04d}" for i in range(args.runs)]
        docs = [run_doc(n, tmp / "store", flywheel={"rounds": args.rounds},
                        resources={"generator": {"shards": args.shards, "gpus": 0}}) for n in names]
        start = time.time()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda d: kube.create(runs_path(), d), docs))
        created = time.time()
        print(f"created {args.runs} runs in {created - start:.1f} s; waiting for Succeeded …", flush=True)

        phases: collections.Counter = collections.Counter()
        last_report = 0.0
        while True:
            phases = collections.Counter(((r.get("status") or {}).get("phase") or "Pending") for r in kube.list(runs_path()))
            if phases.get("Succeeded", 0) == args.runs or sum(phases[p] for p in ("Succeeded", "Failed")) == args.runs:
                break
            if time.time() - start > args.timeout:
                print(f"TIMEOUT after {args.timeout:g} s: {dict(phases)}", flush=True)
                break
            if time.time() - last_report > 15:
                last_report = time.time()
                print(f"  t={time.time() - start:6.1f}s {dict(sorted(phases.items()))}", flush=True)
            time.sleep(2.0)  # a list of every run is heavy for the emulator: it shares the cores
        status = proc_status(operator.pid)
        cpu = cpu_seconds(operator.pid) - cpu_idle
    finally:
        if operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            try:
                operator.wait(30)
            except subprocess.TimeoutExpired:
                operator.kill()
        kubelet.stop()

    writes = list(server.emulator.writes)
    reads = collections.Counter({(res, action): n for (res, action, by_tests), n in server.emulator.reads.items()
                                 if not by_tests})
    server.stop()
    ops = [w for w in writes if not w.by_tests]
    succeeded = [w.time for w in ops if w.resource == "selfemoruns" and w.phase == "Succeeded"]
    wall = (max(succeeded) - start) if len(succeeded) >= phases.get("Succeeded", 0) and succeeded else float("nan")
    per_round_run = len(ops) / (args.runs * (args.rounds + 1))
    followed, missing, ahead = phase_latencies(kubelet.completions, writes)
    latencies = [seconds for seconds, _c in followed]
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    peak_mb = kib(status.get("VmHWM", "")) / 1024
    kinds = collections.Counter(f"{w.method} {w.resource}{'/' + w.subresource if w.subresource else ''}" for w in ops)

    print()
    print(f"runs {args.runs}, rounds {args.rounds} (+ baseline eval), shards {args.shards}, operator --interval {args.interval:g}")
    print(f"phases at the end: {dict(sorted(phases.items()))}; kubelet completions {len(kubelet.completions)}, "
          f"kubelet errors {len(kubelet.errors)}")
    print(f"wall time until all Succeeded: {wall:.1f} s")
    print(f"operator API writes: {len(ops)} = {per_round_run:.1f} per round per run")
    for kind, n in kinds.most_common():
        print(f"    {kind:40s} {n:6d}  ({n / (args.runs * (args.rounds + 1)):.2f} per round per run)")
    refused = collections.Counter(f"{w.method} {w.resource} -> {w.status}" for w in ops if not 200 <= (w.status or 0) < 300)
    if refused:
        print("    answered non-2xx: " + ", ".join(f"{what} x{n}" for what, n in refused.most_common()))
    rounds_runs = args.runs * (args.rounds + 1)
    gets_lists = sum(n for (_res, action), n in reads.items() if action != "watch")
    print(f"operator API reads (get/list; watches apart): {gets_lists} = {gets_lists / rounds_runs:.1f} per round per run")
    for (res, action), n in reads.most_common():
        print(f"    {action + ' ' + res:40s} {n:6d}  ({n / rounds_runs:.2f} per round per run)")
    print(f"child completion -> next phase: n={len(latencies)} p50 {p50:.2f} s, p95 {p95:.2f} s, "
          f"max {max(latencies, default=float('nan')):.2f} s, mean {statistics.fmean(latencies) if latencies else float('nan'):.2f} s"
          + (f"; {ahead} moved on before the kubelet's last write (0 s)" if ahead else "")
          + (f"; {len(missing)} never followed" if missing else ""))
    slowest = sorted(followed, key=lambda f: f[0], reverse=True)[:3]
    print("    slowest: " + ", ".join(f"{c.child} {seconds:.2f} s" for seconds, c in slowest))
    if missing:
        print("    never followed: " + ", ".join(child for _run, child in missing[:5]))
    print(f"operator peak RSS (VmHWM) {peak_mb:.0f} MB (idle {rss_idle / 1024:.0f} MB); CPU {cpu:.0f} s during the run")
    goals = [
        (f"writes per round per run <= {GOAL_WRITES:g}", per_round_run <= GOAL_WRITES),
        (f"p95 completion -> next phase <= {GOAL_P95:g} s", p95 <= GOAL_P95),
        (f"peak RSS <= {GOAL_RSS_MB:g} MB", peak_mb <= GOAL_RSS_MB),
        ("all runs Succeeded", phases.get("Succeeded", 0) == args.runs),
    ]
    for what, ok in goals:
        print(f"goal {what}: {'met' if ok else 'NOT met'}")
    if kubelet.errors:
        print("kubelet errors (first 5):", *kubelet.errors[:5], sep="\n  ")
    if args.keep:
        print(f"kept {tmp} (operator.log, store/)")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
