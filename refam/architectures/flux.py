"""FLUX.1 (dev, schnell, Kontext): what RefAM needs to know about it, on diffusers and in ComfyUI.

Joint sequence ``[text ; image]``; 19 double-stream blocks (separate text weights) then 38
single-stream blocks (one set of weights for all tokens, text first); T5-XXL text through
``context_embedder`` / ``txt_in``; RoPE on every token (text ids are zero, so identity on text);
16-channel latents packed 2x2 into tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refam.architectures.base import Architecture, ComfyBlock, TextEncoder, class_named
from refam.attention import ExpressionLayout, ImageAttention
from refam.operating_point import OperatingPoint
from refam.variants import BRANCH_POOLED, check_choice

__all__ = [
    "FLUX1",
    "Modulation",
    "clip_fp16",
    "comfy_rope",
    "double_and_single_blocks",
    "FLUX_IMAGE",
    "FLUX_SCHNELL",
    "flux_point",
    "latent_image_ids",
    "pack_latents",
    "pack_modulations",
    "refuse_fused_projections",
    "to_heads",
    "token_grid",
    "unpack_modulations",
    "unsupported_flux_variant",
]

# Paper §4: FLUX features "from timestep 750"; flow matching feeds the transformer t = 1000·σ, so
# σ = 0.75. FLUX.1 was trained at 1024²; 3.5 is FLUX.1-dev's default distilled guidance.
# Expressions padded as BFL's reference pads FLUX prompts: 512 tokens for FLUX.1-dev, 256 for schnell.
# FLUX.1-dev's scheduler shifts its σ schedule by the image's token count (diffusers'
# ``use_dynamic_shifting``, base 0.5 / max 1.15; ComfyUI's ModelSamplingFlux), schnell's does not.
FLUX_IMAGE = OperatingPoint(sigma=0.75, resolution=1024, guidance=3.5, text_length=512, time_shift=(0.5, 1.15))
FLUX_SCHNELL = OperatingPoint(sigma=0.75, resolution=1024, guidance=None, text_length=256)


def flux_point(guidance_embed: bool) -> OperatingPoint:
    """FLUX.1-dev (guidance-distilled) or schnell (no guidance embedding)."""
    return FLUX_IMAGE if guidance_embed else FLUX_SCHNELL


# -- latent layout ---------------------------------------------------------------------------------
def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, (h/2)(w/2), 4C]``: FLUX's 2x2 patch tokens in row-major order."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def latent_image_ids(grid_h: int, grid_w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """diffusers' position ids of the image tokens: (0, row, column)."""
    ids = torch.zeros(grid_h, grid_w, 3, device=device)
    ids[..., 1] = torch.arange(grid_h, device=device)[:, None]
    ids[..., 2] = torch.arange(grid_w, device=device)[None, :]
    return ids.reshape(grid_h * grid_w, 3)


def token_grid(latent_shape: Sequence[int], patch: int) -> tuple[int, int]:
    """FLUX's token grid for a latent ``[..., h, w]`` (ComfyUI pads odd sides to the patch)."""
    h, w = latent_shape[-2:]
    return (h + patch // 2) // patch, (w + patch // 2) // patch


# -- shared by the adapters ------------------------------------------------------------------------
def to_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    return x.unflatten(-1, (-1, head_dim))


def _modulate(x: torch.Tensor, mod: Any) -> torch.Tensor:
    return torch.addcmul(mod.shift, x, 1 + mod.scale)


def _split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b, n = qkv.shape[:2]
    q, k, v = qkv.view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    return q, k, v


def clip_fp16(x: torch.Tensor) -> torch.Tensor:
    # diffusers' blocks guard fp16 overflow this way; the branch must see what the model would.
    return x.clip(-65504, 65504) if x.dtype == torch.float16 else x


def _nan_guard_fp16(x: torch.Tensor) -> torch.Tensor:
    # ComfyUI's blocks guard fp16 overflow this way.
    return torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504) if x.dtype == torch.float16 else x


