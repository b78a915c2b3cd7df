"""Mochi 1 (video): what RefAM needs to know about it, on diffusers and in ComfyUI.

Mochi is asymmetric: visual tokens come FIRST, text has its own narrower width (1536 vs 3072) and
projects up to the visual width inside attention, RoPE rotates visual q/k only (interleaved
pairs), the last block does not update the text, and T5 runs with its attention mask.

Its VAE compresses time 6x after the first frame: a clip of ``6k + 1`` frames becomes ``k + 1``
latent frames. Each latent frame's tokens become one "image" of a capture, so the heatmap and
point code works per latent frame, and clip frames map back to their latent frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from refam.architectures.base import Architecture, ComfyBlock, TextEncoder, class_named, own_function
from refam.attention import BlockCapture, ExpressionLayout, ImageAttention
from refam.operating_point import OperatingPoint

__all__ = [
    "MOCHI",
    "MOCHI_TEMPORAL_FACTOR",
    "MOCHI_VIDEO",
    "latent_frame_of",
    "latent_frames",
    "mochi_rope",
    "mochi_timestep",
    "pad_clip",
    "per_latent_frame",
    "representative_frames",
    "valid_latent_frames",
]

# Paper §4: Mochi features "from timestep 990"; Mochi's transformer counts t = 1000·(1 − σ), so
# σ = 0.01. Mochi generates 480p video.
MOCHI_VIDEO = OperatingPoint(sigma=0.01, resolution=480)
MOCHI_TEMPORAL_FACTOR = 6


# -- time layout -----------------------------------------------------------------------------------
def latent_frames(num_frames: int) -> int:
    """Latent frames Mochi's VAE makes of ``num_frames`` (which must be ``6k + 1``)."""
    return (num_frames - 1) // MOCHI_TEMPORAL_FACTOR + 1


def latent_frame_of(frame: int) -> int:
    """The latent frame a clip frame falls in: frame 0 alone, then 6 frames per latent frame."""
    return 0 if frame <= 0 else (frame - 1) // MOCHI_TEMPORAL_FACTOR + 1


def valid_latent_frames(num_frames: int) -> int:
    """Latent frames that hold real (not padding) frames of a clip of ``num_frames``."""
    return latent_frame_of(num_frames - 1) + 1


def representative_frames(num_frames: int, latent_t: int) -> list[int]:
    """One clip frame per latent frame, where its heatmap is shown and its point is used: frame 0
    for latent frame 0, else the middle of the latent frame's 6 frames (clipped to the clip)."""
    return [0] + [min(num_frames - 1, MOCHI_TEMPORAL_FACTOR * k - 3) for k in range(1, latent_t)]


def mochi_timestep(sigma: float) -> float:
    """Mochi's transformer timestep for noise level σ: its convention is inverted, ``1000·(1 - σ)``."""
    from refam.noise import check_sigma

    return 1000.0 * (1.0 - check_sigma(sigma))


def pad_clip(frames: np.ndarray) -> np.ndarray:
    """Repeat the last frame up to the next ``6k + 1`` frames (what Mochi's VAE accepts)."""
    short = (-(len(frames) - 1)) % MOCHI_TEMPORAL_FACTOR
    return np.concatenate([frames, np.repeat(frames[-1:], short, axis=0)]) if short else frames


