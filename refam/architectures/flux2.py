"""FLUX.2 (dev, klein 4B / 9B): what RefAM needs to know about it, on diffusers and in ComfyUI.

FLUX.1's layout with four changes the branch must follow:

* **one modulation for all blocks**: computed once per pass from the timestep (and dev's
  guidance), handed to every double block as image and text sets and to every single block as
  one set; the blocks have no modulation layers of their own, and there is no pooled vector;
* **SiLU-gated MLPs** (the single blocks' fused input projection is twice as wide);
* **text tokens are rotated**: RoPE has four axes and text token ``l`` sits at ``(0, 0, 0, l)``,
  so the expression's queries and keys are rotated at the positions its tokens would have as a
  caption (:attr:`refam.attention.ImageAttention.text_rotation`);
* **an LLM text encoder** (Qwen3 for klein, Mistral-Small-3.1 for dev): three hidden layers
  concatenated, a chat template around the prompt, 512 tokens; latents of 128 channels at 1/16.

Sequence ``[text ; target image ; reference images]`` on both hosts; the maps are read for the
target image only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refam.architectures.base import Architecture, TextEncoder, class_named
from refam.architectures.flux import (
    Flux1,
    clip_fp16,
    comfy_rope,
    double_and_single_blocks,
    flux_point,
    pack_modulations,
    refuse_fused_projections,
    to_heads,
    unsupported_flux_variant,
)
from refam.attention import ExpressionLayout, ImageAttention
from refam.operating_point import OperatingPoint

__all__ = ["FLUX2", "FLUX2_DEV", "FLUX2_IMAGE", "KLEIN_TEMPLATE", "Flux2", "image_point"]

# No operating point is published for RefAM on FLUX.2: FLUX.1's σ (the paper's timestep 750) and
# size, untuned. klein has no guidance embedding (dev's is read off the weights by the backend).
# The LLM encoder is causal, so padding after an expression never changes its states: no padding.
FLUX2_IMAGE = OperatingPoint(sigma=0.75, resolution=1024, guidance=None, text_length=None)

# FLUX.2 dev is guidance-distilled: diffusers' Flux2Pipeline conditions it on 4.0 by default.
FLUX2_DEV = dataclasses.replace(FLUX2_IMAGE, guidance=4.0)


def image_point(architecture: Architecture, guidance_embed: bool) -> OperatingPoint:
    """The operating point of a FLUX-family image model, by its architecture and whether its
    weights carry a guidance embedding (FLUX.1-dev vs schnell, FLUX.2 dev vs klein)."""
    if architecture.name == "flux2":
        return FLUX2_DEV if guidance_embed else FLUX2_IMAGE
    return flux_point(guidance_embed) if architecture.name == "flux1" else architecture.operating_point


# ComfyUI's and diffusers' klein prompt: Qwen3's chat template with thinking switched off.
KLEIN_TEMPLATE = ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")

# A caption shorter than this still leaves text positions this far (ComfyUI pads FLUX.2's text to
# 512, the diffusers pipelines encode 512 tokens).
TEXT_POSITIONS = 512


def _split_sets(mod: torch.Tensor, sets: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """diffusers' raw modulation ``[B, 3kD]`` -> k (shift, scale, gate) of ``[B, 1, D]``."""
    parts = (mod if mod.ndim == 3 else mod[:, None]).chunk(3 * sets, dim=-1)
    return [tuple(parts[3 * i : 3 * i + 3]) for i in range(sets)]


# -- diffusers adapters ----------------------------------------------------------------------------
class DiffusersDoubleAdapter:
    """Text-stream pieces of a diffusers ``Flux2TransformerBlock`` (``vec``: ``temb_mod_txt``)."""

    kind = "double"

    def __init__(self, block: nn.Module) -> None:
        self.block = block

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        attn = self.block.attn
        (shift, scale, gate), mlp = _split_sets(vec, 2)
        normed = (1 + scale) * self.block.norm1_context(expr) + shift
        q = attn.norm_added_q(to_heads(attn.add_q_proj(normed), attn.head_dim))
        k = attn.norm_added_k(to_heads(attn.add_k_proj(normed), attn.head_dim))
        v = to_heads(attn.add_v_proj(normed), attn.head_dim)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), (gate, mlp)

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        gate, (shift_mlp, scale_mlp, gate_mlp) = state
        block = self.block
        expr = expr + gate * block.attn.to_add_out(attn_out.to(expr.dtype))
        normed = block.norm2_context(expr) * (1 + scale_mlp) + shift_mlp
        return clip_fp16(expr + gate_mlp * block.ff_context(normed))


