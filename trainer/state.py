"""Training-state checkpoints in the store, so a killed Job resumes mid-round.

Key: `round-RRR/train-state/step-SSSSSS/` (one atomic commit each; the newest
committed one wins, older ones are deleted once a newer one is committed).
- one process: `state.pt` = trainable weights (fp32 masters), AdamW state,
  scheduler, step, RNG states and the per-step metrics so far;
- DeepSpeed: the engine's own checkpoint files (`engine.save_checkpoint`; with
  ZeRO each rank holds a shard of the optimizer state), gathered to rank 0 over
  the process group, because only rank 0 writes the store and ranks on other
  nodes share no file system.  Every rank reads the committed files back.
"""
from __future__ import annotations

import logging
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from selfemo.trainer.dist import DistEnv, barrier

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
_STEP = re.compile(r"^step-(\d{6})$")


def state_root(round_prefix: str) -> str:
    return f"{round_prefix}/train-state"


def state_prefix(round_prefix: str, step: int) -> str:
    return f"{state_root(round_prefix)}/step-{step:06d}"


def committed_steps(store, round_prefix: str) -> list[int]:
    """Steps of the committed training states of a round, ascending."""
    root = state_root(round_prefix)
    steps = set()
    for key in store.list(root + "/"):
        parts = key[len(root) + 1:].split("/")
        m = _STEP.match(parts[0])
        if m and parts[-1] == "_SUCCESS" and len(parts) == 2:
            steps.add(int(m.group(1)))
    return sorted(steps)


def rng_state() -> dict:
    """Every generator the trainer may draw from (LoRA dropout on a GPU uses CUDA's)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for i, s in enumerate(state.get("cuda", [])[:torch.cuda.device_count()]):
        torch.cuda.set_rng_state(s, i)


def _prune(store, round_prefix: str, keep: int) -> None:
    for s in committed_steps(store, round_prefix):
        if s != keep:
            store.delete(state_prefix(round_prefix, s))


def save_plain(store, round_prefix: str, step: int, payload: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="selfemo-state-") as tmp:
        path = Path(tmp, STATE_FILE)
        torch.save({**payload, "step": step, "rng": rng_state()}, path)
        with store.commit(state_prefix(round_prefix, step)) as out:
            out.put_file(STATE_FILE, path)
    _prune(store, round_prefix, step)
    log.info("training state at step %d committed to %s", step, store.uri_for(state_prefix(round_prefix, step)))


def load_plain(store, round_prefix: str, step: int) -> dict:
    """The state, its tensors on the CPU; the RNG states are set.

    On the CPU whatever device saved it (a GPU-saved state loads on any
    node; RNG states must be CPU tensors), and without a second copy of the
    masters and AdamW moments on the GPU: `MasterWeights.load_state_dict`
    copies into the masters and the optimizer moves its state to its
    parameters' device."""
    with tempfile.TemporaryDirectory(prefix="selfemo-state-") as tmp:
        path = store.open_committed(state_prefix(round_prefix, step)).get_file(STATE_FILE, Path(tmp, STATE_FILE))
        state = torch.load(path, map_location="cpu", weights_only=False)
    set_rng_state(state["rng"])
    return state


def save_deepspeed(engine, store, round_prefix: str, step: int, client_state: dict, env: DistEnv) -> None:
    """All ranks call this; rank 0 commits the union of every rank's files."""
    import torch.distributed as dist

    tag = f"step-{step:06d}"
    with tempfile.TemporaryDirectory(prefix=f"selfemo-ds-{env.rank}-") as tmp:
        engine.save_checkpoint(tmp, tag=tag, client_state=client_state, save_latest=False)
        files = {p.relative_to(tmp).as_posix(): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
    gathered = [None] * env.world_size if env.is_main else None
    dist.gather_object(files, gathered, dst=0)
    if env.is_main:
        with store.commit(state_prefix(round_prefix, step)) as out:
            for rank_files in gathered:
                for name, data in sorted(rank_files.items()):
                    out.put_bytes(name, data)
        _prune(store, round_prefix, step)
        log.info("training state at step %d committed (%d ranks)", step, env.world_size)
    barrier(env)


def load_deepspeed(engine, store, round_prefix: str, step: int) -> dict:
    """Every rank downloads the committed state and loads its part; returns the client state."""
    with tempfile.TemporaryDirectory(prefix="selfemo-ds-") as tmp:
        store.open_committed(state_prefix(round_prefix, step)).download(tmp)
        path, client = engine.load_checkpoint(tmp, tag=f"step-{step:06d}")
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load the training state of step {step}")
    return client