# -- diffusers adapters ----------------------------------------------------------------------------
class DiffusersDoubleAdapter:
    """Text-stream pieces of a diffusers ``FluxTransformerBlock``."""

    kind = "double"

    def __init__(self, block: nn.Module) -> None:
        self.block = block

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        attn = self.block.attn
        normed, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.block.norm1_context(expr, emb=vec)
        q = attn.norm_added_q(to_heads(attn.add_q_proj(normed), attn.head_dim))
        k = attn.norm_added_k(to_heads(attn.add_k_proj(normed), attn.head_dim))
        v = to_heads(attn.add_v_proj(normed), attn.head_dim)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), (gate_msa, shift_mlp, scale_mlp, gate_mlp)

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        gate_msa, shift_mlp, scale_mlp, gate_mlp = state
        block = self.block
        expr = expr + gate_msa.unsqueeze(1) * block.attn.to_add_out(attn_out.to(expr.dtype))
        normed = block.norm2_context(expr) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        return clip_fp16(expr + gate_mlp.unsqueeze(1) * block.ff_context(normed))


class DiffusersSingleAdapter:
    """Text-stream view of a diffusers ``FluxSingleTransformerBlock`` (weights shared by all tokens)."""

    kind = "single"

    def __init__(self, block: nn.Module) -> None:
        self.block = block

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        attn = self.block.attn
        normed, gate = self.block.norm(expr, emb=vec)
        q = attn.norm_q(to_heads(attn.to_q(normed), attn.head_dim))
        k = attn.norm_k(to_heads(attn.to_k(normed), attn.head_dim))
        v = to_heads(attn.to_v(normed), attn.head_dim)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), (normed, gate)

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        normed, gate = state
        block = self.block
        mlp = block.act_mlp(block.proj_mlp(normed))
        joined = torch.cat([attn_out.to(mlp.dtype), mlp], dim=2)
        return clip_fp16(expr + gate.unsqueeze(1) * block.proj_out(joined))


# -- ComfyUI adapters ------------------------------------------------------------------------------
@dataclass
class Modulation:
    """One (shift, scale, gate) set, ``[B, 1, D]`` each, as ComfyUI's ``ModulationOut``."""

    shift: torch.Tensor
    scale: torch.Tensor
    gate: torch.Tensor


def pack_modulations(mods: Sequence[Any]) -> torch.Tensor:
    """Modulation sets a block is handed ready-made (FLUX.2's shared modulation, Chroma's
    approximator) -> one ``[B, 1, 3kD]`` tensor, which the branch can index by batch row."""
    return torch.cat([t for m in mods for t in (m.shift, m.scale, m.gate)], dim=-1)


def unpack_modulations(packed: torch.Tensor, sets: int) -> list[Modulation]:
    parts = packed.chunk(3 * sets, dim=-1)
    return [Modulation(*parts[3 * i : 3 * i + 3]) for i in range(sets)]


class ComfyDoubleAdapter:
    """Text-stream pieces of ComfyUI's FLUX ``DoubleStreamBlock``: its own ``txt_mod``, or, for a
    block built without modulation (FLUX.2, Chroma), the packed text sets of :func:`pack_modulations`."""

    kind = "double"

    def __init__(self, block: nn.Module) -> None:
        self.block = block

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        block = self.block
        txt_mod = getattr(block, "txt_mod", None)
        mod1, mod2 = txt_mod(vec) if txt_mod is not None else unpack_modulations(vec, 2)
        q, k, v = _split_heads(block.txt_attn.qkv(_modulate(block.txt_norm1(expr), mod1)), block.num_heads)
        q, k = block.txt_attn.norm(q, k, v)
        return q, k, v, (mod1, mod2)

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        mod1, mod2 = state
        block = self.block
        expr = expr + mod1.gate * block.txt_attn.proj(attn_out.to(expr.dtype))
        expr = expr + mod2.gate * block.txt_mlp(_modulate(block.txt_norm2(expr), mod2))
        return _nan_guard_fp16(expr)


