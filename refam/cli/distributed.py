"""Runs split over processes (torchrun / accelerate): every rank finishes before rank 0 merges."""

from __future__ import annotations

from typing import Any

__all__ = ["barrier"]


def barrier(shard: Any) -> None:
    """Every rank must have finished before rank 0 reads all records."""
    if shard.world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        dist.barrier()
        dist.destroy_process_group()
