"""What every ComfyUI capture shares: the one-step pass, positive-row selection and reading the
attention call's q/k/v (the branch itself runs in :class:`refam.backends.branch.BranchRunner`).

The model-specific parts (which patch keys, where the image tokens sit, which adapter) live in
``comfy_flux`` and ``comfy_mochi``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

import numpy as np
import torch

from refam.attention import CaptureComplete
from refam.images import to_model_pixels
from refam.noise import capture_noise

__all__ = [
    "PATCH_KEY",
    "attention_reader",
    "comfy_pixels",
    "denoise_once",
    "positive_rows",
    "preferred_attention",
    "run_patched_pass",
]


# The key RefAM's wrappers are registered under on a MODEL clone.
PATCH_KEY = "refam_capture"


def positive_rows(cond_or_uncond: Sequence[int] | None, batch: int) -> torch.Tensor | None:
    """Batch rows that belong to the positive conditioning (ComfyUI stacks cond/uncond chunks)."""
    if not cond_or_uncond or all(c == 0 for c in cond_or_uncond):
        return None
    chunk = batch // len(cond_or_uncond)
    rows = [r for i, c in enumerate(cond_or_uncond) if c == 0 for r in range(i * chunk, (i + 1) * chunk)]
    return torch.tensor(rows, dtype=torch.long)


def _one_step(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """A sampler that only evaluates the denoiser once, at ``sigmas[0]``."""
    return model(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))


def denoise_once(model: Any, latent: torch.Tensor, positive: list, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """One denoiser evaluation at ``σ`` through ComfyUI's own sampling path; returns x̂0 (raw latent)."""
    import comfy.samplers

    guider = comfy.samplers.CFGGuider(model)
    guider.inner_set_conds({"positive": positive})
    guider.set_cfg(1.0)
    sigmas = torch.tensor([float(sigma), 0.0])
    sampler = comfy.samplers.KSAMPLER(_one_step)
    return guider.sample(noise, latent, sampler, sigmas, disable_pbar=True, seed=0)


def comfy_pixels(images: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> ComfyUI's IMAGE layout (float 0..1, ``[B, h, w, 3]``) at the model's
    size. Resized here rather than cropped by the VAE, so every pixel maps back through ImageGeometry."""
    return to_model_pixels(images, size).add_(1.0).mul_(0.5).permute(0, 2, 3, 1)


def run_patched_pass(session: Any, latent: torch.Tensor, positive: list, sigma: float, seed: int) -> None:
    """One pass at ``σ`` of ``session.patched_model()`` on ``latent`` with the shared capture noise;
    the early stop after the last selected block ends it, and the session is released either way."""
    noise = capture_noise(latent.shape, seed).contiguous()
    try:
        with suppress(CaptureComplete):
            denoise_once(session.patched_model(), latent, positive, sigma, noise)
    finally:
        session.release()


def preferred_attention(block: torch.nn.Module) -> Callable | None:
    """The attention function ``block``'s layers ask ComfyUI for, or None for ComfyUI's default.

    Newer cores let a layer carry a preference (a ``ComfyAttention`` module whose ``function`` is,
    e.g., an int8 kernel a quantized checkpoint asked for) and consult an installed override
    *before* it, so an override that only calls ``func`` would silently switch such layers to the
    default attention. Cores without ``ComfyAttention`` have no preferences: None.
    """
    import comfy.ldm.modules.attention as attention

    kind = getattr(attention, "ComfyAttention", None)
    if kind is None:
        return None
    functions = {
        id(m.function): m.function for m in block.modules() if isinstance(m, kind) and m.function is not None
    }
    if len(functions) > 1:
        raise NotImplementedError(
            f"{type(block).__name__} asks for {len(functions)} different attention functions; RefAM cannot tell "
            "which of its attention calls uses which, so it will not run on this checkpoint yet"
        )
    return next(iter(functions.values()), None)


def attention_reader(
    previous: Callable | None,
    keep: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None],
    preferred: Callable | None = None,
):
    """An ``optimized_attention_override`` that hands the call's q/k/v to ``keep`` and then calls
    exactly what ComfyUI would have called without it: an override already installed
    (``previous``), else the layer's ``preferred`` attention function, else ``func``.

    It has no ``container_function``, so a core that passes q/k/v in single-owner containers
    unwraps them before calling it, as for any such override; that moves who frees the tensors,
    not the attention's arithmetic.
    """

    def override(func, *args, **kwargs):
        keep(*args[:3])
        if previous is not None:
            return previous(func, *args, **kwargs)
        if preferred is not None:
            return preferred(*args, **kwargs)
        return func(*args, **kwargs)

    return override
