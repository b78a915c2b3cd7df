"""The noise ε of the capture pass, the same on every backend and device."""

from __future__ import annotations

import torch

__all__ = ["MAX_SEED", "capture_noise", "check_seed", "check_sigma"]

# The largest seed every consumer takes: torch's CPU generator, ComfyUI's INT widgets (int64).
MAX_SEED = 2**63 - 1


def capture_noise(latent_shape: tuple[int, ...] | torch.Size, seed: int) -> torch.Tensor:
    """``[B, C, h, w]`` float32 CPU noise: one draw from ``seed``, shared by every image of the batch.

    Drawn on the CPU so a seed gives the same ε on every device, and once per call (not per
    batch row) so an image's result does not depend on what else is in its batch. Both FLUX
    backends use it, which is what lets their maps agree for the same weights.
    """
    batch, *rest = latent_shape
    generator = torch.Generator("cpu").manual_seed(int(seed))
    noise = torch.randn(rest, generator=generator, dtype=torch.float32)
    return noise.unsqueeze(0).expand(batch, *rest)


def check_sigma(sigma: float) -> float:
    """The noise level of the capture pass: ``x_σ = (1-σ)·x0 + σ·ε`` needs ``0 < σ <= 1``."""
    if not 0.0 < float(sigma) <= 1.0:
        raise ValueError(f"sigma must be in (0, 1] (paper: 0.75 for FLUX), got {sigma}")
    return float(sigma)


def check_seed(seed: object) -> int:
    """A seed the noise generator takes as given (never wrapped or truncated)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED} (2**63 - 1), got {seed!r}")
    return seed
