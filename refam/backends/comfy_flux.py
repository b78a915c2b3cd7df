"""RefAM on the user's ComfyUI FLUX ``MODEL`` / ``CLIP`` / ``VAE``: one pass at σ with every
expression's branch (:class:`refam.backends.comfy_capture.ComfyCapture`, FLUX from
:mod:`refam.architectures.flux`), and the MODEL/CLIP/VAE as a pipeline backend."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from refam.architectures import comfy_architecture
from refam.architectures.flux import FLUX_IMAGE, token_grid
from refam.architectures.flux2 import image_point
from refam.attention import CapturedAttention, ExpressionLayout, ImageGeometry
from refam.backends.branch import BlockProgress
from refam.backends.comfy_capture import ComfyCapture, comfy_pixels, run_patched_pass
from refam.backends.comfy_flow import run_inversion
from refam.backends.comfy_text import encode_caption, encode_expressions, text_part
from refam.expression import TokenizedExpression
from refam.features import FeatureOptions, PassAverage
from refam.flow import TimeShift
from refam.images import model_size
from refam.noise import capture_noise
from refam.operating_point import FROM_BACKEND, FromBackend, OperatingPoint
from refam.variants import BRANCH_POOLED

__all__ = ["ComfyFlux", "capture_flux", "flux_diffusion_model", "joint_block_count"]


def flux_diffusion_model(model: Any) -> torch.nn.Module:
    """The FLUX diffusion model inside a MODEL, checked before any work runs: a TypeError names
    what else was found, a NotImplementedError a FLUX variant or DiT whose support is planned."""
    return comfy_architecture(model, "image")[1]


def joint_block_count(model: Any) -> int:
    """How many joint blocks a pass of the image MODEL runs (what a progress bar counts), checked
    as :func:`flux_diffusion_model` checks it."""
    architecture, diffusion_model = comfy_architecture(model, "image")
    return len(architecture.comfy_blocks(diffusion_model))


def _guidance_embed(diffusion_model: torch.nn.Module) -> bool:
    # Chroma's parameters have no guidance embedding field (its approximator takes guidance 0).
    return bool(getattr(getattr(diffusion_model, "params", None), "guidance_embed", False))


def _latent_multiple(vae: Any, diffusion_model: torch.nn.Module) -> int:
    ratio = getattr(vae, "downscale_ratio", 8)
    ratio = ratio if isinstance(ratio, int) else 8
    return ratio * diffusion_model.patch_size


@torch.no_grad()
def capture_flux(
    model: Any,
    vae: Any,
    images: np.ndarray,
    positive: list,
    expression_embeds: torch.Tensor,
    layout: ExpressionLayout,
    expressions: Sequence[TokenizedExpression],
    *,
    sigma: float = FLUX_IMAGE.sigma,
    seed: int = 0,
    blocks: Iterable[int | str] | None = None,
    resolution: int | None = FLUX_IMAGE.resolution,
    progress: BlockProgress | None = None,
    branch_pooled: str = BRANCH_POOLED[0],
    features: FeatureOptions | None = None,
    time_shift: TimeShift | None | FromBackend = FROM_BACKEND,
) -> CapturedAttention:
    """The expression branch on ``images [B, H, W, 3]`` uint8: one FLUX pass at ``σ``, or what
    ``features`` asks for (one pass per σ; RF-inversion and denoising, ``progress`` then counting
    steps, not blocks). ``time_shift``: the inversion schedule's shift, by default FLUX.1-dev's or
    schnell's as the MODEL is."""
    features = features or FeatureOptions()
    sigma = features.single_sigma(sigma)
    inversion = features.mode == "inversion"
    session = ComfyCapture(
        model,
        expression_embeds,
        layout,
        modality="image",
        blocks=blocks,
        stop_after_last=not inversion,
        progress=None if inversion else progress,
        branch_pooled=branch_pooled,
        keep_output=inversion,
    )
    batch, height, width = images.shape[:3]
    size = model_size((height, width), resolution, _latent_multiple(vae, session.diffusion_model))
    # One image at a time: a video VAE (Qwen-Image's is Wan 2.1's) would read a batch as frames.
    latent = torch.cat([vae.encode(comfy_pixels(images[i : i + 1], size)) for i in range(batch)]).float()
    grid = token_grid(latent.shape, session.diffusion_model.patch_size)
    meta: dict[str, Any] = {"features": features.describe()}
    average = PassAverage(layout, features.step_aggregation)
    if inversion:
        if isinstance(time_shift, FromBackend):
            time_shift = image_point(session.architecture, _guidance_embed(session.diffusion_model)).time_shift
        schedule = features.schedule(time_shift, grid[0] * grid[1])
        target = capture_noise(latent.shape, seed).contiguous()
        run_inversion(session, latent, positive, schedule, features, target, average=average, progress=progress)
        records = average.blocks()
        meta["features"]["collected_sigmas"] = features.collected_sigmas(schedule)
    elif features.sigmas and len(features.sigmas) > 1:
        for s in features.sigmas:
            run_patched_pass(session, latent, positive, s, seed)
            average.add(list(session.records))
            session.records.clear()
        records = average.blocks()
    else:
        run_patched_pass(session, latent, positive, sigma, seed)
        records = session.records
    return CapturedAttention(
        blocks=records,
        expressions=list(expressions),
        layout=layout,
        geometry=ImageGeometry(original_size=(height, width), model_size=size, grid=grid),
        num_blocks=len(session.names),
        meta={
            "backend": "comfy-flux",
            "architecture": session.architecture.label,
            "sigma": sigma,
            "seed": seed,
            "branch_pooled": branch_pooled,
            **meta,
        },
    )


