"""RefAM capture on a diffusers ``FluxTransformer2DModel``.

The model is never modified: the capture lives in forward hooks that the context manager
installs and always removes, also when the forward raises. Image queries/keys/values are read
from the attention's own QK-norm and value projections (hooks cost nothing: the tensors exist
anyway); RoPE is applied to the image slice with the same function diffusers uses.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refam.attention import (
    CaptureComplete,
    ExpressionLayout,
    ImageAttention,
    resolve_capture_blocks,
)
from refam.backends.branch import BranchRunner, installed
from refam.variants import BRANCH_POOLED, check_choice

__all__ = [
    "CaptureComplete",
    "DiffusersDoubleAdapter",
    "DiffusersSingleAdapter",
    "FluxCapture",
    "capture_flux_attention",
    "flux_blocks",
    "pooled_shift",
]


def _clip_fp16(x: torch.Tensor) -> torch.Tensor:
    # Mirrors the blocks' own fp16 overflow guard so the branch sees what the model would.
    return x.clip(-65504, 65504) if x.dtype == torch.float16 else x


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    return x.unflatten(-1, (-1, head_dim))


def _check_unfused(attn: nn.Module) -> None:
    if getattr(attn, "fused_projections", False):
        raise RuntimeError(
            "RefAM reads the separate q/k/v projections; call transformer.unfuse_qkv_projections() first"
        )


class DiffusersDoubleAdapter:
    """Text-stream pieces of a diffusers ``FluxTransformerBlock``."""

    kind = "double"

    def __init__(self, block: nn.Module) -> None:
        self.block = block
        _check_unfused(block.attn)

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        attn = self.block.attn
        normed, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.block.norm1_context(expr, emb=vec)
        q = attn.norm_added_q(_heads(attn.add_q_proj(normed), attn.head_dim))
        k = attn.norm_added_k(_heads(attn.add_k_proj(normed), attn.head_dim))
        v = _heads(attn.add_v_proj(normed), attn.head_dim)
        return (
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            (gate_msa, shift_mlp, scale_mlp, gate_mlp),
        )

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        gate_msa, shift_mlp, scale_mlp, gate_mlp = state
        block = self.block
        expr = expr + gate_msa.unsqueeze(1) * block.attn.to_add_out(attn_out.to(expr.dtype))
        normed = block.norm2_context(expr) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return _clip_fp16(expr + gate_mlp.unsqueeze(1) * block.ff_context(normed))


class DiffusersSingleAdapter:
    """Text-stream view of a diffusers ``FluxSingleTransformerBlock`` (weights shared by all tokens)."""

    kind = "single"

    def __init__(self, block: nn.Module) -> None:
        self.block = block
        _check_unfused(block.attn)

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        attn = self.block.attn
        normed, gate = self.block.norm(expr, emb=vec)
        q = attn.norm_q(_heads(attn.to_q(normed), attn.head_dim))
        k = attn.norm_k(_heads(attn.to_k(normed), attn.head_dim))
        v = _heads(attn.to_v(normed), attn.head_dim)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), (normed, gate)

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        normed, gate = state
        block = self.block
        mlp = block.act_mlp(block.proj_mlp(normed))
        joined = torch.cat([attn_out.to(mlp.dtype), mlp], dim=2)
        return _clip_fp16(expr + gate.unsqueeze(1) * block.proj_out(joined))


def flux_blocks(transformer: nn.Module) -> list[tuple[str, nn.Module]]:
    """The joint blocks in execution order, named ``double.i`` / ``single.j``."""
    if not (hasattr(transformer, "transformer_blocks") and hasattr(transformer, "single_transformer_blocks")):
        raise TypeError(
            f"expected a diffusers FluxTransformer2DModel, got {type(transformer).__name__}: "
            "RefAM's diffusers backend needs FLUX double- and single-stream blocks"
        )
    for block in transformer.single_transformer_blocks:
        # diffusers < 0.35 hands single blocks [text; image] as one tensor, so the image tokens
        # this backend reads would be mixed with text rows.
        if "encoder_hidden_states" not in inspect.signature(block.forward).parameters:
            import diffusers

            raise RuntimeError(
                f"diffusers {diffusers.__version__} passes text and image to FLUX's single blocks as one tensor; "
                "RefAM needs diffusers >= 0.35: pip install -U 'diffusers>=0.35'"
            )
    named = [(f"double.{i}", b) for i, b in enumerate(transformer.transformer_blocks)]
    named += [(f"single.{i}", b) for i, b in enumerate(transformer.single_transformer_blocks)]
    return named


@torch.no_grad()
def pooled_shift(transformer: nn.Module, pooled: torch.Tensor, branch_pooled: str) -> torch.Tensor | None:
    """What turns the block's conditioning vector into the branch's (:data:`BRANCH_POOLED`): with
    ``zero``, the pooled-text term of ``time_text_embed`` swapped for a zero vector's."""
    check_choice("branch_pooled", branch_pooled, BRANCH_POOLED)
    embedder = getattr(getattr(transformer, "time_text_embed", None), "text_embedder", None)
    if branch_pooled == "caption" or embedder is None:
        return None
    return embedder(torch.zeros_like(pooled)) - embedder(pooled)


def _rope_tail(x: torch.Tensor, rotary: Any, n_tail: int) -> torch.Tensor:
    """RoPE on the last ``n_tail`` positions of ``x [B, S, H, Dh]`` (the image tokens)."""
    from diffusers.models.embeddings import apply_rotary_emb

    if rotary is None:
        return x
    cos, sin = rotary
    return apply_rotary_emb(x, (cos[-n_tail:], sin[-n_tail:]), sequence_dim=1)


