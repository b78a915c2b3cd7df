"""Running the expression branch across a pass, shared by every backend (diffusers and ComfyUI).

A backend finds, per block, the image q/k/v and the block's conditioning vector; a
:class:`BranchRunner` does the rest: the expression stream from block to block, the records of
the selected blocks, progress and the early stop after the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from refam.attention import (
    BlockCapture,
    CaptureComplete,
    ExpressionLayout,
    ImageAttention,
    JointBlockAdapter,
    expression_branch,
)

__all__ = ["BlockProgress", "BranchRunner", "HookSession", "installed"]

BlockProgress = Callable[[int, int], None]


class HookSession(Protocol):
    def install(self) -> list[Any]: ...

    def release(self) -> None: ...


@contextmanager
def installed(session: HookSession) -> Iterator[HookSession]:
    """Hooks in for the block, always removed after it (also when the forward raises)."""
    handles: list[Any] = []
    try:
        handles = session.install()
        yield session
    finally:
        for handle in handles:
            handle.remove()
        session.release()


@dataclass
class BranchRunner:
    """The expression stream across blocks of one pass and the records it leaves."""

    adapters: Sequence[JointBlockAdapter]
    names: Sequence[str]
    selected: set[int]
    layout: ExpressionLayout
    stop_after_last: bool = False
    progress: BlockProgress | None = None
    meter: Any = None  # a refam.backends.branch_cost.BranchMeter: the branch's own time and bytes
    records: list[BlockCapture] = field(default_factory=list)
    expr: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    done: int = 0

    @property
    def last(self) -> int:
        return max(self.selected)

    def start_pass(self, rows: torch.Tensor | None) -> None:
        self.expr, self.rows, self.done = None, rows, 0

    def release(self) -> None:
        self.expr, self.rows = None, None

    @torch.no_grad()
    def run(
        self,
        index: int,
        image: Callable[[], ImageAttention],
        vec: torch.Tensor,
        embed: Callable[[int], torch.Tensor],
    ) -> None:
        """One block of the branch. ``image()`` reads the block's image attention tensors (called
        here, so that a meter charges the reading to the branch); ``embed(batch)`` maps the text
        encoder's embeddings into the text stream."""
        with self.meter.measure() if self.meter is not None else nullcontext():
            self._run(index, image(), vec, embed)
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.last + 1)
        if self.stop_after_last and index == self.last:
            raise CaptureComplete

    def _run(
        self, index: int, image: ImageAttention, vec: torch.Tensor, embed: Callable[[int], torch.Tensor]
    ) -> None:
        if self.rows is not None:
            rows = self.rows.to(vec.device)
            image = image.rows(rows)
            vec = vec[rows]
        if self.expr is None:
            self.expr = embed(image.q.shape[0])
        out = expression_branch(self.adapters[index], self.expr, vec, image, self.layout)
        self.expr = out.expr
        if index in self.selected:
            self.records.append(
                BlockCapture(
                    name=self.names[index],
                    index=index,
                    scores={k: v.to("cpu", torch.float32) for k, v in out.scores.items()},
                    text_mass=out.text_mass.to("cpu", torch.float32),
                    text_attention=out.text_attention.to("cpu", torch.float32),
                )
            )