def per_latent_frame(blocks: list[BlockCapture], latent_t: int, keep: int | None = None) -> list[BlockCapture]:
    """``[B, T·h·w, L]`` -> ``[B·T, h·w, L]`` (first ``keep`` latent frames): one image per latent frame."""
    out = []
    for b in blocks:
        scores = {}
        for name, value in b.scores.items():
            batch, tokens, length = value.shape
            scores[name] = value.reshape(batch * latent_t, tokens // latent_t, length)[:keep]
        mass = b.text_mass.repeat_interleave(latent_t, dim=0)[:keep]
        attention = None if b.text_attention is None else b.text_attention.repeat_interleave(latent_t, dim=0)[:keep]
        out.append(BlockCapture(b.name, b.index, scores, mass, attention))
    return out


def mochi_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Mochi's RoPE on ``[B, N, H, Dh]``: interleaved (even, odd) pairs rotated, in float32; with
    ``-sin`` it undoes itself."""
    even, odd = x[..., 0::2].float(), x[..., 1::2].float()
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2).to(x.dtype)


# -- adapters --------------------------------------------------------------------------------------
class DiffusersMochiAdapter:
    """Text-stream pieces of a diffusers ``MochiTransformerBlock``."""

    kind = "mochi"

    def __init__(self, block: nn.Module) -> None:
        self.block = block

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        block, attn = self.block, self.block.attn1
        if block.context_pre_only:
            normed, state = block.norm1_context(expr, vec), None
        else:
            normed, gate_msa, scale_mlp, gate_mlp = block.norm1_context(expr, vec)
            state = (gate_msa, scale_mlp, gate_mlp)
        q = attn.norm_added_q(attn.add_q_proj(normed).unflatten(2, (attn.heads, -1)))
        k = attn.norm_added_k(attn.add_k_proj(normed).unflatten(2, (attn.heads, -1)))
        v = attn.add_v_proj(normed).unflatten(2, (attn.heads, -1))
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), state

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        if state is None:  # Mochi's last block leaves the text as it is
            return expr
        gate_msa, scale_mlp, gate_mlp = state
        block = self.block
        out = block.attn1.to_add_out(attn_out.to(expr.dtype))
        expr = expr + block.norm2_context(out, torch.tanh(gate_msa).unsqueeze(1))
        normed = block.norm3_context(expr, 1 + scale_mlp.unsqueeze(1).to(torch.float32))
        return expr + block.norm4_context(block.ff_context(normed), torch.tanh(gate_mlp).unsqueeze(1))


class ComfyMochiAdapter:
    """Text-stream pieces of ComfyUI's Mochi ``AsymmetricJointBlock`` (text width != visual width)."""

    kind = "mochi"

    def __init__(self, block: nn.Module) -> None:
        self.block = block
        self._modulated_rmsnorm = own_function(block, "modulated_rmsnorm")
        self._residual_tanh_gated_rmsnorm = own_function(block, "residual_tanh_gated_rmsnorm")

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        block, attn = self.block, self.block.attn
        mod_y = block.mod_y(F.silu(vec))
        if block.update_y:
            scale_msa, gate_msa, scale_mlp, gate_mlp = mod_y.chunk(4, dim=1)
            state = (gate_msa, scale_mlp, gate_mlp)
        else:
            scale_msa, state = mod_y, None
        y = self._modulated_rmsnorm(expr, scale_msa)
        q, k, v = attn.qkv_y(y).view(y.shape[0], y.shape[1], 3, attn.num_heads, -1).unbind(2)
        q, k = attn.q_norm_y(q), attn.k_norm_y(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), state

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        if state is None:  # the last block leaves the text as it is
            return expr
        gate_msa, scale_mlp, gate_mlp = state
        block = self.block
        y = self._residual_tanh_gated_rmsnorm(expr, block.attn.proj_y(attn_out.to(expr.dtype)), gate_msa)
        return block.ff_block_y(y, scale_mlp, gate_mlp)


@dataclass
class ComfyMochiPass:
    """One forward's token layout: ``n_visual`` visual tokens first, then the text."""

    n_visual: int


class Mochi1(Architecture):
    name = "mochi"
    label = "Mochi 1"
    modality = "video"
    text_encoder = TextEncoder(name="t5xxl", pad_length=256)
    operating_point = MOCHI_VIDEO
    comfy_wrapper = "APPLY_MODEL"  # ComfyUI's Mochi has no diffusion-model wrapper point

    # -- diffusers -----------------------------------------------------------------------------
    def diffusers_matches(self, transformer: nn.Module) -> bool:
        blocks = getattr(transformer, "transformer_blocks", None)
        return hasattr(transformer, "time_embed") and bool(blocks) and hasattr(blocks[0], "norm1_context")

    def diffusers_blocks(self, transformer: nn.Module) -> list[tuple[str, nn.Module]]:
        if not self.diffusers_matches(transformer):
            raise TypeError(
                f"RefAM's Mochi capture needs a diffusers MochiTransformer3DModel, got {type(transformer).__name__}"
            )
        return [(f"mochi.{i}", b) for i, b in enumerate(transformer.transformer_blocks)]

    def diffusers_adapter(self, name: str, block: nn.Module):
        return DiffusersMochiAdapter(block)

    def diffusers_qkv_modules(self, block: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
        return block.attn1.norm_q, block.attn1.norm_k, block.attn1.to_v

    def diffusers_output_module(self, block: nn.Module) -> nn.Module:
        return block.attn1.to_out[0]

    def diffusers_image_attention(self, block, q, k, v, out, inputs, state) -> ImageAttention:
        rotary = inputs.get("image_rotary_emb")
        q_plain = q
        if rotary is not None:
            q, k = mochi_rope(q, *rotary), mochi_rope(k, *rotary)
        v = v.unflatten(2, (block.attn1.heads, -1))
        out = out.unflatten(2, (block.attn1.heads, -1))
        return ImageAttention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), q_plain.transpose(1, 2), out.transpose(1, 2)
        )

    def diffusers_embed(self, transformer: nn.Module, embeds: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        return transformer.time_embed.caption_proj(embeds)

    # -- ComfyUI -------------------------------------------------------------------------------
    def comfy_matches(self, diffusion_model: nn.Module) -> bool:
        return class_named(diffusion_model, "asymm_models_joint", "AsymmDiTJoint")

    def comfy_check(self, diffusion_model: nn.Module) -> None:
        return None

    def comfy_blocks(self, diffusion_model: nn.Module) -> list[ComfyBlock]:
        return [ComfyBlock(f"mochi.{i}", ("double_block", i), b) for i, b in enumerate(diffusion_model.blocks)]

    def comfy_adapter(self, name: str, block: nn.Module):
        return ComfyMochiAdapter(block)

    def comfy_start_pass(self, diffusion_model, args, kwargs, branch_pooled) -> tuple[ComfyMochiPass, dict, int]:
        # BaseModel._apply_model(x, t, c_concat, c_crossattn, control, transformer_options)
        x = args[0]
        options = args[5] if len(args) > 5 else kwargs.get("transformer_options", {})
        patch = diffusion_model.patch_size
        t, h, w = x.shape[-3:]
        return ComfyMochiPass(n_visual=t * (h // patch) * (w // patch)), options, x.shape[0]

    def comfy_image_attention(self, block, q, k, v, out, args, state: ComfyMochiPass) -> ImageAttention:
        n = state.n_visual
        q_x = q[:, :, :n]
        cos, sin = args.get("rope_cos"), args.get("rope_sin")
        # The visual queries before RoPE (ConceptAttention's vectors): the rotation undone.
        q_plain = q_x if cos is None else mochi_rope(q_x.transpose(1, 2), cos, -sin).transpose(1, 2)
        return ImageAttention(q_x, k[:, :, :n], v[:, :, :n], q_plain, out[:, :, :n])

    def comfy_conditioning(self, args: dict, state: ComfyMochiPass) -> torch.Tensor:
        return args["vec"]

    def comfy_embed(self, diffusion_model: nn.Module, embeds: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        return diffusion_model.t5_yproj(embeds)

    def comfy_text_like(self, block: ComfyBlock, args: dict) -> torch.Tensor:
        return args["txt"]


MOCHI = Mochi1()