class ComfySingleAdapter:
    """Text-stream view of ComfyUI's FLUX ``SingleStreamBlock`` (weights shared by all tokens); its
    own ``modulation`` or a packed set (FLUX.2, Chroma). FLUX.2's MLP input is twice as wide
    (``mlp_hidden_dim_first``, SiLU-gated)."""

    kind = "single"

    def __init__(self, block: nn.Module) -> None:
        self.block = block

    def expression_qkv(self, expr: torch.Tensor, vec: torch.Tensor):
        block = self.block
        # The October-2025 core's own Chroma blocks have no ``modulation`` attribute at all.
        own = getattr(block, "modulation", None)
        mod = own(vec)[0] if own is not None else unpack_modulations(vec, 1)[0]
        mlp_width = getattr(block, "mlp_hidden_dim_first", block.mlp_hidden_dim)
        qkv, mlp = torch.split(
            block.linear1(_modulate(block.pre_norm(expr), mod)), [3 * block.hidden_size, mlp_width], dim=-1
        )
        q, k, v = _split_heads(qkv, block.num_heads)
        q, k = block.norm(q, k, v)
        return q, k, v, (mlp, mod.gate)

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state) -> torch.Tensor:
        mlp, gate = state
        block = self.block
        out = block.linear2(torch.cat((attn_out.to(mlp.dtype), block.mlp_act(mlp)), 2))
        return _nan_guard_fp16(expr + gate * out)


