"""FLUX.2 klein on diffusers as a RefAM backend: :class:`DiffusersFlux`'s passes with FLUX.2's text
encoder and latent layout.

Text: Qwen3 (klein 4B / 9B) in the chat template the Flux2KleinPipeline uses, 512 tokens, hidden
layers 9, 18 and 27 concatenated (``[h9 | h18 | h27]`` per token); the expressions through the same
encoder in the same template (their tokens, roles and template, from
:func:`refam.expression.tokenize_expression`). Image: the FLUX.2 VAE's mode, 2x2 patches, normalised by
the VAE's latent batch-norm statistics; one token per patch (the transformer's patch size is 1);
positions ``(t, h, w, l)``: the image at ``(0, row, column, 0)``, text token ``l`` at ``(0, 0, 0, l)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from refam.architectures.flux2 import KLEIN_TEMPLATE, TEXT_POSITIONS
from refam.attention import ExpressionLayout, pack_expressions
from refam.backends.diffusers_flux import DiffusersFlux
from refam.expression import TokenizedExpression
from refam.magnet_vectors import magnet_inputs

__all__ = ["KLEIN_LAYERS", "DiffusersFlux2"]

# The Qwen3 hidden states FLUX.2 klein is conditioned on (Flux2KleinPipeline, ComfyUI's klein_te).
KLEIN_LAYERS = (9, 18, 27)


@dataclass
class DiffusersFlux2(DiffusersFlux):
    """FLUX.2 klein loaded with diffusers / transformers: ``text_encoder`` is its Qwen3 (a
    ``Qwen3Model`` or ``Qwen3ForCausalLM``), ``text_tokenizer`` its tokenizer; ``vae`` an
    ``AutoencoderKLFlux2``. FLUX.1's T5 / CLIP fields stay empty."""

    t5: nn.Module | None = None
    t5_tokenizer: Any = None
    clip: nn.Module | None = None
    clip_tokenizer: Any | None = None
    text_encoder: nn.Module | None = None
    text_tokenizer: Any = None
    name: str = "flux2-klein"
    # What the text path reads: the encoder's hidden states concatenated, the chat template, and the
    # length captions are padded to (None: unpadded, the pads stripped as Z-Image's pipeline does).
    text_layers = KLEIN_LAYERS
    template = KLEIN_TEMPLATE
    caption_length = TEXT_POSITIONS
    architecture_name = "flux2"

    def __post_init__(self) -> None:
        if self.text_encoder is None or self.text_tokenizer is None:
            raise ValueError(f"{self.name} needs its Qwen3 text encoder and tokenizer (text_encoder=, text_tokenizer=)")
        super().__post_init__()
        if self.architecture.name != self.architecture_name:
            raise TypeError(f"{type(self).__name__} runs {self.architecture_name} transformers; got {self.architecture.label}")

    def _modules(self) -> list[nn.Module]:
        return [m for m in (self.transformer, self.vae, self.text_encoder) if m is not None]

    # -- text ------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self.text_tokenizer

    @property
    def text_pad_length(self) -> None:
        return None  # a causal encoder: padding after an expression never reaches it

    @property
    def text_template(self) -> tuple[str, str]:
        return self.template

    @torch.no_grad()
    def _hidden_layers(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        encoder = getattr(self.text_encoder, "model", self.text_encoder)  # Qwen3ForCausalLM -> its Qwen3Model
        with self._on_device(self.text_encoder):
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            states = encoder(**inputs, attention_mask=mask.to(self.device), output_hidden_states=True).hidden_states
            return torch.cat([states[i] for i in self.text_layers], dim=-1).to(self.dtype)

    @torch.no_grad()
    def encode_caption(self, caption: str) -> tuple[torch.Tensor, None]:
        """``(prompt_embeds [1, T, 3·D], None)``: the caption in the template, padded to 512 as the
        Flux2KleinPipeline pads it (the transformer sees the pads; FLUX.2 has no pooled vector)."""
        padding = {"padding": "max_length"} if self.caption_length else {}
        enc = self.text_tokenizer(
            [self.template[0] + caption + self.template[1]],
            max_length=self.caption_length or TEXT_POSITIONS,
            truncation=True,
            return_tensors="pt",
            **padding,
        )
        return self._hidden_layers({"input_ids": enc.input_ids}, enc.attention_mask), None

    @torch.no_grad()
    def encode_expressions(self, expressions: Sequence[TokenizedExpression]) -> tuple[torch.Tensor, ExpressionLayout]:
        """The encoder's states of every expression's tokens (its template included), back to back."""
        width = max(len(e.ids) for e in expressions)
        pad = int(self.text_tokenizer.pad_token_id)
        ids = torch.tensor([e.ids + [pad] * (width - len(e.ids)) for e in expressions])
        mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in expressions])
        table_device = next(self.text_encoder.parameters()).device
        inputs = magnet_inputs(self.text_encoder, ids.to(table_device), expressions)
        return pack_expressions(self._hidden_layers(inputs, mask), [len(e.ids) for e in expressions])

    # -- image -----------------------------------------------------------------------------------
    @property
    def latent_multiple(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) * 2

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> normalised latents ``[B, 4·C, H/16, W/16]``."""
        with self._on_device(self.vae):
            vae_dtype = next(self.vae.parameters()).dtype
            z = self.vae.encode(pixels.to(self.device, vae_dtype)).latent_dist.mode()
            b, c, h, w = z.shape
            patches = z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
            bn = self.vae.bn
            mean = bn.running_mean.view(1, -1, 1, 1).to(patches)
            std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(patches)
        return ((patches - mean) / std).to(self.dtype)

    def token_grid(self, latents: torch.Tensor) -> tuple[int, int]:
        return latents.shape[2], latents.shape[3]

    def to_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.flatten(2).transpose(1, 2)

    def position_ids(self, grid: tuple[int, int], text_length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = grid
        img_ids = torch.zeros(h * w, 4, device=device)
        img_ids[:, 1] = torch.arange(h, device=device).repeat_interleave(w)
        img_ids[:, 2] = torch.arange(w, device=device).repeat(h)
        txt_ids = torch.zeros(text_length, 4, device=device)
        txt_ids[:, 3] = torch.arange(text_length, device=device)
        return img_ids, txt_ids
