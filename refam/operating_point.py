"""Where a model runs RefAM: the noise level σ of the denoising pass, the size the model sees, the
guidance it is conditioned on and the score its maps are read with. Each architecture module
(:mod:`refam.architectures`) declares its own.

Library options, CLI flags and node widgets that leave these unset take them from the backend's
declaration (:data:`FROM_BACKEND`); a value given explicitly is always used as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refam.variants import DEFAULT_SCORE

__all__ = ["FROM_BACKEND", "MIN_RESOLUTION", "FromBackend", "OperatingPoint", "check_resolution"]

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
    # The resolution-dependent timestep shift of multi-step schedules (refam.flow.TimeShift:
    # base and max μ between 256 and 4096 image tokens); None: the schedule is not shifted.
    time_shift: tuple[float, float] | None = None

    def fill(self, **values: Any) -> dict[str, Any]:
        """``values`` (``sigma`` / ``resolution`` / ``guidance`` / ``score``) with :data:`FROM_BACKEND`
        replaced by this point's."""
        return {k: getattr(self, k) if isinstance(v, FromBackend) else v for k, v in values.items()}


class FromBackend:
    """The value an option takes when the caller leaves it to the backend's operating point."""

    def __repr__(self) -> str:
        return "FROM_BACKEND"

    def __reduce__(self) -> str:
        return "FROM_BACKEND"


FROM_BACKEND = FromBackend()
