"""Where this process stands among the ranks, from the launcher's environment.

torchrun, the `deepspeed` launcher and the Kubernetes Indexed Job all give
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; one process
without them is world size 1 and needs no process group at all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    e = os.environ
    world = int(e.get("WORLD_SIZE", "1"))
    return DistEnv(int(e.get("RANK", "0")), world, int(e.get("LOCAL_RANK", "0")),
                   int(e.get("LOCAL_WORLD_SIZE", str(world))))


def init_distributed(env: DistEnv) -> None:
    """Start the process group through DeepSpeed (gloo on CPU, nccl on GPUs)."""
    if not env.distributed:
        return
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
    deepspeed.init_distributed(dist_backend=backend)


def set_threads(env: DistEnv) -> int:
    """CPU threads per rank: OMP_NUM_THREADS if set, else the cores shared among local ranks."""
    n = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // env.local_world_size))
    torch.set_num_threads(n)
    return n


def all_reduce_sum(values: list[float], env: DistEnv) -> list[float]:
    """Sum a few floats over the ranks (metrics, token counts); identity in one process."""
    if not env.distributed:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        import torch.distributed as dist

        dist.barrier()


def shutdown(env: DistEnv) -> None:
    """End a rank cleanly (without this, gloo sometimes aborts at exit)."""
    import torch.distributed as dist

    if env.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
