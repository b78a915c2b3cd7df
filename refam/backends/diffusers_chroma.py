"""Chroma on diffusers as a RefAM backend: :class:`DiffusersFlux`'s passes (FLUX.1's latents and
positions) with Chroma's text: T5-XXL only, no pooled vector, no guidance, prompts unpadded.

The caption is its tokens and ``</s>``, as ComfyUI's Chroma loader leaves it (no padding, no
mask). diffusers' ChromaPipeline pads to 512 and means to hide all pads but one from the
transformer; its mask is a float 0/1 added to the attention scores, so nothing is hidden (diffusers
issues #12116, #13619): ComfyUI's layout is the one both hosts can share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from refam.attention import ExpressionLayout, pack_expressions
from refam.backends.diffusers_flux import DiffusersFlux
from refam.expression import TokenizedExpression
from refam.magnet_vectors import magnet_inputs

__all__ = ["DiffusersChroma"]


@dataclass
class DiffusersChroma(DiffusersFlux):
    """Chroma loaded with diffusers / transformers (``clip`` stays None: Chroma has no CLIP)."""

    name: str = "chroma"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.architecture.name != "chroma":
            raise TypeError(f"DiffusersChroma runs Chroma transformers; got {self.architecture.label}")

    @property
    def text_pad_length(self) -> None:
        return None

    @torch.no_grad()
    def _t5_masked(self, ids: torch.Tensor, mask: torch.Tensor, expressions: Sequence[TokenizedExpression] = ()) -> torch.Tensor:
        with self._on_device(self.t5):
            inputs = magnet_inputs(self.t5, ids.to(self.device), expressions)
            return self.t5(**inputs, attention_mask=mask.to(self.device))[0].to(self.dtype)

    @torch.no_grad()
    def encode_caption(self, caption: str) -> tuple[torch.Tensor, None]:
        """``(prompt_embeds [1, T, D], None)``: the caption's tokens and ``</s>``, unpadded."""
        enc = self.t5_tokenizer([caption], max_length=self.t5_max_length, truncation=True, return_tensors="pt")
        return self._t5_masked(enc.input_ids, enc.attention_mask), None

    @torch.no_grad()
    def encode_expressions(self, expressions: Sequence[TokenizedExpression]) -> tuple[torch.Tensor, ExpressionLayout]:
        """Each expression's T5 states as if encoded alone (one masked batch), back to back."""
        lengths = [e.valid_length for e in expressions]
        width = max(lengths)
        pad = int(self.t5_tokenizer.pad_token_id)
        ids = torch.tensor([e.ids[:n] + [pad] * (width - n) for e, n in zip(expressions, lengths, strict=True)])
        mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
        return pack_expressions(self._t5_masked(ids, mask, expressions), lengths)