@dataclass
class ComfyFlux:
    """The user's ComfyUI MODEL / CLIP / VAE as a :class:`refam.pipeline.AttentionBackend`."""

    model: Any
    clip: Any
    vae: Any
    name: str = "comfy-flux"
    progress: BlockProgress | None = None  # blocks of a pass; with inversion, its steps
    operating_point: OperatingPoint | None = None  # None: FLUX.1-dev's or schnell's, read off the MODEL
    modality = "image"
    takes_features = True  # single pass, several σ or RF-inversion (refam.features)

    def __post_init__(self) -> None:
        architecture, dm = comfy_architecture(self.model, "image")
        self._text = text_part(self.clip)
        if self.operating_point is None:
            self.operating_point = image_point(architecture, _guidance_embed(dm))

    @property
    def tokenizer(self) -> Any:
        return self._text.tokenizer

    @property
    def text_pad_length(self) -> int | None:
        if self._text.pad_length is None:
            return None
        return self.operating_point.text_length or self._text.pad_length

    @property
    def text_template(self) -> tuple[str, str] | None:
        return self._text.template

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
        blocks: Iterable[int | str] | None = None,
        progress: Callable[[str], None] | None = None,
        branch_pooled: str = BRANCH_POOLED[0],
        features: FeatureOptions | None = None,
    ) -> CapturedAttention:
        point = self.operating_point.fill(sigma=sigma, guidance=guidance, resolution=resolution)
        sigma, guidance, resolution = point["sigma"], point["guidance"], point["resolution"]
        if progress:
            progress("encoding text")
        positive = encode_caption(self.clip, caption, guidance)
        embeds, layout = encode_expressions(self.clip, expressions)
        if progress:
            progress("capturing attention")
        captured = capture_flux(
            self.model,
            self.vae,
            images,
            positive,
            embeds,
            layout,
            expressions,
            sigma=sigma,
            seed=seed,
            blocks=blocks,
            resolution=resolution,
            progress=self.progress,
            branch_pooled=branch_pooled,
            features=features,
            time_shift=self.operating_point.time_shift,
        )
        captured.meta.update(model=self.name, caption=caption)
        return captured