_BLOCK_PARAMS = ("hidden_states", "encoder_hidden_states", "temb", "image_rotary_emb")


@dataclass
class _Scratch:
    q: torch.Tensor | None = None
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None


class FluxCapture:
    """State of one capture: the expression stream between blocks and the records taken.

    ``expression_embeds`` are the text encoder's outputs for the expression tokens (``[1, L, D]``
    or ``[B, L, D]``); the transformer's own ``context_embedder`` maps them into the text stream,
    exactly as it does for the caption.
    """

    def __init__(
        self,
        transformer: nn.Module,
        expression_embeds: torch.Tensor,
        layout: ExpressionLayout,
        *,
        blocks: Iterable[int | str] | None = None,
        stop_after_last: bool = False,
        vec_shift: torch.Tensor | None = None,
    ) -> None:
        self.transformer = transformer
        self.vec_shift = vec_shift  # added to each block's conditioning vector for the branch
        self.named_blocks = flux_blocks(transformer)
        selected = resolve_capture_blocks(blocks, len(self.named_blocks), [n for n, _ in self.named_blocks])
        if expression_embeds.shape[1] != layout.total:
            raise ValueError(
                f"expression embeddings hold {expression_embeds.shape[1]} tokens, layout expects {layout.total}"
            )
        self.expression_embeds = expression_embeds
        self.layout = layout
        self.selected = set(selected)
        self.last = selected[-1]
        self._scratch: dict[int, _Scratch] = {}
        adapters = [
            (DiffusersDoubleAdapter if name.startswith("double") else DiffusersSingleAdapter)(block)
            for name, block in self.named_blocks
        ]
        self.runner = BranchRunner(
            adapters, [n for n, _ in self.named_blocks], self.selected, layout, stop_after_last=stop_after_last
        )
        self.records = self.runner.records
        self._signatures = {i: inspect.signature(b.forward) for i, (_, b) in enumerate(self.named_blocks)}

    def install(self) -> list[torch.utils.hooks.RemovableHandle]:
        handles = [self.transformer.register_forward_pre_hook(self._on_model_start)]
        for i, (_, block) in enumerate(self.named_blocks[: self.last + 1]):
            scratch = self._scratch.setdefault(i, _Scratch())
            attn = block.attn
            handles.append(attn.norm_q.register_forward_hook(self._keep(scratch, "q")))
            handles.append(attn.norm_k.register_forward_hook(self._keep(scratch, "k")))
            handles.append(attn.to_v.register_forward_hook(self._keep(scratch, "v")))
            handles.append(block.register_forward_hook(self._after_block(i), with_kwargs=True))
        return handles

    def release(self) -> None:
        self.runner.release()
        self._scratch.clear()

    @staticmethod
    def _keep(scratch: _Scratch, slot: str):
        def hook(_module, _inputs, output):
            setattr(scratch, slot, output)

        return hook

    def _on_model_start(self, _module, _inputs) -> None:
        self.runner.start_pass(None)

    def _after_block(self, index: int):
        def hook(block, args, kwargs, _output):
            bound = self._signatures[index].bind_partial(*args, **kwargs).arguments
            img, txt, temb, rotary = (bound.get(p) for p in _BLOCK_PARAMS)
            scratch = self._scratch[index]
            n_img = img.shape[1]
            # Single blocks project text and image together: keep the image tail.
            q_plain = scratch.q[:, -n_img:]
            q = _rope_tail(q_plain, rotary, n_img).transpose(1, 2)
            k = _rope_tail(scratch.k[:, -n_img:], rotary, n_img).transpose(1, 2)
            v = _heads(scratch.v[:, -n_img:], block.attn.head_dim).transpose(1, 2)
            scratch.q = scratch.k = scratch.v = None

            def embed(batch: int) -> torch.Tensor:
                embeds = self.expression_embeds.to(device=txt.device, dtype=txt.dtype)
                embeds = embeds.expand(batch, -1, -1) if embeds.shape[0] == 1 else embeds
                return self.transformer.context_embedder(embeds)

            try:
                vec = temb if self.vec_shift is None else temb + self.vec_shift.to(temb)
                self.runner.run(index, ImageAttention(q, k, v, q_plain.transpose(1, 2)), vec, embed)
            finally:
                # The single-block adapter runs norm_q/norm_k/to_v on the expression, which our own
                # hooks saw: drop those references so nothing outlives the block.
                scratch.q = scratch.k = scratch.v = None

        return hook


@contextmanager
def capture_flux_attention(
    transformer: nn.Module,
    expression_embeds: torch.Tensor,
    layout: ExpressionLayout,
    *,
    blocks: Iterable[int | str] | None = None,
    stop_after_last: bool = False,
    vec_shift: torch.Tensor | None = None,
) -> Iterator[FluxCapture]:
    """Install the expression branch on ``transformer`` for the duration of the block.

    With ``stop_after_last`` the forward raises :class:`CaptureComplete` after the last selected
    block (use :func:`run_until_captured`); otherwise the forward runs to the end and its output is
    bit-identical to a forward without the capture.
    """
    session = FluxCapture(
        transformer, expression_embeds, layout, blocks=blocks, stop_after_last=stop_after_last, vec_shift=vec_shift
    )
    with installed(session):
        yield session


def run_until_captured(transformer: nn.Module, **forward_kwargs: Any) -> Any:
    """Call the transformer; a :class:`CaptureComplete` early stop returns ``None``."""
    try:
        return transformer(**forward_kwargs)
    except CaptureComplete:
        return None
