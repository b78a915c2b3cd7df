"""RF-inversion and denoising on the user's ComfyUI MODEL, as one ComfyUI sampler run.

The whole trajectory — inversion from σ = 0 up to 1, then denoising back to 0 — is one sampler
function handed to ``CFGGuider`` (cfg 1: only the caption's conditioning runs) with the sigmas of
both stages, so model loading, low-VRAM offloading, conditioning processing, interrupts and
progress work as for any sampler. The arithmetic is :mod:`refam.flow`'s, the same as the
diffusers backend's; the capture session's patches are active only on the collected steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from refam.backends.comfy_capture import ComfyCapture
from refam.features import FeatureOptions, PassAverage
from refam.flow import denoise, inversion_sigmas, invert

__all__ = ["StepProgress", "run_inversion"]

StepProgress = Callable[[int, int], None]


def run_inversion(
    session: ComfyCapture,
    latent: torch.Tensor,
    positive: list,
    schedule: torch.Tensor,
    features: FeatureOptions,
    target: torch.Tensor,
    *,
    average: PassAverage | None = None,
    progress: StepProgress | None = None,
    collect: Iterable[int] | None = None,
) -> torch.Tensor:
    """Invert the raw ``latent`` along ``schedule`` walked backwards towards the fixed noise
    ``target`` (``features``' γ), then denoise along ``schedule`` (η over its first steps); the
    branch's records of the collected denoising steps (``collect``, default the features') go to
    ``average``. Returns the reconstructed raw latent. The session is released either way
    (interrupt included)."""
    import comfy.model_management
    import comfy.samplers

    collect = set(features.collected_steps() if collect is None else collect)
    steps = len(schedule) - 1
    path = torch.cat([inversion_sigmas(schedule), schedule[1:]])

    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        ones = x.new_ones([x.shape[0]])

        def velocity(stage: int) -> Callable[[torch.Tensor, float, int], torch.Tensor]:
            def call(y: torch.Tensor, sigma: float, i: int) -> torch.Tensor:
                comfy.model_management.throw_exception_if_processing_interrupted()
                session.active = stage == 1 and i in collect
                try:
                    model(y.to(x.dtype), ones * sigma, **extra_args)
                    v = session.take_output(y.shape).to(y.device)
                finally:
                    session.active = False
                if average is not None and stage == 1 and i in collect:
                    average.add(list(session.records))
                session.records.clear()
                done = stage * steps + i + 1
                if progress is not None:
                    progress(done, 2 * steps)
                if callback is not None:
                    callback({"x": y, "i": done - 1, "sigma": sigma, "sigma_hat": sigma, "denoised": y - sigma * v})
                return v

            return call

        inverted = invert(velocity(0), x, inversion_sigmas(schedule), target.to(x.device), features.gamma)
        controlled = {"clean": x, "eta": features.eta, "eta_steps": features.controlled_steps}
        return denoise(velocity(1), inverted, schedule, **controlled).to(x.dtype)

    session.active = False
    guider = comfy.samplers.CFGGuider(session.patched_model())
    guider.inner_set_conds({"positive": positive})
    guider.set_cfg(1.0)
    try:
        # Starting at σ = 0, the sampler's noise never enters: x is the clean latent itself.
        return guider.sample(
            torch.zeros_like(latent), latent, comfy.samplers.KSAMPLER(sampler), path, disable_pbar=True, seed=0
        )
    finally:
        session.active = True
        session.release()

