"""Qwen-Image (and the target image of the Qwen-Image-Edit models): what RefAM needs to know about
it, on diffusers and in ComfyUI.

An MMDiT of double-stream blocks only (60 in the real model, none single-stream), sequence
``[text ; target image ; reference images]`` on both hosts, with three differences from FLUX.1
that the branch follows:

* **text tokens are rotated**: RoPE has three axes, image tokens sit on a grid centred on 0 and
  caption token ``i`` at ``txt_start + i`` on all three axes, ``txt_start`` being half the longer
  side of the token grid; the expression's queries and keys are rotated at the positions its
  tokens would have as a caption (:attr:`refam.attention.ImageAttention.text_rotation`);
* **the timestep alone modulates**: no pooled text vector and no guidance embedding;
* **Qwen2.5-VL's last hidden state** (3584 wide, after its final norm) in a chat template whose
  system turn and user-turn opening (34 tokens) the text encoder sees and both hosts drop before
  the DiT; the 5 tokens closing the prompt stay. The DiT normalises the text (``txt_norm``)
  before its input projection.

Latents are 16 channels at 1/8 (Wan 2.1's VAE; ComfyUI's latent is ``[B, 16, 1, h, w]``), packed
2x2 into tokens like FLUX.1's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refam.architectures.base import Architecture, ComfyBlock, TextEncoder, class_named, own_function
from refam.architectures.flux import clip_fp16, comfy_rope, to_heads, token_grid
from refam.attention import ExpressionLayout, ImageAttention
from refam.operating_point import OperatingPoint

__all__ = [
    "QWEN_IMAGE",
    "QWEN_IMAGE_POINT",
    "QWEN_IMAGE_PROMPT",
    "QWEN_IMAGE_TEMPLATE",
    "QwenImage",
]

# No operating point is published for RefAM on Qwen-Image: FLUX.1's σ (the paper's timestep 750;
# Qwen-Image's transformer is fed 1000·σ as FLUX's is) and size, untuned. No guidance embedding.
# The Qwen2.5-VL encoder is causal, so padding after an expression never changes its states.
QWEN_IMAGE_POINT = OperatingPoint(sigma=0.75, resolution=1024, guidance=None, text_length=None)

# A prompt as diffusers' QwenImagePipeline and ComfyUI's QwenImageTokenizer wrap it, (before, after).
QWEN_IMAGE_PROMPT = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n",
    "<|im_end|>\n<|im_start|>assistant\n",
)
# What the DiT sees around a prompt: ``before`` is encoder context only (its 34 tokens are dropped),
# so an expression's tokens are its own and the 5 that close the prompt.
QWEN_IMAGE_TEMPLATE = ("", QWEN_IMAGE_PROMPT[1])

# The longest caption diffusers' pipeline encodes (tokenizer_max_length); text rotations are
# tabled this far, which covers any expression (at most 512 tokens).
TEXT_POSITIONS = 1024


# -- adapters (one text stream, the same attribute names on both hosts) ------------------------------
class _TextStream:
    """Text-stream pieces of a ``QwenImageTransformerBlock`` (diffusers' and ComfyUI's name them
    alike); ``vec`` is the timestep embedding. The block's own ``_modulate`` keeps each host's rounding."""

    kind = "double"

    def __init__(self, block: nn.Module) -> None:
        self.block = block
        self.head_dim = block.attn.inner_dim // block.attn.heads  # diffusers' Attention has no head_dim

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        block, attn = self.block, self.block.attn
        mod1, mod2 = block.txt_mod(vec).chunk(2, dim=-1)
        normed, gate = block._modulate(block.txt_norm1(expr), mod1)
        q = attn.norm_added_q(to_heads(attn.add_q_proj(normed), self.head_dim))
        k = attn.norm_added_k(to_heads(attn.add_k_proj(normed), self.head_dim))
        v = to_heads(attn.add_v_proj(normed), self.head_dim)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), (gate, mod2)

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        gate, mod2 = state
        block = self.block
        expr = expr + gate * block.attn.to_add_out(attn_out.to(expr.dtype))
        normed, gate_mlp = block._modulate(block.txt_norm2(expr), mod2)
        return self._mlp_residual(expr, gate_mlp, block.txt_mlp(normed))

    def _mlp_residual(self, expr: torch.Tensor, gate: torch.Tensor, mlp: torch.Tensor) -> torch.Tensor:
        return clip_fp16(expr + gate * mlp)  # diffusers' block clips its fp16 streams


class _ComfyTextStream(_TextStream):
    def _mlp_residual(self, expr: torch.Tensor, gate: torch.Tensor, mlp: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(expr, gate, mlp)


# Everything the adapters read from a ComfyUI block.
_BLOCK_PARTS = ("txt_mod", "txt_norm1", "txt_norm2", "txt_mlp", "_modulate", "attn")
_ATTENTION_PARTS = ("add_q_proj", "add_k_proj", "add_v_proj", "norm_added_q", "norm_added_k", "to_add_out")


@dataclass
class QwenImagePass:
    """One forward's token layout and the rotation of text positions 0, 1, ... of its RoPE."""

    txt_len: int
    n_img: int  # target image tokens (reference images follow them)
    batch: int
    text_rope: Any  # diffusers: complex ``[P, Dh/2]``; ComfyUI: ``pe`` rows ``[1, 1, P, Dh/2, 2, 2]``
    zero_cond_t: bool = False  # diffusers' Edit-2511 doubles temb (references at timestep 0)


