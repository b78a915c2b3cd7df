"""The expression branch on any diffusers transformer an architecture module describes.

The model is never modified: the capture lives in forward hooks that :func:`capture_attention`
installs and always removes, also when the forward raises. A block's image queries, keys and
values are read from the outputs of the modules its architecture names (the attention's QK-norms
and value projection), its attention output from the input of its output projection (the tensors
exist anyway, so reading them costs nothing); the
architecture turns them into the image tokens' attention tensors.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refam.architectures import Architecture, diffusers_architecture
from refam.attention import CaptureComplete, ExpressionLayout, ImageAttention, resolve_capture_blocks
from refam.backends.branch import BranchRunner, installed

__all__ = ["DiffusersCapture", "capture_attention", "run_until_captured"]


@dataclass
class _Slots:
    """What a block's q/k/v modules returned during its own forward; open only while it runs, so
    the branch's calls of the same modules (FLUX single blocks share them) never land here."""

    open: bool = False
    q: torch.Tensor | None = None
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    o: torch.Tensor | None = None  # the input of the output module (the attention's output)

    def take(self) -> tuple[Any, Any, Any, Any]:
        out = (self.q, self.k, self.v, self.o)
        self.open, self.q, self.k, self.v, self.o = False, None, None, None, None
        return out


class DiffusersCapture:
    """State of one capture: the expression stream between blocks and the records taken.

    ``expression_embeds`` are the text encoder's outputs for the expression tokens (``[1, L, D]``
    or ``[B, L, D]``); the architecture maps them into the text stream, exactly as the model
    does for the caption. ``vec_shift`` is added to each block's conditioning vector for the
    branch only. ``architecture`` None: found from the transformer.
    """

    def __init__(
        self,
        transformer: nn.Module,
        expression_embeds: torch.Tensor,
        layout: ExpressionLayout,
        *,
        architecture: Architecture | None = None,
        modality: str | None = None,
        blocks: Iterable[int | str] | None = None,
        stop_after_last: bool = False,
        vec_shift: torch.Tensor | None = None,
        meter: Any = None,
    ) -> None:
        self.architecture = architecture or diffusers_architecture(transformer, modality)
        self.transformer = transformer
        self.named_blocks = self.architecture.diffusers_blocks(transformer)
        self.names = [n for n, _ in self.named_blocks]
        selected = resolve_capture_blocks(blocks, len(self.names), self.names)
        if expression_embeds.shape[1] != layout.total:
            raise ValueError(
                f"expression embeddings hold {expression_embeds.shape[1]} tokens, layout expects {layout.total}"
            )
        self.expression_embeds = expression_embeds
        self.vec_shift = vec_shift
        self.selected = set(selected)
        self.last = selected[-1]
        adapters = [self.architecture.diffusers_adapter(n, b) for n, b in self.named_blocks]
        self.runner = BranchRunner(
            adapters, self.names, self.selected, layout, stop_after_last=stop_after_last, meter=meter
        )
        self.records = self.runner.records
        self._slots = [_Slots() for _ in self.named_blocks]
        self._signatures = [inspect.signature(b.forward) for _, b in self.named_blocks]
        self._model_signature = inspect.signature(transformer.forward)
        self._pass: Any = None

    def install(self) -> list[torch.utils.hooks.RemovableHandle]:
        handles = [self.transformer.register_forward_pre_hook(self._on_model_start, with_kwargs=True)]
        for i, (_, block) in enumerate(self.named_blocks[: self.last + 1]):
            slots = self._slots[i]
            handles.append(block.register_forward_pre_hook(self._open(slots)))
            for name, module in zip("qkv", self.architecture.diffusers_qkv_modules(block), strict=True):
                handles.append(module.register_forward_hook(self._keep(slots, name)))
            output_module = self.architecture.diffusers_output_module(block)
            handles.append(output_module.register_forward_pre_hook(self._keep_input(slots)))
            handles.append(block.register_forward_hook(self._after_block(i), with_kwargs=True))
        return handles

    def release(self) -> None:
        self.runner.release()
        self._pass = None
        for slots in self._slots:
            slots.take()

    @staticmethod
    def _open(slots: _Slots):
        def hook(_module, _inputs) -> None:
            slots.take()
            slots.open = True

        return hook

    @staticmethod
    def _keep(slots: _Slots, name: str):
        def hook(_module, _inputs, output) -> None:
            if slots.open and getattr(slots, name) is None:
                setattr(slots, name, output)

        return hook

    @staticmethod
    def _keep_input(slots: _Slots):
        def hook(_module, inputs) -> None:
            if slots.open and slots.o is None:
                slots.o = inputs[0]

        return hook

    def _on_model_start(self, module, args, kwargs) -> None:
        forward = self._model_signature.bind_partial(*args, **kwargs).arguments
        self._pass = self.architecture.diffusers_start_pass(module, forward)
        self.runner.start_pass(None)

    def _after_block(self, index: int):
        def hook(block, args, kwargs, _output) -> None:
            inputs = self._signatures[index].bind_partial(*args, **kwargs).arguments
            q, k, v, o = self._slots[index].take()
            if q is None or k is None or v is None or o is None:
                raise RuntimeError(f"{self.names[index]}: its attention's q/k/v or output projections did not run")
            text = self.architecture.diffusers_text_like(inputs)
            vec = self.architecture.diffusers_conditioning(self.names[index], inputs, self._pass)
            vec = vec if self.vec_shift is None else vec + self.vec_shift.to(vec)

            def embed(batch: int) -> torch.Tensor:
                embeds = self.expression_embeds.to(device=text.device, dtype=text.dtype)
                embeds = embeds.expand(batch, -1, -1) if embeds.shape[0] == 1 else embeds
                return self.architecture.diffusers_embed(self.transformer, embeds, self.runner.layout)

            def image() -> ImageAttention:
                return self.architecture.diffusers_image_attention(block, q, k, v, o, inputs, self._pass)

            self.runner.run(index, image, vec, embed)

        return hook


@contextmanager
def capture_attention(
    transformer: nn.Module,
    expression_embeds: torch.Tensor,
    layout: ExpressionLayout,
    *,
    architecture: Architecture | None = None,
    modality: str | None = None,
    blocks: Iterable[int | str] | None = None,
    stop_after_last: bool = False,
    vec_shift: torch.Tensor | None = None,
    meter: Any = None,
) -> Iterator[DiffusersCapture]:
    """Install the expression branch on ``transformer`` for the duration of the block.

    With ``stop_after_last`` the forward raises :class:`CaptureComplete` after the last selected
    block (use :func:`run_until_captured`); otherwise the forward runs to the end and its output is
    bit-identical to a forward without the capture. ``modality`` ("image" / "video") narrows the
    architectures the transformer may be.
    """
    session = DiffusersCapture(
        transformer,
        expression_embeds,
        layout,
        architecture=architecture,
        modality=modality,
        blocks=blocks,
        stop_after_last=stop_after_last,
        vec_shift=vec_shift,
        meter=meter,
    )
    with installed(session):
        yield session


def run_until_captured(transformer: nn.Module, **forward_kwargs: Any) -> Any:
    """Call the transformer; a :class:`CaptureComplete` early stop returns ``None``."""
    try:
        return transformer(**forward_kwargs)
    except CaptureComplete:
        return None
