"""Rectified-flow trajectories for the inversion feature mode (paper App. A.1): the σ schedule,
the controlled forward ODE that inverts a clean latent (Rout et al., ICLR 2025, Algorithm 1) and
plain Euler denoising back from it.

Pure tensor code on a ``velocity(x, σ, step)`` callable, so the diffusers loop and the ComfyUI
sampler run the very same arithmetic: the state is float32 throughout, whatever the model's
dtype, and both backends are handed one schedule from :func:`denoising_sigmas`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "TimeShift",
    "Velocity",
    "check_gamma",
    "check_unit",
    "denoise",
    "denoising_sigmas",
    "invert",
    "inversion_sigmas",
    "shift_mu",
]

Velocity = Callable[[torch.Tensor, float, int], torch.Tensor]
StepHook = Callable[[int, torch.Tensor], None]

# (base_shift, max_shift) of a resolution-dependent timestep shift, interpolated between 256 and
# 4096 image tokens: FLUX.1-dev's scheduler config (diffusers) and ModelSamplingFlux (ComfyUI).
TimeShift = tuple[float, float]
SHIFT_TOKENS = (256, 4096)


def shift_mu(shift: TimeShift, image_tokens: int) -> float:
    """The shift ``μ`` for ``image_tokens`` tokens: linear in the token count, as both hosts do."""
    (base, top), (lo, hi) = shift, SHIFT_TOKENS
    slope = (top - base) / (hi - lo)
    return image_tokens * slope + (base - slope * lo)


def denoising_sigmas(steps: int, *, mu: float | None = None) -> torch.Tensor:
    """``steps + 1`` float32 noise levels from 1 down to 0: FLUX's ``linspace(1, 1/N, N)`` shifted by
    ``exp(μ) / (exp(μ) + 1/σ - 1)`` when ``μ`` is given, then the final 0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    sigmas = torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float64)
    if mu is not None:
        sigmas = math.exp(mu) / (math.exp(mu) + (1.0 / sigmas - 1.0))
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)


def inversion_sigmas(denoising: torch.Tensor) -> torch.Tensor:
    """The denoising schedule walked backwards, 0 up to 1: inversion retraces the steps that
    denoising will take, so the two trajectories meet the same noise levels."""
    return denoising.flip(0)


def invert(
    velocity: Velocity,
    clean: torch.Tensor,
    sigmas: torch.Tensor,
    target: torch.Tensor,
    gamma: float,
    on_step: StepHook | None = None,
) -> torch.Tensor:
    """The controlled forward ODE from ``clean`` (σ = 0) to σ = 1 along ascending ``sigmas``.

    Each Euler step blends the model's velocity ``u`` with the conditional velocity towards the
    fixed noise sample ``target``, ``(target - y) / (1 - σ)``, by ``γ`` (Rout et al., Eq. 8). γ = 0
    is plain Euler inversion of the model's ODE; γ = 1 lands exactly on ``target``. The time fed to
    the model is the σ the step starts from: diffusers' community pipeline feeds ``i / N`` while
    stepping by the shifted schedule, which would leave γ = 1 short of ``target`` whenever the
    schedule is shifted.
    """
    check_gamma(gamma)
    y = clean.float()
    target = target.float()
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        u = velocity(y, s, i).float()
        if gamma:
            u = u + gamma * ((target - y) / (1.0 - s) - u)
        y = y + u * (s_next - s)
        if on_step is not None:
            on_step(i, y)
    return y


def denoise(
    velocity: Velocity,
    noisy: torch.Tensor,
    sigmas: torch.Tensor,
    on_step: StepHook | None = None,
    *,
    clean: torch.Tensor | None = None,
    eta: float = 0.0,
    eta_steps: int = 0,
) -> torch.Tensor:
    """Euler steps of the model's ODE along descending ``sigmas``.

    With ``eta`` > 0 the first ``eta_steps`` steps follow RF-inversion's controlled reverse ODE
    (Rout et al., Algorithm 2): the velocity is blended by ``η`` with the conditional velocity
    back to ``clean``, ``(x - clean) / σ``; η = 1 walks straight back to it. η = 0 is plain
    ("standard") rectified-flow denoising.
    """
    check_unit("eta", eta)
    if eta and clean is None:
        raise ValueError("eta pulls the trajectory back to the clean latent: give clean")
    x = noisy.float()
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        v = velocity(x, s, i).float()
        if eta and i < eta_steps:
            v = v + eta * ((x - clean.float()) / s - v)
        x = x + v * (s_next - s)
        if on_step is not None:
            on_step(i, x)
    return x


def check_unit(name: str, value: float) -> float:
    """A controller strength in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def check_gamma(gamma: float) -> float:
    return check_unit("gamma (0: plain inversion, 1: straight to the noise; RF-inversion uses 0.5)", gamma)