def _frames(img_shapes: Any) -> list[tuple[int, int, int]]:
    """diffusers' ``img_shapes`` -> the first sample's (frames, rows, columns) per image, target
    first, read as the model's ``pos_embed`` reads it."""
    shapes = img_shapes[0] if isinstance(img_shapes, list) else img_shapes
    return list(shapes) if isinstance(shapes, list) else [shapes]


class QwenImage(Architecture):
    name = "qwen_image"
    label = "Qwen-Image"
    modality = "image"
    # diffusers' pipeline keeps at most 512 prompt tokens (max_sequence_length) and masks its padding.
    text_encoder = TextEncoder(name="qwen25_7b", pad_length=512)
    operating_point = QWEN_IMAGE_POINT

    # -- diffusers -----------------------------------------------------------------------------
    def diffusers_matches(self, transformer: nn.Module) -> bool:
        return class_named(transformer, "transformer_qwenimage", "QwenImageTransformer2DModel")

    def diffusers_blocks(self, transformer: nn.Module) -> list[tuple[str, nn.Module]]:
        if not self.diffusers_matches(transformer):
            raise TypeError(f"expected a diffusers QwenImageTransformer2DModel, got {type(transformer).__name__}")
        if type(transformer.pos_embed).__name__ != "QwenEmbedRope":
            raise NotImplementedError(
                "RefAM does not support Qwen-Image-Layered yet (layered RoPE); its Qwen-Image capture runs on "
                "Qwen-Image and Qwen-Image-Edit transformers"
            )
        return [(f"double.{i}", b) for i, b in enumerate(transformer.transformer_blocks)]

    def diffusers_adapter(self, name: str, block: nn.Module) -> _TextStream:
        return _TextStream(block)

    def diffusers_qkv_modules(self, block: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
        return block.attn.norm_q, block.attn.norm_k, block.attn.to_v

    def diffusers_output_module(self, block: nn.Module) -> nn.Module:
        return block.attn.to_out[0]

    @torch.no_grad()
    def diffusers_start_pass(self, transformer: nn.Module, kwargs: dict[str, Any]) -> QwenImagePass:
        img_shapes = kwargs["img_shapes"]
        frames, rows, cols = _frames(img_shapes)[0]
        txt_len = kwargs["encoder_hidden_states"].shape[1]
        hidden = kwargs["hidden_states"]
        # The model's own table: caption token i's rotation is row i, after the image's offset.
        _, text = transformer.pos_embed(img_shapes, max_txt_seq_len=max(txt_len, TEXT_POSITIONS), device=hidden.device)
        return QwenImagePass(
            txt_len, frames * rows * cols, hidden.shape[0], text, bool(getattr(transformer, "zero_cond_t", False))
        )

    def diffusers_conditioning(self, name: str, inputs: dict[str, Any], state: QwenImagePass) -> torch.Tensor:
        temb = inputs["temb"]
        # Edit-2511 stacks a zero-timestep embedding for the reference tokens; text takes the first half.
        return temb.chunk(2, dim=0)[0] if state.zero_cond_t else temb

    def diffusers_image_attention(
        self,
        block: nn.Module,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        inputs: dict[str, Any],
        state: QwenImagePass,
    ) -> ImageAttention:
        rope = own_function(block, "apply_rotary_emb_qwen")
        head_dim = block.attn.inner_dim // block.attn.heads
        rows = slice(0, state.n_img)  # the target; reference images follow it
        image_rope = inputs["image_rotary_emb"][0][rows]
        q_plain = q[:, rows]
        q = rope(q_plain, image_rope, use_real=False)
        k = rope(k[:, rows], image_rope, use_real=False)
        v, out = to_heads(v[:, rows], head_dim), to_heads(out[:, rows], head_dim)
        text = state.text_rope

        def rotate(x: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
            # Each expression from text position 0, where its tokens would be as a caption.
            rows = text[layout.positions(text.device)]
            return rope(x.transpose(1, 2), rows, use_real=False).transpose(1, 2)

        return ImageAttention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), q_plain.transpose(1, 2), out.transpose(1, 2), rotate
        )

    def diffusers_embed(self, transformer: nn.Module, embeds: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        return transformer.txt_in(transformer.txt_norm(embeds))

    # -- ComfyUI -------------------------------------------------------------------------------
    def comfy_matches(self, diffusion_model: nn.Module) -> bool:
        return (
            class_named(diffusion_model, "ldm.qwen_image.model", "QwenImageTransformer2DModel")
            and type(diffusion_model).__name__ != "QwenImageControlNetModel"
        )

    def comfy_check(self, diffusion_model: nn.Module) -> None:
        if not hasattr(diffusion_model, "default_ref_method"):
            # The October-2025 core's Qwen-Image hands q/k/v to attention flattened and lays out its
            # reference latents differently: the capture reads the January-2026 one.
            raise NotImplementedError(
                "RefAM reads Qwen-Image on ComfyUI 0.10 (January 2026) and later; this ComfyUI's Qwen-Image is older: "
                "update ComfyUI"
            )
        if getattr(diffusion_model.time_text_embed, "use_additional_t_cond", False):
            # Layered's latent holds several frames (layers), none of them the one image to segment.
            raise NotImplementedError(
                "RefAM does not support Qwen-Image-Layered yet; its Qwen-Image capture runs on Qwen-Image and "
                "Qwen-Image-Edit MODELs"
            )
        for index, block in enumerate(diffusion_model.transformer_blocks):
            missing = [p for p in _BLOCK_PARTS if getattr(block, p, None) is None]
            missing += [f"attn.{p}" for p in _ATTENTION_PARTS if getattr(getattr(block, "attn", None), p, None) is None]
            if missing:
                raise NotImplementedError(
                    f"RefAM does not support a Qwen-Image model whose block {index} has no {', '.join(missing)}"
                )

    def comfy_blocks(self, diffusion_model: nn.Module) -> list[ComfyBlock]:
        return [ComfyBlock(f"double.{i}", ("double_block", i), b) for i, b in enumerate(diffusion_model.transformer_blocks)]

    def comfy_adapter(self, name: str, block: nn.Module) -> _ComfyTextStream:
        return _ComfyTextStream(block)

    @torch.no_grad()
    def comfy_start_pass(
        self, diffusion_model: nn.Module, args: tuple, kwargs: dict, branch_pooled: str
    ) -> tuple[QwenImagePass, dict, int]:
        # _forward(x, timestep, context, attention_mask, ref_latents, additional_t_cond,
        # transformer_options) (October 2025: guidance where additional_t_cond is); x [B, C, T, H, W].
        x, context = args[0], args[2]
        options = args[6] if len(args) > 6 else kwargs.get("transformer_options")
        rows, cols = token_grid(x.shape, diffusion_model.patch_size)
        frames = x.shape[2] if x.ndim == 5 else 1
        # Caption token i sits at txt_start + i on all three axes, as the model builds its ids.
        txt_start = max(rows // 2, cols // 2)
        ids = torch.arange(txt_start, txt_start + max(context.shape[1], TEXT_POSITIONS), device=x.device)
        pe = diffusion_model.pe_embedder(ids[None, :, None].expand(1, -1, 3)).to(x.dtype)
        state = QwenImagePass(context.shape[1], frames * rows * cols, x.shape[0], pe)
        return state, options if options is not None else {}, x.shape[0]

    def comfy_image_attention(
        self,
        block: ComfyBlock,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        args: dict,
        state: QwenImagePass,
    ) -> ImageAttention:
        image = slice(state.txt_len, state.txt_len + state.n_img)  # reference images follow the target
        q_img = q[:, :, image]
        # The queries before RoPE (ConceptAttention's vectors): each position's rotation undone.
        q_plain = comfy_rope(q_img, args["pe"][:, :, image].transpose(-1, -2), v)
        pe = state.text_rope

        def rotate(x: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
            return comfy_rope(x, pe[:, :, layout.positions(pe.device)], x)

        return ImageAttention(q_img, k[:, :, image], v[:, :, image], q_plain, out[:, :, image], rotate)

    def comfy_conditioning(self, args: dict, state: QwenImagePass) -> torch.Tensor:
        vec = args["vec"]
        # Edit-2511 (index_timestep_zero) stacks a zero-timestep embedding for the reference tokens;
        # the text stream is modulated by the first half.
        return vec.chunk(2, dim=0)[0] if vec.shape[0] == 2 * state.batch else vec

    def comfy_embed(self, diffusion_model: nn.Module, embeds: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        return diffusion_model.txt_in(diffusion_model.txt_norm(embeds))

    def comfy_text_like(self, block: ComfyBlock, args: dict) -> torch.Tensor:
        return args["txt"]


QWEN_IMAGE = QwenImage()