class DiffusersSingleAdapter:
    """Text-stream view of a diffusers ``Flux2SingleTransformerBlock`` (``vec``: ``temb_mod``)."""

    kind = "single"

    def __init__(self, block: nn.Module) -> None:
        self.block = block

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        attn = self.block.attn
        ((shift, scale, gate),) = _split_sets(vec, 1)
        fused = attn.to_qkv_mlp_proj((1 + scale) * self.block.norm(expr) + shift)
        qkv, mlp = fused.split([3 * attn.inner_dim, fused.shape[-1] - 3 * attn.inner_dim], dim=-1)
        q, k, v = (to_heads(t, attn.head_dim) for t in qkv.chunk(3, dim=-1))
        q, k = attn.norm_q(q), attn.norm_k(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), (mlp, gate)

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        mlp, gate = state
        attn = self.block.attn
        joined = torch.cat([attn_out.to(mlp.dtype), attn.mlp_act_fn(mlp)], dim=-1)
        return clip_fp16(expr + gate * attn.to_out(joined))


@dataclass
class Flux2Pass:
    """One forward's token layout and the rotation of text positions 0, 1, ... of its RoPE."""

    txt_len: int
    n_img: int  # target image tokens (reference images follow them)
    text_rope: Any  # diffusers: (cos, sin) ``[P, Dh]``; ComfyUI: ``pe`` rows ``[1, 1, P, Dh/2, 2, 2]``


