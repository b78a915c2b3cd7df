"""RefAM on the user's ComfyUI Mochi ``MODEL``: one pass at σ over a clip with every expression's
branch (:class:`refam.backends.comfy_capture.ComfyCapture`, Mochi from
:mod:`refam.architectures.mochi`), one capture image per latent frame."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from refam.architectures import comfy_architecture
from refam.architectures.mochi import MOCHI_VIDEO, pad_clip, per_latent_frame, valid_latent_frames
from refam.attention import CapturedAttention, ExpressionLayout, ImageGeometry
from refam.backends.branch import BlockProgress
from refam.backends.comfy_capture import ComfyCapture, comfy_pixels, run_patched_pass
from refam.expression import TokenizedExpression
from refam.images import model_size
from refam.noise import check_sigma

__all__ = ["capture_mochi", "mochi_diffusion_model"]


def mochi_diffusion_model(model: Any) -> torch.nn.Module:
    """The Mochi diffusion model inside a MODEL, or a TypeError naming what was found."""
    return comfy_architecture(model, "video")[1]


@torch.no_grad()
def capture_mochi(
    model: Any,
    vae: Any,
    frames: np.ndarray,
    positive: list,
    expression_embeds: torch.Tensor,
    layout: ExpressionLayout,
    expressions: Sequence[TokenizedExpression],
    *,
    sigma: float = MOCHI_VIDEO.sigma,
    seed: int = 0,
    blocks: Iterable[int | str] | None = None,
    resolution: int | None = MOCHI_VIDEO.resolution,
    progress: BlockProgress | None = None,
    latent: torch.Tensor | None = None,
) -> CapturedAttention:
    """One Mochi pass at ``σ`` on a clip ``[T, H, W, 3]`` uint8; one capture image per latent frame.

    ``latent`` (raw VAE latent ``[1, 12, T', h, w]``) skips the VAE, e.g. when the caller has it.
    """
    check_sigma(sigma)
    session = ComfyCapture(
        model, expression_embeds, layout, modality="video", blocks=blocks, stop_after_last=True, progress=progress
    )
    n, height, width = frames.shape[:3]
    patch = session.diffusion_model.patch_size
    size = model_size((height, width), resolution, 8 * patch)
    if latent is not None:
        size = (latent.shape[3] * 8, latent.shape[4] * 8)  # the size the given latent was encoded at
    else:
        latent = vae.encode(comfy_pixels(pad_clip(frames), size))
    latent = latent.float()
    run_patched_pass(session, latent, positive, sigma, seed)
    t_lat = latent.shape[2]
    grid = (latent.shape[3] // patch, latent.shape[4] // patch)
    return CapturedAttention(
        blocks=per_latent_frame(session.records, t_lat, keep=min(t_lat, valid_latent_frames(n))),
        expressions=list(expressions),
        layout=layout,
        geometry=ImageGeometry(original_size=(height, width), model_size=size, grid=grid),
        num_blocks=len(session.names),
        meta={"backend": "comfy-mochi", "sigma": sigma, "seed": seed, "frames": n},
    )
