"""Z-Image (Turbo): what RefAM needs to know about it, on diffusers and in ComfyUI.

A single-stream DiT: every joint layer has one set of weights for text and image tokens, so the
expression branch runs through each layer's own weights (like FLUX's single blocks). What differs:

* **text is refined before the joint layers**: ``cap_embedder`` (RMSNorm + Linear), padding to a
  multiple of 32 with a learned ``cap_pad_token``, then two text-only, unmodulated
  ``context_refiner`` layers; the branch embeds each expression the same way, alone (the refiners
  never see the image, so this is exact), and drops its pads before the joint layers;
* **modulation**: scale and tanh-gate (no shift) from the timestep embedding alone (no pooled text,
  no guidance), the same for text and image tokens; sandwich norms around attention and FFN;
* **RoPE rotates text** on its first axis (caption token ``j`` at ``1 + j``, the image at
  ``padded caption length + 1``): the expression's tokens keep the offset to the image that a
  caption equal to the expression would have;
* **sequence order**: diffusers ``[image ; caption]``, ComfyUI ``[caption ; image]``; ComfyUI's
  NextDiT consults no replace patches, so the branch rides its ``double_block`` patch, called after
  every layer (``comfy_patch = "after_block"``);
* the text encoder is Qwen3-4B (``hidden_states[-2]``) in its chat template, unpadded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from refam.architectures.base import Architecture, ComfyBlock, TextEncoder, class_named, own_function
from refam.architectures.flux import comfy_rope
from refam.attention import ExpressionLayout, ImageAttention
from refam.operating_point import OperatingPoint

__all__ = ["Z_IMAGE", "Z_IMAGE_TEMPLATE", "Z_IMAGE_TURBO", "ZImage"]

# No operating point is published for RefAM on Z-Image: FLUX.1's σ and size, untuned. Z-Image Turbo
# samples with a static shift of 3 (ComfyUI's ModelSamplingAuraFlow 3, diffusers' scheduler
# config), which TimeShift writes as a constant μ = ln 3. No guidance embedding; the encoder is causal.
Z_IMAGE_TURBO = OperatingPoint(
    sigma=0.75, resolution=1024, guidance=None, text_length=None, time_shift=(math.log(3.0), math.log(3.0))
)

# ComfyUI's ZImageTokenizer and the diffusers pipeline (Qwen3's template, no thinking block).
Z_IMAGE_TEMPLATE = ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")

PAD_MULTIPLE = 32  # captions are padded to a multiple of this with the learned cap_pad_token


def _padded(n: int) -> int:
    return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE


def _text_axis_positions(layout: ExpressionLayout, caption_padded: int, device: Any) -> torch.Tensor:
    """First-axis RoPE positions of the expression tokens: token ``j`` of an expression padded to
    ``L`` sits ``L - j`` before the image (at ``caption_padded + 1``), as in a caption equal to it."""
    return torch.cat(
        [torch.arange(n, device=device, dtype=torch.float64) + (caption_padded - _padded(n) + 1) for n in layout.lengths]
    )


# -- diffusers -------------------------------------------------------------------------------------
def _complex_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """diffusers' Z-Image RoPE: interleaved pairs times ``freqs [.., S, Dh/2]`` (complex), in float32."""
    rotated = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2)) * freqs
    return torch.view_as_real(rotated).flatten(-2).type_as(x)


class DiffusersAdapter:
    """Text view of a diffusers ``ZImageTransformerBlock`` (``vec``: the timestep embedding)."""

    kind = "single"

    def __init__(self, block: nn.Module) -> None:
        self.block = block

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        block, attn = self.block, self.block.attention
        scale_msa, gate_msa, scale_mlp, gate_mlp = block.adaLN_modulation(vec).unsqueeze(1).chunk(4, dim=2)
        normed = block.attention_norm1(expr) * (1.0 + scale_msa)
        q = attn.norm_q(attn.to_q(normed).unflatten(-1, (attn.heads, -1)))
        k = attn.norm_k(attn.to_k(normed).unflatten(-1, (attn.heads, -1)))
        v = attn.to_v(normed).unflatten(-1, (attn.heads, -1))
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), (gate_msa.tanh(), 1.0 + scale_mlp, gate_mlp.tanh())

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        gate_msa, scale_mlp, gate_mlp = state
        block = self.block
        expr = expr + gate_msa * block.attention_norm2(block.attention.to_out[0](attn_out.to(expr.dtype)))
        return expr + gate_mlp * block.ffn_norm2(block.feed_forward(block.ffn_norm1(expr) * scale_mlp))


