"""DistributedDataParallel under ``torchrun`` (gloo on CPU, nccl on GPU).

``torchrun --nproc_per_node=N -m datakit train ...`` (or the ``datakit``
script) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_from_env` reads them. Without them everything
runs in one process.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DistContext", "init_from_env", "unwrap"]

logger = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Wrap ``model`` in DDP when distributed (parameters are broadcast from rank 0)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment, if any.

    Parameters
    ----------
    device : torch.device
        The requested device type; on CUDA each process uses ``cuda:LOCAL_RANK``
        and the nccl backend, on CPU gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        owns = True
    logger.info("DDP rank %d/%d (local %d, %s)", rank, world, local, backend)
    return DistContext(rank=rank, world_size=world, local_rank=local, backend=backend, owns_group=owns)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself)."""
    return model.module if hasattr(model, "module") and isinstance(getattr(model, "module"), nn.Module) else model
