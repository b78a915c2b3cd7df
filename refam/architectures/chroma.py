"""Chroma (Chroma1-HD and its v4x / v5x predecessors; not Chroma Radiance): what RefAM needs to
know about it, on diffusers and in ComfyUI.

FLUX.1-schnell's blocks and token layout with the modulation moved out of them:

* **no modulation layers in the blocks**: a distilled approximator turns (timestep, guidance,
  index) into every block's modulation sets once per pass, and each block is handed its slice —
  a double block its image and its text sets, a single block one set. The branch takes the text
  sets; they depend on the timestep only (guidance is 0), never on the caption;
* **T5-XXL only**: no CLIP, so no pooled vector (``branch_pooled`` has nothing to swap);
* **text ids are zero** as in FLUX.1, so RoPE leaves text unchanged and the expression needs no
  rotation; 16-channel latents packed 2x2 into tokens, FLUX.1's VAE.

Sequence ``[text ; image]`` on both hosts. diffusers hands single blocks ``[text ; image]`` as one
tensor: the image starts after the caption, whose length FLUX.1's pass state holds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from refam.architectures.base import TextEncoder, class_named
from refam.architectures.flux import (
    ComfyFluxPass,
    DiffusersFluxPass,
    Flux1,
    double_and_single_blocks,
    pack_modulations,
    token_grid,
    unsupported_flux_variant,
)
from refam.attention import ImageAttention
from refam.operating_point import OperatingPoint

__all__ = ["CHROMA", "CHROMA_IMAGE", "Chroma"]

# Untuned: no operating point is published for RefAM on Chroma, so FLUX.1's σ (the paper's
# timestep 750) and size. No guidance embedding: both hosts feed the approximator guidance 0, and a
# caption's "guidance" would change every modulation set in ComfyUI. T5 runs unpadded in ComfyUI
# (diffusers pads but masks), so expressions are not padded. Multi-step schedules shift as FLUX.1-dev's
# (diffusers' ChromaPipeline; ComfyUI's ModelSamplingFlux at μ 1.15 is that shift at 1024²).
CHROMA_IMAGE = OperatingPoint(sigma=0.75, resolution=1024, guidance=None, text_length=None, time_shift=(0.5, 1.15))

# Modulation sets of a diffusers double block's ``temb [B, 12, D]``: image first, then text.
_IMAGE_SETS = 6


class Chroma(Flux1):
    name = "chroma"
    label = "Chroma"
    modality = "image"
    # diffusers' ChromaPipeline encodes 512 T5 tokens (masked); ComfyUI's PixArt tokenizer pads none.
    text_encoder = TextEncoder(name="t5xxl", pad_length=512)
    operating_point = CHROMA_IMAGE

    # -- diffusers -----------------------------------------------------------------------------
    def diffusers_matches(self, transformer: nn.Module) -> bool:
        return (
            hasattr(transformer, "distilled_guidance_layer")
            and hasattr(transformer, "transformer_blocks")
            and hasattr(transformer, "single_transformer_blocks")
        )

    def diffusers_blocks(self, transformer: nn.Module) -> list[tuple[str, nn.Module]]:
        # No signature check as FLUX.1's: Chroma's single blocks take [text ; image] by design.
        if not self.diffusers_matches(transformer):
            raise TypeError(f"expected a diffusers ChromaTransformer2DModel, got {type(transformer).__name__}")
        return double_and_single_blocks(transformer)

    def diffusers_conditioning(self, name: str, inputs: dict[str, Any], state: DiffusersFluxPass) -> torch.Tensor:
        temb = inputs["temb"]
        return temb[:, _IMAGE_SETS:] if name.startswith("double") else temb

    def diffusers_image_attention(self, block, q, k, v, out, inputs, state: DiffusersFluxPass) -> ImageAttention:
        if not hasattr(block, "ff_context"):
            # FLUX.1's reading finds the image where hidden_states' tokens start among the
            # projected ones; a single block's hidden_states hold the caption first.
            inputs = {**inputs, "hidden_states": inputs["hidden_states"][:, state.txt_len :]}
        return super().diffusers_image_attention(block, q, k, v, out, inputs, state)

    # -- ComfyUI -------------------------------------------------------------------------------
    def comfy_matches(self, diffusion_model: nn.Module) -> bool:
        # Chroma Radiance subclasses Chroma but works in pixel space through a NeRF head.
        return class_named(diffusion_model, "ldm.chroma.model", "Chroma") and not class_named(
            diffusion_model, "ldm.chroma_radiance.model", "ChromaRadiance"
        )

    def comfy_check(self, diffusion_model: nn.Module) -> None:
        skipped = [*getattr(diffusion_model, "skip_mmdit", []), *getattr(diffusion_model, "skip_dit", [])]
        if skipped:
            # A skipped block runs neither itself nor its patch: the branch would jump a block.
            raise NotImplementedError(
                "RefAM does not support a Chroma MODEL that skips blocks (skip_mmdit / skip_dit); "
                "load it without block skipping"
            )
        variant = unsupported_flux_variant(diffusion_model, shared_modulation=True)
        if variant is not None:
            raise NotImplementedError(f"RefAM does not support {variant} yet; its Chroma capture runs on Chroma MODELs")

    def comfy_start_pass(self, diffusion_model, args, kwargs, branch_pooled) -> tuple[ComfyFluxPass, dict, int]:
        # Chroma._forward(x, timestep, context, guidance, control, transformer_options): no pooled
        # vector, so branch_pooled changes nothing.
        x, context = args[0], args[2]
        options = args[5] if len(args) > 5 else kwargs.get("transformer_options")
        grid = token_grid(x.shape, diffusion_model.patch_size)
        state = ComfyFluxPass(txt_len=context.shape[1], n_img=grid[0] * grid[1], vec_shift=None)
        return state, options if options is not None else {}, x.shape[0]

    def comfy_conditioning(self, args: dict, state: ComfyFluxPass) -> torch.Tensor:
        vec = args["vec"]
        # A double block gets ((image sets), (text sets)); a single block its one set.
        return pack_modulations(vec[1]) if isinstance(vec, tuple) else pack_modulations([vec])


CHROMA = Chroma()
