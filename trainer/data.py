"""Read a round's selected groups from the store, failing loudly and precisely.

Why not just `generator.rollout.read_round_groups`: the trainer is the first
consumer that must trust every field of every record (token ids, rewards),
and a Job that dies on `KeyError: 'token_ids'` tells an operator nothing.
Here a corrupt or empty file, or a malformed record, raises `TrainerError`
naming the store key and the record (line number and group id).
"""
from __future__ import annotations

import gzip
import json
import zlib

from selfemo.generator.rollout import GROUPS
from selfemo.policy import open_run_store, run_layout
from selfemo.spec import SelfEmoRun

EXIT_BAD_INPUT = 2  # bad run file, no or corrupt groups: retrying cannot help
EXIT_NO_SIGNAL = 3  # every group skipped and nothing kept: no checkpoint is written


class TrainerError(Exception):
    """A permanent problem with the trainer's input; `code` is the process exit status."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


def check_group(g, where: str) -> None:
    """The fields the trainer uses, with their types; raises TrainerError naming `where`."""
    if not isinstance(g, dict):
        raise TrainerError(f"{where}: expected a JSON object, got {type(g).__name__}")
    gid = g.get("id", "?")
    if not isinstance(g.get("prompt"), str) or not g["prompt"]:
        raise TrainerError(f"{where} (group {gid}): missing or empty 'prompt'")
    cands = g.get("candidates")
    if not isinstance(cands, list) or not cands:
        raise TrainerError(f"{where} (group {gid}): missing or empty 'candidates'")
    for i, c in enumerate(cands):
        ids = c.get("token_ids") if isinstance(c, dict) else None
        if not isinstance(ids, list) or not all(isinstance(t, int) and t >= 0 for t in ids):
            raise TrainerError(f"{where} (group {gid}): candidate {i} has no valid 'token_ids'")
        total = (c.get("reward") or {}).get("total") if isinstance(c.get("reward"), dict) else None
        if not isinstance(total, (int, float)) or total != total:
            raise TrainerError(f"{where} (group {gid}): candidate {i} has no numeric 'reward.total'")
    for k in g.get("kept") or []:
        if not isinstance(k, int) or not 0 <= k < len(cands):
            raise TrainerError(f"{where} (group {gid}): 'kept' index {k!r} out of range")


def parse_groups(data: bytes, source: str, allow_empty: bool = False) -> list[dict]:
    """Decode one `groups.jsonl.gz`, checking every record."""
    try:
        text = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise TrainerError(f"{source}: not a readable gzip file ({exc})") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            g = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TrainerError(f"{source}: record {n} is not valid JSON ({exc})") from None
        check_group(g, f"{source}: record {n}")
        out.append(g)
    if not out and not allow_empty:
        raise TrainerError(f"{source}: no groups in the file")
    return out


def commit_no_signal(run: SelfEmoRun, round_: int, message: str) -> str:
    """Commit the round's `no-signal/reason.json` (the run layout's
    `no_signal`), the trainer's answer in place of a checkpoint when the
    groups hold nothing to learn from. Both executors read this marker and
    end the run instead of retrying a Job that would fail the same way.
    Returns the marker's URI."""
    layout = run_layout(run)
    prefix = layout.no_signal(round_)
    name = layout.no_signal_reason(round_).rsplit("/", 1)[1]
    store = open_run_store(run)
    with store.commit(prefix) as out:
        out.put_bytes(name, json.dumps({"round": round_, "message": message}, indent=2).encode())
    return store.uri_for(prefix)


def load_groups(run: SelfEmoRun, round_: int) -> list[dict]:
    """Every committed selected shard's groups, in shard order."""
    store = open_run_store(run)
    base = run_layout(run).selected(round_)
    shards = sorted({k.split("/")[2] for k in store.list(base + "/") if k.endswith("/_SUCCESS")})
    if not shards:
        raise TrainerError(f"{store.uri_for(base)}: no committed selected groups for round {round_} "
                           "(has the generator finished this round?)")
    groups = []
    for name in shards:
        prefix = f"{base}/{name}"
        # an empty shard is a legitimate flywheel outcome: nothing passed the filter
        groups += parse_groups(store.open_committed(prefix).get_bytes(GROUPS), store.uri_for(f"{prefix}/{GROUPS}"),
                               allow_empty=True)
    if not groups:
        raise TrainerError(f"{store.uri_for(base)}: round {round_}: no learning signal: the flywheel selected no group "
                           f"in {len(shards)} shard(s) (no candidate reached flywheel.rewardThreshold and no group had "
                           "reward spread); no checkpoint written. Lower flywheel.rewardThreshold or raise selfPlay.groupSize.",
                           EXIT_NO_SIGNAL)
    return groups