def _diffusers_text_rotation(text_rope: tuple[torch.Tensor, torch.Tensor]):
    from diffusers.models.embeddings import apply_rotary_emb

    cos, sin = text_rope

    def rotate(x: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        positions = layout.positions(cos.device)  # each expression from text position 0, as a caption
        return apply_rotary_emb(x, (cos[positions], sin[positions]), sequence_dim=2)

    return rotate


def _comfy_text_rotation(pe: torch.Tensor):
    def rotate(x: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        return comfy_rope(x, pe[:, :, layout.positions(pe.device)], x)

    return rotate


class Flux2(Flux1):
    name = "flux2"
    label = "FLUX.2"
    modality = "image"
    # klein 4B's Qwen3 (ComfyUI keys: qwen3_4b; klein 9B qwen3_8b; dev mistral3_24b).
    text_encoder = TextEncoder(name="qwen3_4b", pad_length=TEXT_POSITIONS)
    operating_point = FLUX2_IMAGE

    # -- diffusers -----------------------------------------------------------------------------
    def diffusers_matches(self, transformer: nn.Module) -> bool:
        return hasattr(transformer, "single_stream_modulation") and hasattr(transformer, "transformer_blocks")

    def diffusers_blocks(self, transformer: nn.Module) -> list[tuple[str, nn.Module]]:
        if not self.diffusers_matches(transformer):
            raise TypeError(f"expected a diffusers Flux2Transformer2DModel, got {type(transformer).__name__}")
        return double_and_single_blocks(transformer)

    def diffusers_adapter(self, name: str, block: nn.Module):
        refuse_fused_projections(block)
        return (DiffusersDoubleAdapter if name.startswith("double") else DiffusersSingleAdapter)(block)

    def diffusers_qkv_modules(self, block: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
        # A single block has no value projection of its own: v is a third of the fused projection.
        attn = block.attn
        return attn.norm_q, attn.norm_k, (attn.to_v if hasattr(block, "ff_context") else attn.to_qkv_mlp_proj)

    def diffusers_output_module(self, block: nn.Module) -> nn.Module:
        return block.attn.to_out[0] if hasattr(block, "ff_context") else block.attn.to_out

    @torch.no_grad()
    def diffusers_start_pass(self, transformer: nn.Module, kwargs: dict[str, Any]) -> Flux2Pass:
        txt_len = kwargs["encoder_hidden_states"].shape[1]
        img_ids = kwargs["img_ids"]
        img_ids = img_ids[0] if img_ids.ndim == 3 else img_ids
        ids = torch.zeros(max(txt_len, TEXT_POSITIONS), img_ids.shape[-1], device=img_ids.device, dtype=img_ids.dtype)
        ids[:, -1] = torch.arange(ids.shape[0], device=ids.device)
        # Reference images carry a non-zero time coordinate; the target's tokens come first.
        n_img = int((img_ids[:, 0] == 0).sum())
        return Flux2Pass(txt_len, n_img, transformer.pos_embed(ids))

    def diffusers_conditioning(self, name: str, inputs: dict[str, Any], state: Flux2Pass) -> torch.Tensor:
        return inputs["temb_mod_txt"] if name.startswith("double") else inputs["temb_mod"]

    def diffusers_image_attention(self, block, q, k, v, out, inputs, state: Flux2Pass) -> ImageAttention:
        from diffusers.models.embeddings import apply_rotary_emb

        attn = block.attn
        inner = attn.heads * attn.head_dim
        # Double blocks project the image alone; single blocks project [text ; image] together.
        start = 0 if hasattr(block, "ff_context") else state.txt_len
        rows = slice(start, start + state.n_img)
        if start:
            v = v[..., 2 * inner : 3 * inner]
        q_plain, k, v, out = q[:, rows], k[:, rows], to_heads(v[:, rows], attn.head_dim), to_heads(out[:, rows, :inner], attn.head_dim)
        cos, sin = inputs["image_rotary_emb"]
        image_rope = (cos[state.txt_len : state.txt_len + state.n_img], sin[state.txt_len : state.txt_len + state.n_img])
        q = apply_rotary_emb(q_plain, image_rope, sequence_dim=1)
        k = apply_rotary_emb(k, image_rope, sequence_dim=1)
        return ImageAttention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), q_plain.transpose(1, 2), out.transpose(1, 2),
            _diffusers_text_rotation(state.text_rope),
        )  # fmt: skip

    # -- ComfyUI -------------------------------------------------------------------------------
    def comfy_matches(self, diffusion_model: nn.Module) -> bool:
        params = getattr(diffusion_model, "params", None)
        return class_named(diffusion_model, "ldm.flux.model", "Flux") and bool(getattr(params, "global_modulation", False))

    def comfy_check(self, diffusion_model: nn.Module) -> None:
        variant = unsupported_flux_variant(diffusion_model, shared_modulation=True)
        if variant is not None:
            raise NotImplementedError(
                f"RefAM does not support {variant} yet; its FLUX.2 capture runs on FLUX.2 dev / klein MODELs"
            )

    @torch.no_grad()
    def comfy_start_pass(self, diffusion_model, args, kwargs, branch_pooled) -> tuple[Flux2Pass, dict, int]:
        state, options, batch = super().comfy_start_pass(diffusion_model, args, kwargs, branch_pooled)
        x = args[0]
        ids = torch.zeros(1, max(state.txt_len, TEXT_POSITIONS), len(diffusion_model.params.axes_dim), device=x.device)
        for axis in diffusion_model.params.txt_ids_dims:
            ids[..., axis] = torch.arange(ids.shape[1], device=x.device, dtype=ids.dtype)
        return Flux2Pass(state.txt_len, state.n_img, diffusion_model.pe_embedder(ids)), options, batch

    def comfy_image_attention(self, block, q, k, v, out, args, state: Flux2Pass) -> ImageAttention:
        image = super().comfy_image_attention(block, q, k, v, out, args, state)
        image.text_rotation = _comfy_text_rotation(state.text_rope)
        return image

    def comfy_conditioning(self, args: dict, state: Flux2Pass) -> torch.Tensor:
        vec = args["vec"]
        # A double block gets ((image sets), (text sets)); a single block its one set.
        return pack_modulations(vec[1]) if isinstance(vec, tuple) else pack_modulations([vec])

    def comfy_embed(self, diffusion_model: nn.Module, embeds: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        norm = getattr(diffusion_model, "txt_norm", None)
        return diffusion_model.txt_in(norm(embeds) if norm is not None else embeds)


FLUX2 = Flux2()