# -- RoPE ------------------------------------------------------------------------------------------
def comfy_rope(x: torch.Tensor, pe: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """FLUX RoPE exactly as ``comfy.ldm.flux.math`` applies it (float32, then back)."""
    shape = x.shape
    x = x.to(dtype=pe.dtype).reshape(*shape[:-1], -1, 1, 2)
    return (pe[..., 0] * x[..., 0] + pe[..., 1] * x[..., 1]).reshape(*shape).type_as(like)


def _diffusers_rope(x: torch.Tensor, rotary: Any) -> torch.Tensor:
    """RoPE ``(cos, sin)`` rows on the positions of ``x [B, S, H, Dh]``."""
    from diffusers.models.embeddings import apply_rotary_emb

    return x if rotary is None else apply_rotary_emb(x, rotary, sequence_dim=1)


@dataclass
class DiffusersFluxPass:
    """One diffusers forward's layout: ``txt_len`` text tokens, then ``n_img`` target image tokens
    (then any reference images)."""

    txt_len: int
    n_img: int


# Everything the ComfyUI adapters read from a block; a block without one of these is a layout
# they were not written for.
_DOUBLE_PARTS = ("img_mod", "img_norm1", "img_attn", "txt_mod", "txt_norm1", "txt_attn", "txt_norm2", "txt_mlp")
_SINGLE_PARTS = ("modulation", "pre_norm", "linear1", "linear2", "norm", "mlp_act")


def unsupported_flux_variant(diffusion_model: nn.Module, shared_modulation: bool = False) -> str | None:
    """What a ComfyUI ``Flux`` holds that the adapters cannot read, in words; None when they can.
    ``shared_modulation``: blocks are handed their modulation ready-made (FLUX.2, Chroma) and may
    have SiLU-gated MLPs; otherwise each block has its own (FLUX.1)."""
    params = getattr(diffusion_model, "params", None)
    if getattr(params, "yak_mlp", False) or getattr(params, "txt_norm", False):
        return "this FLUX variant (gated MLPs / a text norm, e.g. Ovis-Image)"
    own = {"img_mod", "txt_mod", "modulation"}
    for kind, blocks, parts in (
        ("double", diffusion_model.double_blocks, _DOUBLE_PARTS),
        ("single", diffusion_model.single_blocks, _SINGLE_PARTS),
    ):
        for index, block in enumerate(blocks):
            needed = [part for part in parts if not (shared_modulation and part in own)]
            missing = [part for part in needed if getattr(block, part, None) is None]
            if missing:
                return f"a FLUX model whose {kind} block {index} has no {', '.join(missing)}"
            gated = getattr(block, "mlp_hidden_dim_first", None) not in (None, getattr(block, "mlp_hidden_dim", None))
            if kind == "single" and gated and not shared_modulation:
                return f"a FLUX model whose single block {index} has a gated MLP"
    return None


def double_and_single_blocks(transformer: nn.Module) -> list[tuple[str, nn.Module]]:
    """A diffusers FLUX-family transformer's blocks in execution order: ``double.i``, then ``single.j``."""
    named = [(f"double.{i}", b) for i, b in enumerate(transformer.transformer_blocks)]
    named += [(f"single.{i}", b) for i, b in enumerate(transformer.single_transformer_blocks)]
    return named


def refuse_fused_projections(block: nn.Module) -> None:
    if getattr(block.attn, "fused_projections", False):
        raise RuntimeError("RefAM reads the separate q/k/v projections; call transformer.unfuse_qkv_projections() first")


@dataclass
class ComfyFluxPass:
    """One forward's token layout: text first, then ``n_img`` image tokens (then any reference tokens)."""

    txt_len: int
    n_img: int
    vec_shift: torch.Tensor | None  # added to each block's conditioning vector for the branch


class Flux1(Architecture):
    name = "flux1"
    label = "FLUX.1"
    modality = "image"
    text_encoder = TextEncoder(name="t5xxl", pad_length=512)
    operating_point = FLUX_IMAGE

    # -- diffusers -----------------------------------------------------------------------------
    def diffusers_matches(self, transformer: nn.Module) -> bool:
        # FLUX.2 (one shared modulation) and Chroma (an approximator's modulations) have these
        # block lists too.
        return (
            hasattr(transformer, "transformer_blocks")
            and hasattr(transformer, "single_transformer_blocks")
            and not hasattr(transformer, "single_stream_modulation")
            and not hasattr(transformer, "distilled_guidance_layer")
        )

    def diffusers_blocks(self, transformer: nn.Module) -> list[tuple[str, nn.Module]]:
        if not self.diffusers_matches(transformer):
            raise TypeError(
                f"expected a diffusers FluxTransformer2DModel, got {type(transformer).__name__}: "
                "RefAM's diffusers backend needs FLUX double- and single-stream blocks"
            )
        for block in transformer.single_transformer_blocks:
            # diffusers < 0.35 hands single blocks [text; image] as one tensor, so the image tokens
            # read here would be mixed with text rows.
            if "encoder_hidden_states" not in inspect.signature(block.forward).parameters:
                import diffusers

                raise RuntimeError(
                    f"diffusers {diffusers.__version__} passes text and image to FLUX's single blocks as one tensor; "
                    "RefAM needs diffusers >= 0.35: pip install -U 'diffusers>=0.35'"
                )
        return double_and_single_blocks(transformer)

    def diffusers_adapter(self, name: str, block: nn.Module):
        refuse_fused_projections(block)
        return (DiffusersDoubleAdapter if name.startswith("double") else DiffusersSingleAdapter)(block)

    def diffusers_qkv_modules(self, block: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
        return block.attn.norm_q, block.attn.norm_k, block.attn.to_v

    def diffusers_output_module(self, block: nn.Module) -> nn.Module:
        # A double block projects the image's attention output alone (to_out); a single block
        # projects [attention output, MLP] of [text; image] together (proj_out).
        return block.attn.to_out[0] if hasattr(block, "ff_context") else block.proj_out

    def diffusers_start_pass(self, transformer: nn.Module, kwargs: dict[str, Any]) -> DiffusersFluxPass:
        img_ids = kwargs.get("img_ids")
        n_img = kwargs["hidden_states"].shape[1]
        if img_ids is not None:
            # Kontext's reference tokens follow the target's and carry time coordinate 1.
            img_ids = img_ids[0] if img_ids.ndim == 3 else img_ids
            n_img = int((img_ids[:, 0] == 0).sum())
        return DiffusersFluxPass(kwargs["encoder_hidden_states"].shape[1], n_img)

    def diffusers_image_attention(self, block, q, k, v, out, inputs, state: DiffusersFluxPass) -> ImageAttention:
        # Both kinds receive the image alone as hidden_states; single blocks project [text; image]
        # together, so there the image starts after the text. Reference images (Kontext) follow the
        # target: the maps are read for the target only.
        start = q.shape[1] - inputs["hidden_states"].shape[1]
        rows = slice(start, start + state.n_img)
        q_plain = q[:, rows]
        inner = q.shape[-2] * q.shape[-1]
        rotary = inputs.get("image_rotary_emb")
        if rotary is not None:
            rotary = tuple(r[state.txt_len : state.txt_len + state.n_img] for r in rotary)
        q = _diffusers_rope(q_plain, rotary)
        k = _diffusers_rope(k[:, rows], rotary)
        v = to_heads(v[:, rows], block.attn.head_dim)
        out = to_heads(out[:, rows, :inner], block.attn.head_dim)
        return ImageAttention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), q_plain.transpose(1, 2), out.transpose(1, 2)
        )

    def diffusers_embed(self, transformer: nn.Module, embeds: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        return transformer.context_embedder(embeds)

    @torch.no_grad()
    def diffusers_pooled_shift(self, transformer: nn.Module, pooled: torch.Tensor, branch_pooled: str) -> torch.Tensor | None:
        """What turns a block's conditioning vector into the branch's (:data:`BRANCH_POOLED`): with
        ``zero``, the pooled-text term of ``time_text_embed`` swapped for a zero vector's."""
        check_choice("branch_pooled", branch_pooled, BRANCH_POOLED)
        embedder = getattr(getattr(transformer, "time_text_embed", None), "text_embedder", None)
        if branch_pooled == "caption" or embedder is None:
            return None
        return embedder(torch.zeros_like(pooled)) - embedder(pooled)

    # -- ComfyUI -------------------------------------------------------------------------------
    def comfy_matches(self, diffusion_model: nn.Module) -> bool:
        params = getattr(diffusion_model, "params", None)
        return (
            class_named(diffusion_model, "ldm.flux.model", "Flux")
            and type(diffusion_model).__name__ != "ControlNetFlux"
            and not getattr(params, "global_modulation", False)  # FLUX.2
        )

    def comfy_check(self, diffusion_model: nn.Module) -> None:
        variant = unsupported_flux_variant(diffusion_model)
        if variant is not None:
            raise NotImplementedError(
                f"RefAM does not support {variant} yet (support is planned); its FLUX capture runs on FLUX.1 "
                "dev / schnell / Kontext MODELs"
            )

    def comfy_blocks(self, diffusion_model: nn.Module) -> list[ComfyBlock]:
        blocks = [ComfyBlock(f"double.{i}", ("double_block", i), b) for i, b in enumerate(diffusion_model.double_blocks)]
        blocks += [ComfyBlock(f"single.{i}", ("single_block", i), b) for i, b in enumerate(diffusion_model.single_blocks)]
        return blocks

    def comfy_adapter(self, name: str, block: nn.Module):
        return (ComfyDoubleAdapter if name.startswith("double") else ComfySingleAdapter)(block)

    def comfy_start_pass(self, diffusion_model, args, kwargs, branch_pooled) -> tuple[ComfyFluxPass, dict, int]:
        # Flux._forward(x, timestep, context, y, guidance, ref_latents, control, transformer_options)
        x, context = args[0], args[2]
        options = args[7] if len(args) > 7 else kwargs.get("transformer_options", {})
        y = args[3] if len(args) > 3 else kwargs.get("y")
        grid = token_grid(x.shape, diffusion_model.patch_size)
        shift = self._comfy_pooled_shift(diffusion_model, y, branch_pooled)
        return ComfyFluxPass(txt_len=context.shape[1], n_img=grid[0] * grid[1], vec_shift=shift), options, x.shape[0]

    @torch.no_grad()
    def _comfy_pooled_shift(self, dm: nn.Module, y: torch.Tensor | None, branch_pooled: str) -> torch.Tensor | None:
        """With ``branch_pooled="zero"``: FLUX's pooled-text term ``vector_in(y)`` swapped for a zero vector's."""
        vector_in = getattr(dm, "vector_in", None)
        if branch_pooled == "caption" or vector_in is None or y is None:
            return None
        y = y[:, : dm.params.vec_in_dim].to(next(vector_in.parameters()).dtype)
        return vector_in(torch.zeros_like(y)) - vector_in(y)

    def comfy_image_attention(self, block, q, k, v, out, args, state: ComfyFluxPass) -> ImageAttention:
        if block.patch_key[0] == "double_block":
            state.txt_len = args["txt"].shape[1]  # a block before may have changed the text length
        image = slice(state.txt_len, state.txt_len + state.n_img)
        q_img = q[:, :, image]
        pe = args.get("pe")
        # The queries before RoPE (ConceptAttention's vectors): each position's rotation undone.
        q_plain = q_img if pe is None else comfy_rope(q_img, pe[:, :, image].transpose(-1, -2), v)
        return ImageAttention(q_img, k[:, :, image], v[:, :, image], q_plain, out[:, :, image])

    def comfy_conditioning(self, args: dict, state: ComfyFluxPass) -> torch.Tensor:
        vec = args["vec"]
        return vec if state.vec_shift is None else vec + state.vec_shift.to(vec)

    def comfy_embed(self, diffusion_model: nn.Module, embeds: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
        return diffusion_model.txt_in(embeds)

    def comfy_text_like(self, block: ComfyBlock, args: dict) -> torch.Tensor:
        return args["txt"] if block.patch_key[0] == "double_block" else args["img"]


FLUX1 = Flux1()
