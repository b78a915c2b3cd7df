"""A FLUX model on diffusers as a RefAM attention backend: the image path and one capture pass.

Image path (paper §3.2, following ConceptAttention): VAE encode -> ``(z - shift) * scale`` -> noise to ``σ`` with a
seeded generator -> 2x2 packing -> ONE transformer forward at timestep ``σ`` conditioned on the
caption (or the empty prompt). The expression branch rides along that forward; all expressions
of the call share it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from refam.architectures.flux import FLUX1, FLUX_IMAGE, flux_point, latent_image_ids, pack_latents
from refam.attention import CapturedAttention, ExpressionLayout, ImageGeometry, pack_expressions
from refam.backends.diffusers_capture import capture_attention, run_until_captured
from refam.expression import TokenizedExpression
from refam.images import model_size, to_model_pixels
from refam.noise import capture_noise, check_sigma
from refam.operating_point import FROM_BACKEND, FromBackend, OperatingPoint
from refam.variants import BRANCH_POOLED

__all__ = ["DiffusersFlux"]

ProgressFn = Callable[[str], None]


@dataclass
class DiffusersFlux:
    """FLUX (or a FLUX-architecture model) loaded with diffusers / transformers.

    ``clip`` provides FLUX's pooled vector; ``vae`` may be any module with diffusers'
    ``encode(x).latent_dist`` API and ``config.scaling_factor`` / ``shift_factor``.
    With ``offload`` every component lives on the CPU and visits ``device`` only while it runs.
    """

    transformer: nn.Module
    vae: nn.Module
    t5: nn.Module
    t5_tokenizer: Any
    clip: nn.Module | None
    clip_tokenizer: Any | None
    name: str = "flux"
    t5_max_length: int = FLUX1.text_encoder.pad_length
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    offload: bool = False
    # A model trained at one size only (the toy) sees every image stretched to it; the geometry
    # maps points back exactly either way.
    native_size: tuple[int, int] | None = None
    operating_point: OperatingPoint | None = None  # None: FLUX.1-dev's or schnell's, read off the weights
    modality = "image"

    def __post_init__(self) -> None:
        FLUX1.diffusers_blocks(self.transformer)  # fails early, naming the class, if this is not FLUX
        if self.operating_point is None:
            self.operating_point = flux_point(bool(getattr(self.transformer.config, "guidance_embeds", False)))
        self.device = torch.device(self.device)
        home = torch.device("cpu") if self.offload else self.device
        for module in self._modules():
            module.to(home).eval().requires_grad_(False)

    def _modules(self) -> list[nn.Module]:
        return [m for m in (self.transformer, self.vae, self.t5, self.clip) if m is not None]

    # -- what the pipeline needs to know ------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self.t5_tokenizer

    @property
    def text_pad_length(self) -> int:
        return self.operating_point.text_length or self.t5_max_length

    @property
    def latent_multiple(self) -> int:
        """Pixels per latent patch: VAE downsampling x FLUX's 2x2 packing."""
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return down * 2

    @property
    def num_blocks(self) -> int:
        return len(FLUX1.diffusers_blocks(self.transformer))

    @contextmanager
    def _on_device(self, module: nn.Module | None) -> Iterator[None]:
        if module is None or not self.offload:
            yield
            return
        module.to(self.device)
        try:
            yield
        finally:
            module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    # -- text ------------------------------------------------------------------------------------
    @torch.no_grad()
    def _t5(self, ids: torch.Tensor) -> torch.Tensor:
        with self._on_device(self.t5):
            # No attention mask, as the FLUX pipelines do: the model was trained on embeddings of
            # padded prompts, so the expression is encoded the same way.
            return self.t5(ids.to(self.device), output_hidden_states=False)[0].to(self.dtype)

    @torch.no_grad()
    def encode_caption(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prompt_embeds [1, T, D], pooled [1, P])`` for the denoising pass."""
        ids = self.t5_tokenizer(
            [caption],
            padding="max_length",
            max_length=self.t5_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        embeds = self._t5(ids)
        return embeds, self._pooled(caption)

    @torch.no_grad()
    def _pooled(self, caption: str) -> torch.Tensor:
        dim = self.transformer.config.pooled_projection_dim
        if self.clip is None:
            return torch.zeros(1, dim, dtype=self.dtype)
        max_len = getattr(self.clip_tokenizer, "model_max_length", 77)
        max_len = 77 if max_len > 1000 else max_len
        ids = self.clip_tokenizer(
            [caption], padding="max_length", max_length=max_len, truncation=True, return_tensors="pt"
        ).input_ids
        with self._on_device(self.clip):
            out = self.clip(ids.to(self.device), output_hidden_states=False)
        return out.pooler_output.to(self.dtype)

    @torch.no_grad()
    def encode_expressions(
        self, expressions: Sequence[TokenizedExpression]
    ) -> tuple[torch.Tensor, ExpressionLayout]:
        """T5 embeddings of every expression's non-padding tokens, back to back: ``[1, L, D]``."""
        ids = torch.tensor([e.ids for e in expressions])
        embeds = self._t5(ids)
        return pack_expressions(embeds, [e.valid_length for e in expressions])

    # -- image -----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> normalised latents ``[B, C, H/8, W/8]``."""
        cfg = self.vae.config
        with self._on_device(self.vae):
            vae_dtype = next(self.vae.parameters()).dtype
            dist = self.vae.encode(pixels.to(self.device, vae_dtype)).latent_dist
            # The distribution's mode keeps the latent deterministic; the seed only drives ε.
            z = dist.mode()
        shift = getattr(cfg, "shift_factor", None) or 0.0
        return ((z - shift) * cfg.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def capture(
        self,
        images: np.ndarray,
        expressions: Sequence[TokenizedExpression],
        caption: str = "",
        *,
        sigma: float | FromBackend = FROM_BACKEND,
        seed: int = 0,
        guidance: float | None | FromBackend = FROM_BACKEND,
        resolution: int | None | FromBackend = FROM_BACKEND,
        blocks: Iterable[int] | None = None,
        progress: ProgressFn | None = None,
        branch_pooled: str = BRANCH_POOLED[0],
    ) -> CapturedAttention:
        """One forward pass at ``σ`` on ``images [B, H, W, 3]`` uint8 with every expression's branch;
        what is not given comes from :attr:`operating_point`."""
        say = progress or (lambda _s: None)
        say("encoding text")
        prompt_embeds, pooled = self.encode_caption(caption)
        expr_embeds, layout = self.encode_expressions(expressions)
        captured = self.capture_encoded(
            images,
            expressions,
            prompt_embeds,
            pooled,
            expr_embeds,
            layout,
            sigma=sigma,
            seed=seed,
            guidance=guidance,
            resolution=resolution,
            blocks=blocks,
            progress=progress,
            branch_pooled=branch_pooled,
        )
        captured.meta["caption"] = caption
        return captured

    @torch.no_grad()
    def capture_encoded(
        self,
        images: np.ndarray,
        expressions: Sequence[TokenizedExpression],
        prompt_embeds: torch.Tensor,
        pooled: torch.Tensor,
        expr_embeds: torch.Tensor,
        layout: ExpressionLayout,
        *,
        sigma: float | FromBackend = FROM_BACKEND,
        seed: int = 0,
        guidance: float | None | FromBackend = FROM_BACKEND,
        resolution: int | None | FromBackend = FROM_BACKEND,
        blocks: Iterable[int] | None = None,
        progress: ProgressFn | None = None,
        branch_pooled: str = BRANCH_POOLED[0],
    ) -> CapturedAttention:
        """:meth:`capture` with the text already encoded (caption ``[1, T, D]``, pooled, expressions).
        ``branch_pooled`` (:data:`refam.variants.BRANCH_POOLED`): the pooled vector the expression
        branch is modulated with."""
        point = self.operating_point.fill(sigma=sigma, guidance=guidance, resolution=resolution)
        sigma, guidance, resolution = point["sigma"], point["guidance"], point["resolution"]
        check_sigma(sigma)
        say = progress or (lambda _s: None)
        batch, height, width = images.shape[:3]
        size = self.native_size or model_size((height, width), resolution, self.latent_multiple)

        say("encoding image")
        latents = self.encode_images(to_model_pixels(images, size))
        noise = capture_noise(latents.shape, seed).to(latents)
        noisy = (1.0 - sigma) * latents + sigma * noise
        grid = (latents.shape[2] // 2, latents.shape[3] // 2)

        say("capturing attention")
        device = self.device
        kwargs: dict[str, Any] = dict(
            hidden_states=pack_latents(noisy).to(device),
            encoder_hidden_states=prompt_embeds.to(device).expand(batch, -1, -1),
            pooled_projections=pooled.to(device).expand(batch, -1),
            timestep=torch.full((batch,), sigma, device=device, dtype=self.dtype),
            img_ids=latent_image_ids(*grid, device=device),
            txt_ids=torch.zeros(prompt_embeds.shape[1], 3, device=device),
            return_dict=False,
        )
        if getattr(self.transformer.config, "guidance_embeds", False):
            if guidance is None:
                raise ValueError(f"{self.name} has a guidance embedding: give guidance (FLUX.1-dev: {FLUX_IMAGE.guidance})")
            kwargs["guidance"] = torch.full((batch,), guidance, device=device, dtype=torch.float32)
        with self._on_device(self.transformer):
            shift = FLUX1.diffusers_pooled_shift(self.transformer, kwargs["pooled_projections"], branch_pooled)
            with capture_attention(
                self.transformer,
                expr_embeds,
                layout,
                architecture=FLUX1,
                blocks=blocks,
                stop_after_last=True,
                vec_shift=shift,
            ) as session:
                run_until_captured(self.transformer, **kwargs)
        return CapturedAttention(
            blocks=session.records,
            expressions=list(expressions),
            layout=layout,
            geometry=ImageGeometry(original_size=(height, width), model_size=size, grid=grid),
            num_blocks=self.num_blocks,
            meta={
                "backend": "diffusers-flux",
                "model": self.name,
                "sigma": sigma,
                "seed": seed,
                "branch_pooled": branch_pooled,
            },
        )
