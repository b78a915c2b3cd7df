"""How Mochi lays a clip out in time, shared by the diffusers and ComfyUI Mochi backends.

Mochi's VAE compresses time 6x after the first frame: a clip of ``6k + 1`` frames becomes
``k + 1`` latent frames. Each latent frame's tokens become one "image" of a capture, so the
heatmap / point code works per latent frame, and clip frames map back to their latent frame.
"""

from __future__ import annotations

import numpy as np
import torch

from refam.attention import BlockCapture

__all__ = [
    "MOCHI_TEMPORAL_FACTOR",
    "latent_frame_of",
    "latent_frames",
    "mochi_timestep",
    "pad_clip",
    "representative_frames",
    "per_latent_frame",
    "valid_latent_frames",
]

MOCHI_TEMPORAL_FACTOR = 6


def latent_frames(num_frames: int) -> int:
    """Latent frames Mochi's VAE makes of ``num_frames`` (which must be ``6k + 1``)."""
    return (num_frames - 1) // MOCHI_TEMPORAL_FACTOR + 1


def latent_frame_of(frame: int) -> int:
    """The latent frame a clip frame falls in: frame 0 alone, then 6 frames per latent frame."""
    return 0 if frame <= 0 else (frame - 1) // MOCHI_TEMPORAL_FACTOR + 1


def mochi_timestep(sigma: float) -> float:
    """Mochi's transformer timestep for noise level σ: its convention is inverted, ``1000·(1 - σ)``."""
    from refam.noise import check_sigma

    return 1000.0 * (1.0 - check_sigma(sigma))


def pad_clip(frames: np.ndarray) -> np.ndarray:
    """Repeat the last frame up to the next ``6k + 1`` frames (what Mochi's VAE accepts)."""
    short = (-(len(frames) - 1)) % MOCHI_TEMPORAL_FACTOR
    return np.concatenate([frames, np.repeat(frames[-1:], short, axis=0)]) if short else frames


def mochi_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Mochi's RoPE on ``[B, N, H, Dh]``: interleaved (even, odd) pairs rotated, in float32; with
    ``-sin`` it undoes itself."""
    even, odd = x[..., 0::2].float(), x[..., 1::2].float()
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2).to(x.dtype)


def per_latent_frame(blocks: list[BlockCapture], latent_t: int, keep: int | None = None) -> list[BlockCapture]:
    """``[B, T·h·w, L]`` -> ``[B·T, h·w, L]`` (first ``keep`` latent frames): one image per latent frame."""
    out = []
    for b in blocks:
        scores = {}
        for name, value in b.scores.items():
            batch, tokens, length = value.shape
            scores[name] = value.reshape(batch * latent_t, tokens // latent_t, length)[:keep]
        mass = b.text_mass.repeat_interleave(latent_t, dim=0)[:keep]
        out.append(BlockCapture(b.name, b.index, scores, mass))
    return out


def valid_latent_frames(num_frames: int) -> int:
    """Latent frames that hold real (not padding) frames of a clip of ``num_frames``."""
    return latent_frame_of(num_frames - 1) + 1


def representative_frames(num_frames: int, latent_t: int) -> list[int]:
    """One clip frame per latent frame, where its heatmap is shown and its point is used: frame 0
    for latent frame 0, else the middle of the latent frame's 6 frames (clipped to the clip)."""
    return [0] + [min(num_frames - 1, MOCHI_TEMPORAL_FACTOR * k - 3) for k in range(1, latent_t)]
