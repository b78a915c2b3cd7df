"""A FLUX model on diffusers as a RefAM attention backend: the image path and its passes.

Image path (paper §3.2, following ConceptAttention): VAE encode -> ``(z - shift) * scale`` -> noise to ``σ`` with a
seeded generator -> 2x2 packing -> ONE transformer forward at timestep ``σ`` conditioned on the
caption (or the empty prompt). The expression branch rides along that forward; all expressions
of the call share it. The other feature modes (:mod:`refam.features`) run one such pass per σ,
or RF-inversion followed by denoising with the branch on the collected steps (:mod:`refam.flow`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from refam.architectures import diffusers_architecture
from refam.architectures.flux import FLUX1, latent_image_ids, pack_latents
from refam.architectures.flux2 import image_point
from refam.attention import BlockCapture, CapturedAttention, ExpressionLayout, ImageGeometry, pack_expressions
from refam.backends.diffusers_capture import capture_attention, run_until_captured
from refam.expression import TokenizedExpression
from refam.features import FeatureOptions, PassAverage
from refam.flow import denoise, inversion_sigmas, invert
from refam.images import model_size, to_model_pixels
from refam.magnet_vectors import encode_with_magnets
from refam.noise import capture_noise
from refam.operating_point import FROM_BACKEND, FromBackend, OperatingPoint
from refam.variants import BRANCH_POOLED

__all__ = ["Branch", "DiffusersFlux", "FluxInputs"]

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
    takes_features = True  # single pass, several σ or RF-inversion (refam.features)

    def __post_init__(self) -> None:
        # Fails early, naming the class, if this is no FLUX-family image transformer.
        self.architecture = diffusers_architecture(self.transformer, "image")
        self.architecture.diffusers_blocks(self.transformer)
        if self.operating_point is None:
            guidance = bool(getattr(self.transformer.config, "guidance_embeds", False))
            self.operating_point = image_point(self.architecture, guidance)
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
        return len(self.architecture.diffusers_blocks(self.transformer))

    # -- latent layout (FLUX.1: 2x2 patches packed into tokens) -----------------------------------
    def token_grid(self, latents: torch.Tensor) -> tuple[int, int]:
        """The token grid of normalised latents ``[B, C, h, w]`` from :meth:`encode_images`."""
        return latents.shape[2] // 2, latents.shape[3] // 2

    def to_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (or noise of their shape) -> the transformer's tokens ``[B, N, C']``."""
        return pack_latents(latents)

    def position_ids(self, grid: tuple[int, int], text_length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(img_ids, txt_ids)`` of a forward: FLUX.1's (0, row, column) and zeros for the text."""
        return latent_image_ids(*grid, device=device), torch.zeros(text_length, 3, device=device)

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
    def _t5(self, ids: torch.Tensor, expressions: Sequence[TokenizedExpression] = ()) -> torch.Tensor:
        with self._on_device(self.t5):
            # No attention mask, as the FLUX pipelines do: the model was trained on embeddings of
            # padded prompts, so the expression is encoded the same way.
            return encode_with_magnets(self.t5, ids.to(self.device), expressions, output_hidden_states=False).to(self.dtype)

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
        embeds = self._t5(ids, expressions)
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
        features: FeatureOptions | None = None,
    ) -> CapturedAttention:
        """The expression branch on ``images [B, H, W, 3]`` uint8: one forward pass at ``σ`` (or what
        ``features`` asks for); what is not given comes from :attr:`operating_point`."""
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
            features=features,
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
        features: FeatureOptions | None = None,
    ) -> CapturedAttention:
        """:meth:`capture` with the text already encoded (caption ``[1, T, D]``, pooled, expressions).
        ``branch_pooled`` (:data:`refam.variants.BRANCH_POOLED`): the pooled vector the expression
        branch is modulated with; ``features``: one pass, one per σ, or the inversion's steps."""
        features = features or FeatureOptions()
        point = self.operating_point.fill(sigma=sigma, guidance=guidance, resolution=resolution)
        sigma, guidance, resolution = point["sigma"], point["guidance"], point["resolution"]
        sigma = features.single_sigma(sigma)
        say = progress or (lambda _s: None)
        batch, height, width = images.shape[:3]
        size = self.native_size or model_size((height, width), resolution, self.latent_multiple)

        say("encoding image")
        unpacked = self.encode_images(to_model_pixels(images, size)).float()
        grid = self.token_grid(unpacked)
        # The trajectory and the noising run in float32 whatever the model's dtype, as ComfyUI's do.
        latents = self.to_tokens(unpacked)
        noise = self.to_tokens(capture_noise(unpacked.shape, seed)).to(latents.device)
        flux = FluxInputs(self, prompt_embeds, pooled, grid, batch, guidance)
        branch = Branch(expr_embeds, layout, blocks, branch_pooled)
        meta: dict[str, Any] = {"features": features.describe()}
        with self._on_device(self.transformer):
            if features.mode == "inversion":
                average = PassAverage(layout, features.step_aggregation)
                schedule = features.schedule(self.operating_point.time_shift, grid[0] * grid[1])
                self.invert_and_denoise(
                    latents, noise, schedule, features, flux, branch=branch, average=average, progress=say
                )
                records = average.blocks()
                meta["features"]["collected_sigmas"] = features.collected_sigmas(schedule)
            elif features.sigmas and len(features.sigmas) > 1:
                average = PassAverage(layout, features.step_aggregation)
                for s in features.sigmas:
                    say(f"capturing attention at sigma {s}")
                    average.add(self.capture_latent((1.0 - s) * latents + s * noise, s, flux, branch))
                records = average.blocks()
            else:
                say("capturing attention")
                records = self.capture_latent((1.0 - sigma) * latents + sigma * noise, sigma, flux, branch)
        return CapturedAttention(
            blocks=records,
            expressions=list(expressions),
            layout=layout,
            geometry=ImageGeometry(original_size=(height, width), model_size=size, grid=grid),
            num_blocks=self.num_blocks,
            meta={
                "backend": "diffusers-flux",
                "architecture": self.architecture.label,
                "model": self.name,
                "sigma": sigma,
                "seed": seed,
                "branch_pooled": branch_pooled,
                **meta,
            },
        )

    # -- passes ----------------------------------------------------------------------------------
    def transformer_inputs(self, packed: torch.Tensor, sigma: float, flux: FluxInputs) -> dict[str, Any]:
        """The transformer's arguments for one pass on tokens from :meth:`to_tokens` at ``σ``."""
        return flux.kwargs(packed.to(self.device, self.dtype), sigma)

    def velocity(self, output: Any) -> torch.Tensor:
        """The flow's velocity (float32, laid out as :meth:`to_tokens`) from the transformer's output."""
        return output[0].float()

    def forward(self, packed: torch.Tensor, sigma: float, flux: FluxInputs) -> torch.Tensor:
        """The transformer's velocity at ``σ`` for packed latents ``[B, N, C·4]`` (float32 out)."""
        return self.velocity(self.transformer(**self.transformer_inputs(packed, sigma, flux)))

    def capture_latent(
        self, packed: torch.Tensor, sigma: float, flux: FluxInputs, branch: Branch
    ) -> list[BlockCapture]:
        """One pass at ``σ`` on the (already noised) packed latents with every expression's branch,
        stopped after the last selected block."""
        with branch.installed(self.transformer, flux, stop_after_last=True) as session:
            run_until_captured(self.transformer, **self.transformer_inputs(packed, sigma, flux))
        return session.records

    def invert_and_denoise(
        self,
        clean: torch.Tensor,
        noise: torch.Tensor,
        schedule: torch.Tensor,
        features: FeatureOptions,
        flux: FluxInputs,
        *,
        branch: Branch | None = None,
        average: PassAverage | None = None,
        progress: ProgressFn | None = None,
        on_step: Callable[[str, int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """RF-inversion of the packed clean latents along ``schedule`` walked backwards (``features``'
        γ), then denoising along it (η over its first steps); the branch rides the collected
        denoising steps (their records go to ``average``). Returns the reconstructed latents. The
        trajectory is the same with or without the branch: its hooks only read. Both stages are
        conditioned on the caption with the same guidance, as the paper conditions "both inversion
        and denoising on this caption" (App. A.1)."""
        collect = set(features.collected_steps())
        say = progress or (lambda _s: None)
        steps = len(schedule) - 1

        def inverting(x: torch.Tensor, s: float, i: int) -> torch.Tensor:
            if i == 0:
                say(f"inverting the image ({steps} steps)")
            return self.forward(x, s, flux)

        def denoising(x: torch.Tensor, s: float, i: int) -> torch.Tensor:
            if i == 0:
                say(f"denoising with the capture on {len(collect)} of {steps} steps")
            if branch is None or i not in collect:
                return self.forward(x, s, flux)
            with branch.installed(self.transformer, flux, stop_after_last=False) as session:
                v = self.forward(x, s, flux)
            if average is not None:
                average.add(session.records)
            return v

        def hook(stage: str):
            return None if on_step is None else (lambda i, x: on_step(stage, i, x))

        inverted = invert(inverting, clean, inversion_sigmas(schedule), noise, features.gamma, hook("inversion"))
        return denoise(
            denoising, inverted, schedule, hook("denoising"),
            clean=clean, eta=features.eta, eta_steps=features.controlled_steps,
        )  # fmt: skip


@dataclass
class FluxInputs:
    """Everything of a FLUX forward but the latents and σ: caption, pooled vector, positions, guidance."""

    backend: DiffusersFlux
    prompt_embeds: torch.Tensor
    pooled: torch.Tensor | None
    grid: tuple[int, int]
    batch: int
    guidance: float | None

    def __post_init__(self) -> None:
        device, transformer = self.backend.device, self.backend.transformer
        img_ids, txt_ids = self.backend.position_ids(self.grid, self.prompt_embeds.shape[1], device)
        self.base: dict[str, Any] = dict(
            encoder_hidden_states=self.prompt_embeds.to(device).expand(self.batch, -1, -1),
            img_ids=img_ids,
            txt_ids=txt_ids,
            return_dict=False,
        )
        if self.pooled is not None:  # FLUX.2 has no pooled text vector
            self.base["pooled_projections"] = self.pooled.to(device).expand(self.batch, -1)
        if getattr(transformer.config, "guidance_embeds", False):
            if self.guidance is None:
                raise ValueError(
                    f"{self.backend.name} has a guidance embedding: give guidance "
                    f"(its default: {self.backend.operating_point.guidance})"
                )
            self.base["guidance"] = torch.full((self.batch,), self.guidance, device=device, dtype=torch.float32)

    def kwargs(self, packed: torch.Tensor, sigma: float) -> dict[str, Any]:
        timestep = torch.full((self.batch,), sigma, device=packed.device, dtype=self.backend.dtype)
        return {**self.base, "hidden_states": packed, "timestep": timestep}


@dataclass
class Branch:
    """The expression branch of a capture: what to encode, which blocks, which pooled vector."""

    embeds: torch.Tensor
    layout: ExpressionLayout
    blocks: Iterable[int] | None
    pooled: str = BRANCH_POOLED[0]

    def __post_init__(self) -> None:
        # Read once per pass: a generator would be spent after the first.
        self.blocks = None if self.blocks is None else tuple(self.blocks)

    def installed(self, transformer: nn.Module, flux: FluxInputs, *, stop_after_last: bool):
        architecture = flux.backend.architecture
        pooled = flux.base.get("pooled_projections")
        shift = None if pooled is None else architecture.diffusers_pooled_shift(transformer, pooled, self.pooled)
        return capture_attention(
            transformer,
            self.embeds,
            self.layout,
            architecture=architecture,
            blocks=self.blocks,
            stop_after_last=stop_after_last,
            vec_shift=shift,
        )
