"""Z-Image on diffusers as a RefAM backend: :class:`DiffusersFlux2`'s Qwen3 text path (the second
to last hidden layer, Z-Image's template, captions unpadded) with FLUX.1's VAE and latents, and
Z-Image's calling convention: lists of per-image latents and captions, the flipped time ``1 - σ``,
and the negated velocity it returns (its pipeline negates it too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from refam.architectures.z_image import Z_IMAGE_TEMPLATE
from refam.backends.diffusers_flux import DiffusersFlux, FluxInputs
from refam.backends.diffusers_flux2 import DiffusersFlux2

__all__ = ["DiffusersZImage"]


@dataclass
class DiffusersZImage(DiffusersFlux2):
    """Z-Image (Turbo) loaded with diffusers / transformers: ``text_encoder`` its Qwen3-4B,
    ``vae`` FLUX.1's autoencoder."""

    name: str = "z-image"
    text_layers = (-2,)
    template = Z_IMAGE_TEMPLATE
    caption_length = None
    architecture_name = "z_image"

    # FLUX.1's latent normalisation; the 2x2 patches are the transformer's own.
    latent_multiple = DiffusersFlux.latent_multiple
    encode_images = DiffusersFlux.encode_images
    token_grid = DiffusersFlux.token_grid

    def to_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        return latents  # the transformer patchifies each image itself

    def position_ids(self, grid: tuple[int, int], text_length: int, device: torch.device) -> tuple[None, None]:
        return None, None  # Z-Image builds its positions inside the forward

    def transformer_inputs(self, packed: torch.Tensor, sigma: float, flux: FluxInputs) -> dict[str, Any]:
        latents = packed.to(self.device, self.dtype)
        caption = flux.prompt_embeds.to(self.device, self.dtype)[0]
        return {
            "x": [latent[:, None] for latent in latents],  # [C, F=1, h, w] each
            "t": torch.full((len(latents),), 1.0 - sigma, device=self.device, dtype=self.dtype),
            "cap_feats": [caption] * len(latents),
            "return_dict": False,
        }

    def velocity(self, output: Any) -> torch.Tensor:
        return -torch.stack([o[:, 0] for o in output[0]]).float()
