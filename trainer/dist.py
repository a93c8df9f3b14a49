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


def train_device(cuda_devices: int, local_rank: int, gpus_per_node: int) -> torch.device:
    """The device this rank trains on: `cuda:LOCAL_RANK`, or the CPU.

    The CPU when the spec gives the training pod no GPUs
    (`resources.trainer.gpusPerNode: 0`, even if the node has some) or torch
    sees none (a CPU machine running a GPU run file locally).  Otherwise local
    rank k owns GPU k of its node, as torchrun and the deepspeed launcher start
    one rank per GPU, each seeing all of the node's GPUs; a local rank without
    a GPU of its own is a launch error, never a silent fall-back to the CPU.
    """
    if gpus_per_node == 0 or cuda_devices == 0:
        return torch.device("cpu")
    if not 0 <= local_rank < cuda_devices:
        raise ValueError(f"LOCAL_RANK {local_rank} has no GPU: {cuda_devices} CUDA device(s) visible "
                         "(CUDA_VISIBLE_DEVICES); start at most one rank per GPU, each seeing all of the node's GPUs")
    return torch.device("cuda", local_rank)


def rank_device(env: DistEnv, gpus_per_node: int) -> torch.device:
    """`train_device` for this process, on this machine."""
    return train_device(torch.cuda.device_count() if torch.cuda.is_available() else 0, env.local_rank, gpus_per_node)


def init_distributed(env: DistEnv, device: torch.device) -> None:
    """Start the process group through DeepSpeed: nccl when ranks train on GPUs, else gloo."""
    if not env.distributed:
        return
    on_gpu = device.type == "cuda"
    if not on_gpu:  # DeepSpeed would pick its CUDA accelerator whenever a GPU is visible
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    if on_gpu:
        torch.cuda.set_device(device)
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")


def set_threads(env: DistEnv) -> int:
    """CPU threads per rank: OMP_NUM_THREADS if set, else the cores shared among local ranks."""
    n = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // env.local_world_size))
    torch.set_num_threads(n)
    return n


def all_reduce_sum(values: list[float], env: DistEnv, device: torch.device | str = "cpu") -> list[float]:
    """Sum a few floats over the ranks (metrics, token counts); identity in one process.

    `device` is the rank's training device: nccl reduces GPU tensors only."""
    if not env.distributed:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_max(value: float, env: DistEnv, device: torch.device | str = "cpu") -> float:
    """The largest of the ranks' `value`s; `value` in one process."""
    if not env.distributed:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def all_gather_objects(obj, env: DistEnv) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank; `[obj]` in one process."""
    if not env.distributed:
        return [obj]
    import torch.distributed as dist

    gathered = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


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
