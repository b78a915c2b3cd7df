"""What the expression branch itself costs: its own seconds and the bytes it allocates.

Timing a whole forward with and without the capture mixes the branch with machine noise (±10 %
between runs on a CPU), and a process's RSS can fall while the branch runs, so neither says what
the branch costs. A :class:`BranchMeter` handed to a capture session (``meter=``) is entered
around each block's branch work (embedding → record appended, see
:class:`refam.backends.branch.BranchRunner`) and adds up:

- ``seconds``: wall time spent inside the branch (CUDA synchronised on entry and exit so queued
  GPU work is charged to whoever queued it);
- ``allocated_bytes``: bytes of every storage created by a torch op inside the branch;
- ``peak_live_bytes``: the most bytes of those storages alive at one moment (they are followed
  until freed, also after the branch returned, so a kept tensor counts until it is dropped);
- ``kept_bytes``: bytes of branch-created storages still alive when read — after the session
  closed, what the records hold (scores and text mass);
- ``blocks``: how many blocks ran the branch.

Counting storages goes through a dispatch mode, which slows every op, so time and memory are
measured in separate passes: ``BranchMeter(time=True, memory=False)`` for seconds,
``BranchMeter(time=False, memory=True)`` for bytes. Every figure is a sum or maximum of
non-negative amounts, so none can go negative.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["BranchMeter"]


class _StorageCounter(TorchDispatchMode):
    """Sees every aten op's outputs and hands storages it has not seen to ``meter``."""

    def __init__(self, meter: BranchMeter) -> None:
        super().__init__()
        self.meter = meter

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        # Views and in-place ops hand back storage the op was given: not an allocation.
        given = {
            id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if id(storage) not in given:
                    self.meter._track(storage)
        return out


class BranchMeter:
    """Accumulates the expression branch's own cost over every ``measure()`` it is entered in."""

    def __init__(
        self, time: bool = True, memory: bool = False, device: torch.device | str | None = None
    ) -> None:
        self.time = time
        self.memory = memory
        # None: synchronise whenever this process has started CUDA.
        self.device = None if device is None else torch.device(device)
        self.seconds = 0.0
        self.blocks = 0
        self.allocated_bytes = 0
        self.peak_live_bytes = 0
        self._live: dict[int, int] = {}  # id(storage) -> bytes, while the storage lives
        self._live_bytes = 0

    @property
    def kept_bytes(self) -> int:
        """Bytes of branch-created storages alive now (0 when memory is not counted)."""
        return self._live_bytes

    @property
    def live_storages(self) -> int:
        return len(self._live)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "blocks": self.blocks,
            "allocated_bytes": self.allocated_bytes,
            "peak_live_bytes": self.peak_live_bytes,
            "kept_bytes": self.kept_bytes,
        }

    def _sync(self) -> None:
        if self.device is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        elif torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        nbytes = storage.nbytes()
        if key in self._live or nbytes == 0:
            return
        self._live[key] = nbytes
        self._live_bytes += nbytes
        self.allocated_bytes += nbytes
        self.peak_live_bytes = max(self.peak_live_bytes, self._live_bytes)
        # torch keeps one Python object per live storage, so this fires when the storage is freed.
        done = weakref.finalize(storage, self._freed, key)
        done.atexit = False

    def _freed(self, key: int) -> None:
        self._live_bytes -= self._live.pop(key, 0)

    @contextmanager
    def measure(self) -> Iterator[BranchMeter]:
        """One block's branch: timed and/or counted, then added to the totals."""
        counter = _StorageCounter(self) if self.memory else None
        if self.time:
            self._sync()
            start = time.perf_counter()
        try:
            if counter is None:
                yield self
            else:
                with counter:
                    yield self
        finally:
            if self.time:
                self._sync()
                self.seconds += time.perf_counter() - start
            self.blocks += 1
