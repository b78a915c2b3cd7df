"""Mochi 1 on diffusers as a RefAM video backend: the clip path and one capture pass.

Clip path: pad to ``6k + 1`` frames, video VAE, Mochi's latent normalisation, noise to ``σ``, ONE
transformer forward at Mochi's (inverted) timestep with the expression branch
(:mod:`refam.architectures.mochi`, :class:`refam.backends.diffusers_capture.DiffusersCapture`);
one capture image per latent frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from refam.architectures.mochi import (
    MOCHI,
    mochi_timestep,
    pad_clip,
    per_latent_frame,
    valid_latent_frames,
)
from refam.attention import (
    CaptureComplete,
    CapturedAttention,
    ExpressionLayout,
    ImageGeometry,
    pack_expressions,
)
from refam.backends.diffusers_capture import capture_attention
from refam.expression import TokenizedExpression
from refam.images import model_size, to_model_pixels
from refam.magnet_vectors import encode_with_magnets
from refam.noise import capture_noise, check_sigma
from refam.operating_point import FROM_BACKEND, FromBackend, OperatingPoint

__all__ = ["DiffusersMochi"]


@dataclass
class DiffusersMochi:
    """Mochi 1 (or a Mochi-architecture model) on diffusers: transformer, video VAE, T5."""

    transformer: nn.Module
    vae: nn.Module
    t5: nn.Module
    t5_tokenizer: Any
    name: str = "mochi"
    operating_point: OperatingPoint = MOCHI.operating_point
    t5_max_length: int = MOCHI.text_encoder.pad_length
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    modality = "video"

    def __post_init__(self) -> None:
        MOCHI.diffusers_blocks(self.transformer)  # fails early, naming the class, if this is not Mochi
        self.device = torch.device(self.device)
        for m in (self.transformer, self.vae, self.t5):
            m.to(self.device).eval().requires_grad_(False)

    @property
    def tokenizer(self) -> Any:
        return self.t5_tokenizer

    @property
    def text_pad_length(self) -> int:
        return self.t5_max_length

    @property
    def latent_multiple(self) -> int:
        return 8 * self.transformer.config.patch_size

    @torch.no_grad()
    def _t5(
        self, ids: torch.Tensor, mask: torch.Tensor, expressions: Sequence[TokenizedExpression] = ()
    ) -> torch.Tensor:
        # Mochi encodes prompts with T5's attention mask (unlike FLUX).
        return encode_with_magnets(self.t5, ids.to(self.device), expressions, attention_mask=mask.to(self.device)).to(
            self.dtype
        )

    @torch.no_grad()
    def encode_caption(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.t5_tokenizer(
            [caption], padding="max_length", max_length=self.t5_max_length, truncation=True, return_tensors="pt"
        )
        return self._t5(tok.input_ids, tok.attention_mask), tok.attention_mask

    @torch.no_grad()
    def encode_expressions(self, expressions: Sequence[TokenizedExpression]) -> tuple[torch.Tensor, ExpressionLayout]:
        ids = torch.tensor([e.ids for e in expressions])
        mask = torch.tensor([[1] * e.valid_length + [0] * (len(e.ids) - e.valid_length) for e in expressions])
        embeds = self._t5(ids, mask, expressions)
        return pack_expressions(embeds, [e.valid_length for e in expressions])

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """``[T, H, W, 3]`` uint8 (T = 6k + 1) -> normalised latents ``[1, C, T', h, w]``."""
        pixels = to_model_pixels(frames, size).permute(1, 0, 2, 3)[None]  # [1, 3, T, h, w]
        cfg = self.vae.config
        z = self.vae.encode(pixels.to(self.device, next(self.vae.parameters()).dtype)).latent_dist.mode()
        mean = torch.tensor(cfg.latents_mean, device=z.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, device=z.device).view(1, -1, 1, 1, 1)
        return ((z - mean) * cfg.scaling_factor / std).to(self.dtype)

    @torch.no_grad()
    def capture(
        self,
        frames: np.ndarray,
        expressions: Sequence[TokenizedExpression],
        caption: str = "",
        *,
        sigma: float | FromBackend = FROM_BACKEND,
        seed: int = 0,
        resolution: int | None | FromBackend = FROM_BACKEND,
        blocks: Iterable[int | str] | None = None,
        progress: Callable[[str], None] | None = None,
        **_ignored: Any,
    ) -> CapturedAttention:
        """One Mochi pass at ``σ`` on a clip ``[T, H, W, 3]`` uint8; one capture "image" per latent frame.
        What is not given comes from :attr:`operating_point`.

        Clips whose length is not ``6k + 1`` are padded with their last frame (the padding's
        latent frames are dropped from the result).
        """
        point = self.operating_point.fill(sigma=sigma, resolution=resolution)
        sigma, resolution = point["sigma"], point["resolution"]
        check_sigma(sigma)
        say = progress or (lambda _s: None)
        n, height, width = frames.shape[:3]
        frames = pad_clip(frames)
        size = model_size((height, width), resolution, self.latent_multiple)
        say("encoding text")
        caption_embeds, caption_mask = self.encode_caption(caption)
        expr_embeds, layout = self.encode_expressions(expressions)
        say("encoding video")
        latents = self.encode_video(frames, size)
        noise = capture_noise(latents.shape, seed).to(latents)
        noisy = (1.0 - sigma) * latents + sigma * noise
        t_lat = latents.shape[2]
        patch = self.transformer.config.patch_size
        grid = (latents.shape[3] // patch, latents.shape[4] // patch)
        say("capturing attention")
        session = capture_attention(
            self.transformer, expr_embeds, layout, architecture=MOCHI, blocks=blocks, stop_after_last=True
        )
        with session as s, suppress(CaptureComplete):
            self.transformer(
                hidden_states=noisy.to(self.device),
                encoder_hidden_states=caption_embeds.to(self.device),
                timestep=torch.tensor([mochi_timestep(sigma)], device=self.device),
                encoder_attention_mask=caption_mask.to(self.device),
                return_dict=False,
            )
        blocks_out = per_latent_frame(s.records, t_lat, keep=valid_latent_frames(n))
        return CapturedAttention(
            blocks=blocks_out,
            expressions=list(expressions),
            layout=layout,
            geometry=ImageGeometry(original_size=(height, width), model_size=size, grid=grid),
            num_blocks=len(s.names),
            meta={"backend": "diffusers-mochi", "model": self.name, "sigma": sigma, "seed": seed, "frames": n},
        )
