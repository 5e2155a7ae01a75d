"""The processes of a training run: threads, device, seeds, the torchrun process group (gloo on CPU, nccl on GPU),
collectives, and wrapping the policy for DDP or FSDP.

A single process (WORLD_SIZE unset or 1) is the same code path with `DistInfo()`: every collective here is then a
no-op and the policy is trained unwrapped.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from etc_training.recipe.config import RecipeError, RunConfig


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: Any = "cpu"
    initialized: bool = False
    strategy: str = "none"  # none | ddp | fsdp

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        """Parameters are sharded across the processes."""
        return self.initialized and self.world > 1 and self.strategy == "fsdp"

    @property
    def ddp(self) -> bool:
        """Every process holds a replica; gradients are all-reduced."""
        return self.initialized and self.world > 1 and self.strategy != "fsdp"


# ---------------------------------------------------------------------------------------------- this process
def set_threads(n: int) -> None:
    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RecipeError("run.device=cuda but no CUDA device is available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise RecipeError(f"run.device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------- process group
def setup_distributed(run: RunConfig) -> DistInfo:
    """Reads torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK); initialises the process group (gloo on CPU,
    nccl on GPU) when WORLD_SIZE > 1."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(run.device, local)
    if world <= 1:
        return DistInfo(0, 1, 0, device, False, "none")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, device, True, run.distributed)


def teardown_distributed(d: DistInfo) -> None:
    """Destroys the process group that setup_distributed initialised (nothing in a single process)."""
    if d.initialized:
        import torch.distributed as dist

        dist.destroy_process_group()


def barrier(d: DistInfo) -> None:
    if d.initialized:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(d: DistInfo, obj: Any) -> Any:
    if not d.initialized:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---------------------------------------------------------------------------------------------- DDP / FSDP
def wrap_model(policy: torch.nn.Module, d: DistInfo, find_unused_parameters: bool = False) -> torch.nn.Module:
    """The module to run forward/backward on: `policy` itself in one process and under FSDP (sharded in place,
    one FSDP unit per transformer block, the rest in the root unit), a DistributedDataParallel wrapper under DDP."""
    if not d.initialized or d.world == 1:
        return policy
    if d.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # one FSDP unit per transformer block (vision encoder and text decoder), the rest in the root unit
        layers = [m for m in policy.backbone.modules()
                  if m.__class__.__name__.endswith(("DecoderLayer", "EncoderLayer"))]
        for layer in layers:
            fully_shard(layer)
        fully_shard(policy)
        return policy
    from torch.nn.parallel import DistributedDataParallel as DDP

    dev = [d.device.index] if d.device.type == "cuda" else None
    return DDP(policy, device_ids=dev, find_unused_parameters=find_unused_parameters)


@contextlib.contextmanager
def no_sync(model: torch.nn.Module, d: DistInfo, skip: bool):
    """Inside, a backward pass accumulates gradients locally without synchronising them (when `skip`): the
    last backward pass of an optimizer step then synchronises the sum."""
    if not skip:
        yield
        return
    if d.ddp:
        with model.no_sync():
            yield
    elif d.fsdp:
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield
