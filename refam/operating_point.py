"""Where each model runs RefAM, declared once: the noise level σ of the denoising pass, the size
the model sees and the guidance it is conditioned on.

Library options, CLI flags and node widgets that leave these unset take them from the backend's
declaration (:data:`FROM_BACKEND`); a value given explicitly is always used as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["FLUX_IMAGE", "FROM_BACKEND", "MOCHI_VIDEO", "FromBackend", "OperatingPoint"]


@dataclass(frozen=True)
class OperatingPoint:
    sigma: float
    resolution: int | None  # the model sees ~resolution² pixels, aspect kept; None: the image's own size
    guidance: float | None = None  # a distilled-guidance embedding's value; None: the model has none

    def fill(self, **values: Any) -> dict[str, Any]:
        """``values`` (``sigma`` / ``resolution`` / ``guidance``) with :data:`FROM_BACKEND` replaced
        by this point's."""
        return {k: getattr(self, k) if isinstance(v, FromBackend) else v for k, v in values.items()}


# Paper §4: FLUX features "from timestep 750"; flow matching feeds the transformer t = 1000·σ, so
# σ = 0.75. FLUX.1 was trained at 1024²; 3.5 is FLUX.1-dev's default distilled guidance.
FLUX_IMAGE = OperatingPoint(sigma=0.75, resolution=1024, guidance=3.5)
# Paper §4: Mochi features "from timestep 990"; Mochi's transformer counts t = 1000·(1 − σ), so
# σ = 0.01. Mochi generates 480p video.
MOCHI_VIDEO = OperatingPoint(sigma=0.01, resolution=480)


class FromBackend:
    """The value an option takes when the caller leaves it to the backend's operating point."""

    def __repr__(self) -> str:
        return "FROM_BACKEND"

    def __reduce__(self) -> str:
        return "FROM_BACKEND"


FROM_BACKEND = FromBackend()
