"""Qwen-Image on diffusers as a RefAM backend: :class:`DiffusersFlux2`'s LLM text path on
Qwen2.5-VL (its last hidden state; the system prompt the encoder reads and the DiT never sees),
the Qwen-Image VAE (one frame, normalised per channel) and FLUX's 2x2 packing.

The caption is encoded as QwenImagePipeline encodes it: inside the full prompt, its first 34
tokens dropped. An expression's tokens (its own, its magnets and the 5 closing template tokens)
are encoded behind the same 34-token prefix, which is then dropped too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from refam.architectures.qwen_image import QWEN_IMAGE_PROMPT, QWEN_IMAGE_TEMPLATE
from refam.attention import ExpressionLayout, pack_expressions
from refam.backends.diffusers_flux import DiffusersFlux, FluxInputs
from refam.backends.diffusers_flux2 import DiffusersFlux2
from refam.expression import Token, TokenizedExpression, TokenRole
from refam.magnet_vectors import magnet_inputs

__all__ = ["DiffusersQwenImage"]

# The longest caption QwenImagePipeline encodes after the prefix (its tokenizer_max_length).
CAPTION_TOKENS = 1024


@dataclass
class DiffusersQwenImage(DiffusersFlux2):
    """Qwen-Image loaded with diffusers / transformers: ``text_encoder`` its Qwen2.5-VL (the whole
    model or its text decoder), ``vae`` an ``AutoencoderKLQwenImage``."""

    name: str = "qwen-image"
    text_layers = (-1,)
    template = QWEN_IMAGE_TEMPLATE
    caption_length = None
    architecture_name = "qwen_image"

    token_grid = DiffusersFlux.token_grid
    to_tokens = DiffusersFlux.to_tokens

    @property
    def latent_multiple(self) -> int:
        """Pixels per token: the VAE's spatial downsampling (one step per level) x the 2x2 packing."""
        return 2 ** (len(self.vae.config.dim_mult) - 1) * 2

    def _prefix(self) -> list[int]:
        return [int(i) for i in self.text_tokenizer(QWEN_IMAGE_PROMPT[0], add_special_tokens=False)["input_ids"]]

    @torch.no_grad()
    def encode_caption(self, caption: str) -> tuple[torch.Tensor, None]:
        prefix = len(self._prefix())
        enc = self.text_tokenizer(
            [QWEN_IMAGE_PROMPT[0] + caption + QWEN_IMAGE_PROMPT[1]],
            max_length=CAPTION_TOKENS + prefix,
            truncation=True,
            return_tensors="pt",
        )
        return self._hidden_layers({"input_ids": enc.input_ids}, enc.attention_mask)[:, prefix:], None

    @torch.no_grad()
    def encode_expressions(self, expressions: Sequence[TokenizedExpression]) -> tuple[torch.Tensor, ExpressionLayout]:
        prefix = self._prefix()
        width = max(len(e.ids) for e in expressions)
        pad = int(self.text_tokenizer.pad_token_id)
        ids = torch.tensor([prefix + e.ids + [pad] * (width - len(e.ids)) for e in expressions])
        mask = torch.tensor([[1] * (len(prefix) + len(e.ids)) + [0] * (width - len(e.ids)) for e in expressions])
        shifted = [_shifted(e, len(prefix)) for e in expressions]  # vector magnets behind the prefix
        table_device = next(self.text_encoder.parameters()).device
        states = self._hidden_layers(magnet_inputs(self.text_encoder, ids.to(table_device), shifted), mask)
        return pack_expressions(states[:, len(prefix) :], [len(e.ids) for e in expressions])

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> normalised latents ``[B, C, H/8, W/8]`` (one frame each)."""
        cfg = self.vae.config
        with self._on_device(self.vae):
            vae_dtype = next(self.vae.parameters()).dtype
            z = self.vae.encode(pixels.to(self.device, vae_dtype)[:, :, None]).latent_dist.mode()[:, :, 0]
        mean = torch.tensor(cfg.latents_mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
        std = torch.tensor(cfg.latents_std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
        return ((z - mean) / std).to(self.dtype)

    def position_ids(self, grid: tuple[int, int], text_length: int, device: torch.device) -> tuple[None, None]:
        return None, None  # Qwen-Image builds its positions from img_shapes

    def transformer_inputs(self, packed: torch.Tensor, sigma: float, flux: FluxInputs) -> dict[str, Any]:
        batch = packed.shape[0]
        return {
            "hidden_states": packed.to(self.device, self.dtype),
            "encoder_hidden_states": flux.prompt_embeds.to(self.device, self.dtype).expand(batch, -1, -1),
            "timestep": torch.full((batch,), sigma, device=self.device, dtype=self.dtype),
            "img_shapes": [(1, *flux.grid)] * batch,
            "return_dict": False,
        }


def _shifted(expression: TokenizedExpression, offset: int) -> TokenizedExpression:
    """The expression as seen behind ``offset`` prefix tokens (its vector magnets' positions moved)."""
    if not expression.vector_magnets:
        return expression
    prefix = [Token(0, "", TokenRole.EOS, -1, "")] * offset
    return dataclasses.replace(expression, tokens=prefix + list(expression.tokens))
