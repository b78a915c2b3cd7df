"""Which diffusion features the maps come from: one pass at σ, one pass per σ of a list, or the
denoising steps after RF-inversion (paper App. A.1) — the options, and the running average that
turns the records of several passes into one set of block records.

Every backend that takes these options hands the heatmap one record per block, whatever the
number of passes, so filters, GAS, points and masks downstream do not change; only memory for one
pass's records is held, however many steps are collected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from refam.attention import BlockCapture, ExpressionLayout
from refam.flow import TimeShift, check_gamma, check_unit, denoising_sigmas, shift_mu
from refam.noise import check_sigma
from refam.variants import FEATURE_MODES, STEP_AGGREGATIONS, check_choice

__all__ = ["FeatureOptions", "PassAverage", "parse_step_spec"]

# RF-inversion's discretisation, diffusers' community pipeline's ``num_inversion_steps`` and the
# 28 steps of the paper's timing ("subsequent denoising (28 steps) requires 16–20 seconds", App. A.1).
DEFAULT_INVERSION_STEPS = 28
# The controllers of RF-inversion's two ODEs. The paper gives neither: it inverts with Rout et al.'s
# controlled forward ODE and says the inverted latent, "when denoised, reconstruct[s] the original
# input" ("apply standard rectified flow denoising to X_T", App. A.1). With γ = 0.5, plain Euler
# denoising does not come back to the image (the toy: reconstruction error 0.15 against 0.16 from
# pure noise, colour PA 10 %), so we take RF-inversion's published FLUX pairing as the default:
# γ 0.5 forward, η 1.0 on the first quarter of the denoising steps (diffusers' community
# ``pipeline_flux_rf_inversion``: ``invert(gamma=0.5)``, ``__call__(eta=1.0, stop_timestep=0.25)``).
# ``eta=0`` is the literal "standard" denoising.
DEFAULT_GAMMA = 0.5
DEFAULT_ETA = 1.0
DEFAULT_ETA_STOP = 0.25


def parse_step_spec(text: str) -> tuple[int, ...] | None:
    """``"all"`` / ``""`` -> None (every step); ``"0-13,20"`` -> ``(0, 1, ..., 13, 20)``."""
    text = (text or "").strip().lower()
    if text in ("", "all"):
        return None
    steps: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"cannot read step {part!r}: use 'all', indices (5) or ranges (0-13)")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"step range {part!r} runs backwards")
        steps.extend(s for s in range(first, last + 1) if s not in steps)
    return tuple(steps)


def _whole(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class FeatureOptions:
    """``mode`` (:data:`refam.variants.FEATURE_MODES`): ``single`` reads one noised pass at the
    options' σ, or, with ``sigmas``, one pass per σ with the maps averaged; ``inversion`` inverts
    the clean latent over ``inversion_steps`` steps with controller strength ``gamma``, denoises it
    over as many (the first ``eta_stop`` of them pulled back to the image by ``eta``), and reads the denoising steps ``collect_steps`` (indices from 0, the noisiest first;
    None: all). ``step_aggregation`` (:data:`refam.variants.STEP_AGGREGATIONS`) joins the passes."""

    mode: str = FEATURE_MODES[0]
    sigmas: tuple[float, ...] | None = None
    inversion_steps: int = DEFAULT_INVERSION_STEPS
    gamma: float = DEFAULT_GAMMA
    eta: float = DEFAULT_ETA
    eta_stop: float = DEFAULT_ETA_STOP
    collect_steps: tuple[int, ...] | None = None
    step_aggregation: str = STEP_AGGREGATIONS[0]

    def __post_init__(self) -> None:
        check_choice("features", self.mode, FEATURE_MODES)
        check_choice("step_aggregation", self.step_aggregation, STEP_AGGREGATIONS)
        _whole("inversion_steps", self.inversion_steps, 1)
        check_gamma(self.gamma)
        check_unit("eta", self.eta)
        check_unit("eta_stop", self.eta_stop)
        if self.sigmas is not None:
            if self.mode != "single":
                raise ValueError("sigmas average single passes; inversion reads its own denoising steps (use collect_steps)")
            if not self.sigmas:
                raise ValueError("sigmas needs at least one noise level, e.g. (0.5, 0.75, 0.9)")
            for s in self.sigmas:
                check_sigma(s)
        if self.collect_steps is not None:
            if self.mode != "inversion":
                raise ValueError("collect_steps picks denoising steps of the inversion mode; single passes take sigmas")
            if not self.collect_steps:
                raise ValueError("collect_steps needs at least one denoising step (None: all)")
            for step in self.collect_steps:
                if _whole("a collected step", step, 0) >= self.inversion_steps:
                    raise ValueError(
                        f"collected step {step} is past the last denoising step ({self.inversion_steps - 1}) "
                        f"of {self.inversion_steps}"
                    )

    @property
    def passes(self) -> int:
        """Denoiser evaluations with the expression branch."""
        if self.mode == "inversion":
            return len(self.collected_steps())
        return len(self.sigmas) if self.sigmas else 1

    @property
    def controlled_steps(self) -> int:
        """The first denoising steps, ``eta_stop`` of them, on RF-inversion's controlled reverse ODE
        (η pulling back to the image); rounded down as the reference's ``int(stop_timestep * N)``."""
        return int(self.eta_stop * self.inversion_steps)

    def single_sigma(self, sigma: float) -> float:
        """The σ of a single pass: the one of ``sigmas`` when it holds one, else ``sigma`` (checked)."""
        return check_sigma(self.sigmas[0] if self.sigmas and len(self.sigmas) == 1 else sigma)

    def schedule(self, time_shift: TimeShift | None, image_tokens: int) -> torch.Tensor:
        """The inversion's denoising σ schedule for ``image_tokens`` tokens, shifted as the model's is."""
        mu = None if time_shift is None else shift_mu(time_shift, image_tokens)
        return denoising_sigmas(self.inversion_steps, mu=mu)

    def collected_sigmas(self, schedule: torch.Tensor) -> list[float]:
        """The σ of each collected denoising step, as run records name them."""
        return [round(float(schedule[i]), 6) for i in self.collected_steps()]

    def collected_steps(self) -> tuple[int, ...]:
        return tuple(range(self.inversion_steps)) if self.collect_steps is None else tuple(sorted(self.collect_steps))

    def describe(self) -> dict[str, Any]:
        """What summary.json and eval records say about the features, only the fields that apply."""
        if self.mode == "single":
            return {"mode": "single", "sigmas": list(self.sigmas) if self.sigmas else None, "step_aggregation": self.step_aggregation}
        return {
            "mode": "inversion",
            "inversion_steps": self.inversion_steps,
            "gamma": self.gamma,
            "eta": self.eta,
            "eta_stop": self.eta_stop,
            "collect_steps": "all" if self.collect_steps is None else list(self.collected_steps()),
            "step_aggregation": self.step_aggregation,
        }