class ComfyAdapter:
    """Text view of ComfyUI's ``JointTransformerBlock`` with Z-Image's modulation (fused q/k/v,
    ComfyUI's fp16 clamps)."""

    kind = "single"

    def __init__(self, block: nn.Module) -> None:
        self.block = block
        self.clamp = own_function(block, "clamp_fp16")

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        block, attn = self.block, self.block.attention
        scale_msa, gate_msa, scale_mlp, gate_mlp = block.adaLN_modulation(vec).chunk(4, dim=1)
        normed = block.attention_norm1(expr) * (1 + scale_msa.unsqueeze(1))
        heads, kv_heads, dh = attn.n_local_heads, attn.n_local_kv_heads, attn.head_dim
        q, k, v = torch.split(attn.qkv(normed), [heads * dh, kv_heads * dh, kv_heads * dh], dim=-1)
        b, n = expr.shape[:2]
        q, k = attn.q_norm(q.view(b, n, heads, dh)), attn.k_norm(k.view(b, n, kv_heads, dh))
        v = v.view(b, n, kv_heads, dh)
        if heads != kv_heads:  # grouped keys and values, as the block repeats them
            k, v = (t.repeat_interleave(heads // kv_heads, dim=2) for t in (k, v))
        state = (gate_msa.unsqueeze(1).tanh(), scale_mlp, gate_mlp.unsqueeze(1).tanh())
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), state

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        gate_msa, scale_mlp, gate_mlp = state
        block = self.block
        expr = expr + gate_msa * block.attention_norm2(self.clamp(block.attention.out(attn_out.to(expr.dtype))))
        mlp = block.feed_forward(block.ffn_norm1(expr) * (1 + scale_mlp.unsqueeze(1)))
        return expr + gate_mlp * block.ffn_norm2(self.clamp(mlp))


@dataclass
class ZImagePass:
    """One forward's layout: ``n_img`` image tokens, the caption padded to ``caption_padded``;
    ``text_tables``: the expressions' RoPE table, built once per pass (every block rotates by it)."""

    n_img: int
    caption_padded: int
    rope: Any  # the model's RoPE embedder (diffusers' RopeEmbedder / ComfyUI's EmbedND)
    text_tables: dict[tuple, torch.Tensor] = field(default_factory=dict)

    def text_table(self, layout: ExpressionLayout, caption_padded: int, build: Any) -> torch.Tensor:
        key = (layout.lengths, caption_padded)
        if key not in self.text_tables:
            self.text_tables[key] = build(_text_axis_positions(layout, caption_padded, "cpu"))
        return self.text_tables[key]


class ZImage(Architecture):
    name = "z_image"
    label = "Z-Image"
    modality = "image"
    text_encoder = TextEncoder(name="qwen3_4b", pad_length=512)
    operating_point = Z_IMAGE_TURBO
    comfy_patch = "after_block"

    # -- diffusers -----------------------------------------------------------------------------
    def diffusers_matches(self, transformer: nn.Module) -> bool:
        return all(hasattr(transformer, a) for a in ("layers", "context_refiner", "noise_refiner", "cap_embedder"))

    def diffusers_blocks(self, transformer: nn.Module) -> list[tuple[str, nn.Module]]:
        if not self.diffusers_matches(transformer):
            raise TypeError(f"expected a diffusers ZImageTransformer2DModel, got {type(transformer).__name__}")
        if getattr(transformer, "siglip_embedder", None) is not None:
            raise NotImplementedError("RefAM does not support Z-Image Omni (image-conditioned) yet; it runs on Z-Image")
        return [(f"single.{i}", block) for i, block in enumerate(transformer.layers)]

    def diffusers_adapter(self, name: str, block: nn.Module):
        return DiffusersAdapter(block)

    def diffusers_qkv_modules(self, block: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
        return block.attention.norm_q, block.attention.norm_k, block.attention.to_v

    def diffusers_output_module(self, block: nn.Module) -> nn.Module:
        return block.attention.to_out[0]

    def diffusers_start_pass(self, transformer: nn.Module, kwargs: dict[str, Any]) -> ZImagePass:
        latent, caption = kwargs["x"][0], kwargs["cap_feats"][0]
        patch = transformer.all_patch_size[0] if hasattr(transformer, "all_patch_size") else 2
        n_img = latent.shape[-3] * (latent.shape[-2] // patch) * (latent.shape[-1] // patch)
        return ZImagePass(n_img, _padded(caption.shape[0]), transformer.rope_embedder)

    def diffusers_conditioning(self, name: str, inputs: dict[str, Any], state: ZImagePass) -> torch.Tensor:
        return inputs["adaln_input"]

    def diffusers_text_like(self, inputs: dict[str, Any]) -> torch.Tensor:
        return inputs["x"]

    def diffusers_image_attention(self, block, q, k, v, out, inputs, state: ZImagePass) -> ImageAttention:
        # diffusers' sequence is [image ; caption]: the image comes first.
        rows = slice(0, state.n_img)
        heads = block.attention.heads
        freqs = inputs["freqs_cis"][:, rows].unsqueeze(2)  # [B, N, 1, Dh/2]
        q_plain = q[:, rows]
        q_rot, k_rot = _complex_rope(q_plain, freqs), _complex_rope(k[:, rows], freqs)
        v, out = v[:, rows].unflatten(-1, (heads, -1)), out[:, rows].unflatten(-1, (heads, -1))
        return ImageAttention(
            q_rot.transpose(1, 2), k_rot.transpose(1, 2), v.transpose(1, 2), q_plain.transpose(1, 2), out.transpose(1, 2),
            self._diffusers_text_rotation(state),
        )  # fmt: skip

    @staticmethod
    def _diffusers_text_rotation(state: ZImagePass):
        rope = state.rope

        def table(positions: torch.Tensor) -> torch.Tensor:
            # The RoPE table of the model's embedder, computed for these (possibly negative) positions
            # exactly as it computes its own: float64 angles cast to float32, then polar.
            d0 = rope.axes_dims[0]
            inverse = 1.0 / (rope.theta ** (torch.arange(0, d0, 2, dtype=torch.float64) / d0))
            angles = torch.outer(positions, inverse).float()
            first = torch.polar(torch.ones_like(angles), angles)
            rest = torch.ones(len(positions), (sum(rope.axes_dims) - d0) // 2, dtype=first.dtype)
            return torch.cat([first, rest], dim=-1)

        def rotate(x: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
            freqs = state.text_table(layout, state.caption_padded, table).to(x.device)
            return _complex_rope(x.transpose(1, 2), freqs[:, None]).transpose(1, 2)

        return rotate

    def diffusers_embed(self, transformer: nn.Module, embeds: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        rope = transformer.rope_embedder
        out = []
        for start, end in layout.spans:
            text = transformer.cap_embedder(embeds[:, start:end])
            padded = _padded(end - start)
            pad = transformer.cap_pad_token.to(text).expand(text.shape[0], padded - text.shape[1], -1)
            text = torch.cat([text, pad], dim=1)
            ids = torch.zeros(padded, len(rope.axes_dims), dtype=torch.int32, device=text.device)
            ids[:, 0] = torch.arange(padded, device=text.device) + 1
            freqs = rope(ids)[None].expand(text.shape[0], -1, -1)
            for layer in transformer.context_refiner:
                text = layer(text, None, freqs)
            out.append(text[:, : end - start])
        return torch.cat(out, dim=1)

    # -- ComfyUI -------------------------------------------------------------------------------
    def comfy_matches(self, diffusion_model: nn.Module) -> bool:
        if not class_named(diffusion_model, "ldm.lumina.model", "NextDiT"):
            return False
        # Z-Image: caption pad tokens and a one-layer (no SiLU) modulation; Lumina 2 has neither.
        layers = getattr(diffusion_model, "layers", None) or []
        modulation = getattr(layers[0], "adaLN_modulation", None) if len(layers) else None
        return getattr(diffusion_model, "pad_tokens_multiple", None) is not None and modulation is not None and len(modulation) == 1

    def comfy_check(self, diffusion_model: nn.Module) -> None:
        if getattr(diffusion_model, "siglip_embedder", None) is not None:
            raise NotImplementedError("RefAM does not support Z-Image Omni (image-conditioned) yet; it runs on Z-Image")
        if getattr(diffusion_model, "clip_text_pooled_proj", None) is not None:
            raise NotImplementedError("RefAM does not support this Lumina-family model (a pooled text input) yet")

    def comfy_blocks(self, diffusion_model: nn.Module) -> list[ComfyBlock]:
        # The patch key names the post-layer patch NextDiT calls after each joint layer.
        return [ComfyBlock(f"single.{i}", ("double_block", i), b) for i, b in enumerate(diffusion_model.layers)]

    def comfy_adapter(self, name: str, block: nn.Module):
        return ComfyAdapter(block)

    def comfy_start_pass(self, diffusion_model, args, kwargs, branch_pooled) -> tuple[ZImagePass, dict, int]:
        # NextDiT.forward(x, timesteps, context, num_tokens, attention_mask, **kwargs)
        x = args[0]
        context = args[2] if len(args) > 2 else kwargs["context"]
        options = kwargs.get("transformer_options", {})
        patch = diffusion_model.patch_size
        n_img = -(-x.shape[-2] // patch) * -(-x.shape[-1] // patch)
        return ZImagePass(n_img, _padded(context.shape[1]), diffusion_model.rope_embedder), options, x.shape[0]

    def comfy_image_attention(self, block, q, k, v, out, args, state: ZImagePass) -> ImageAttention:
        caption = args["txt"].shape[1]  # ComfyUI's sequence is [caption ; image]
        image = slice(caption, caption + state.n_img)
        q_img = q[:, :, image]
        pe = args["pe"][:, : state.n_img].movedim(1, 2)  # [B, 1, N, Dh/2, 2, 2]
        # The queries before RoPE (ConceptAttention's vectors): each position's rotation undone.
        q_plain = comfy_rope(q_img, pe.transpose(-1, -2), v)
        rope = state.rope

        def table(positions: torch.Tensor) -> torch.Tensor:
            ids = torch.zeros(1, len(positions), len(rope.axes_dim), device=q.device)
            ids[0, :, 0] = positions.to(q.device).float()
            return rope(ids)

        def rotate(x: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
            return comfy_rope(x, state.text_table(layout, caption, table), x)

        return ImageAttention(q_img, k[:, :, image], v[:, :, image], q_plain, out[:, :, image], rotate)

    def comfy_conditioning(self, args: dict, state: ZImagePass) -> torch.Tensor:
        return args["vec"]

    def comfy_embed(self, diffusion_model: nn.Module, embeds: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        dm = diffusion_model
        pad_zimage = own_function(dm, "pad_zimage")
        out = []
        for start, end in layout.spans:
            text, _ = pad_zimage(dm.cap_embedder(embeds[:, start:end]), dm.cap_pad_token, dm.pad_tokens_multiple)
            ids = torch.zeros(text.shape[0], text.shape[1], len(dm.rope_embedder.axes_dim), device=text.device)
            ids[..., 0] = torch.arange(text.shape[1], device=text.device, dtype=ids.dtype) + 1.0
            freqs = dm.rope_embedder(ids).movedim(1, 2)
            for layer in dm.context_refiner:
                # Own options: the capture's attention reader must not see these calls.
                text = layer(text, None, freqs, transformer_options={})
            out.append(text[:, : end - start])
        return torch.cat(out, dim=1)

    def comfy_text_like(self, block: ComfyBlock, args: dict) -> torch.Tensor:
        return args["txt"]


Z_IMAGE = ZImage()
