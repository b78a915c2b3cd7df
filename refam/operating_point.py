"""Where each model runs RefAM, declared once: the noise level σ of the denoising pass, the size
the model sees, the guidance it is conditioned on and the score its maps are read with.

Library options, CLI flags and node widgets that leave these unset take them from the backend's
declaration (:data:`FROM_BACKEND`); a value given explicitly is always used as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refam.variants import DEFAULT_SCORE

__all__ = ["FLUX_IMAGE", "FLUX_SCHNELL", "FROM_BACKEND", "MIN_RESOLUTION", "MOCHI_VIDEO", "check_resolution", "FromBackend", "OperatingPoint", "flux_point"]

# The smallest ``resolution`` taken: 32² pixels is a 2x2 patch grid for FLUX (16 px patches) and
# below the toy world's 48 px; smaller values are typos (0, -1) that would run at a silent minimum.
MIN_RESOLUTION = 32


def check_resolution(size: object) -> int | None:
    """``resolution`` as given (``None``: the image's own size), or an error for sizes no model can use."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < MIN_RESOLUTION):
        raise ValueError(
            f"resolution must be at least {MIN_RESOLUTION} (the model sees about resolution² pixels), "
            f"got {size!r}; leave it unset for the model's own"
        )
    return size


@dataclass(frozen=True)
class OperatingPoint:
    sigma: float
    resolution: int | None  # the model sees ~resolution² pixels, aspect kept; None: the image's own size
    guidance: float | None = None  # a distilled-guidance embedding's value; None: the model has none
    score: str = DEFAULT_SCORE  # what feeds the softmax over tokens (refam.variants.SCORES)
    # The T5 length expressions are padded to. FLUX runs T5 without an attention mask, so the pads
    # after an expression shape every token's state: both backends pad to the model's own length.
    # None: the model's text encoder masks its padding.
    text_length: int | None = None

    def fill(self, **values: Any) -> dict[str, Any]:
        """``values`` (``sigma`` / ``resolution`` / ``guidance`` / ``score``) with :data:`FROM_BACKEND`
        replaced by this point's."""
        return {k: getattr(self, k) if isinstance(v, FromBackend) else v for k, v in values.items()}


# Paper §4: FLUX features "from timestep 750"; flow matching feeds the transformer t = 1000·σ, so
# σ = 0.75. FLUX.1 was trained at 1024²; 3.5 is FLUX.1-dev's default distilled guidance.
# Expressions padded as BFL's reference pads FLUX prompts: 512 tokens for FLUX.1-dev, 256 for schnell.
FLUX_IMAGE = OperatingPoint(sigma=0.75, resolution=1024, guidance=3.5, text_length=512)
FLUX_SCHNELL = OperatingPoint(sigma=0.75, resolution=1024, guidance=None, text_length=256)
# Paper §4: Mochi features "from timestep 990"; Mochi's transformer counts t = 1000·(1 − σ), so
# σ = 0.01. Mochi generates 480p video.
MOCHI_VIDEO = OperatingPoint(sigma=0.01, resolution=480)


def flux_point(guidance_embed: bool) -> OperatingPoint:
    """FLUX.1-dev (guidance-distilled) or schnell (no guidance embedding)."""
    return FLUX_IMAGE if guidance_embed else FLUX_SCHNELL


class FromBackend:
    """The value an option takes when the caller leaves it to the backend's operating point."""

    def __repr__(self) -> str:
        return "FROM_BACKEND"

    def __reduce__(self) -> str:
        return "FROM_BACKEND"


FROM_BACKEND = FromBackend()