def _span_softmax(scores: torch.Tensor, layout: ExpressionLayout) -> torch.Tensor:
    """Each expression's softmax over its own tokens, as the heatmap takes it."""
    return torch.cat([scores[..., a:b].softmax(dim=-1) for a, b in layout.spans], dim=-1)


@dataclass
class PassAverage:
    """The block records of several passes folded into one record per block as they arrive.

    With ``aggregate="maps"`` a block's scores become the log of its mean attention map: the
    heatmap's softmax over an expression's tokens turns them back into exactly that mean, so one
    pass alone reads as it would unaveraged. ``"scores"`` averages the scores themselves.
    """

    layout: ExpressionLayout
    aggregate: str = STEP_AGGREGATIONS[0]
    passes: int = 0
    _sums: dict[int, BlockCapture] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("step aggregation", self.aggregate, STEP_AGGREGATIONS)

    def add(self, records: list[BlockCapture]) -> None:
        if self.passes and sorted(r.index for r in records) != sorted(self._sums):
            raise RuntimeError("every averaged pass must capture the same blocks")
        for r in records:
            terms = {k: self._term(v) for k, v in r.scores.items()}
            held = self._sums.get(r.index)
            if held is None:
                attention = None if r.text_attention is None else r.text_attention.clone()
                self._sums[r.index] = BlockCapture(r.name, r.index, terms, r.text_mass.clone(), attention)
                continue
            for k, v in terms.items():
                held.scores[k].add_(v)
            held.text_mass.add_(r.text_mass)
            if held.text_attention is not None and r.text_attention is not None:
                held.text_attention.add_(r.text_attention)
        self.passes += 1

    def _term(self, scores: torch.Tensor) -> torch.Tensor:
        return _span_softmax(scores.float(), self.layout) if self.aggregate == "maps" else scores.float().clone()

    def blocks(self) -> list[BlockCapture]:
        """One record per block, in block order."""
        if not self.passes:
            raise RuntimeError("no pass was captured")
        out = []
        for index in sorted(self._sums):
            held = self._sums[index]
            scores = {k: self._finish(v / self.passes) for k, v in held.scores.items()}
            attention = None if held.text_attention is None else held.text_attention / self.passes
            out.append(BlockCapture(held.name, held.index, scores, held.text_mass / self.passes, attention))
        return out

    def _finish(self, mean: torch.Tensor) -> torch.Tensor:
        # The smallest normal float32 keeps a map's exact zeros finite for the softmax.
        return mean.clamp_min(torch.finfo(torch.float32).tiny).log() if self.aggregate == "maps" else mean
