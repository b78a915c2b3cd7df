"""Where a toy scene's objects stand: sizes, categories, colours and non-overlapping boxes, all
drawn from one generator. Both toy worlds place their objects here; each turns the drawn indices
into its own objects."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_PLACEMENT_CANDIDATES = 256
_LAYOUTS_PER_DRAW = 20


@dataclass(frozen=True)
class Layout:
    """Per object: index into the world's sizes, categories (shape or noun) and colours, radius and
    centre ``(cx, cy)``, all normalised to the image side."""

    size_idx: np.ndarray
    kind_idx: np.ndarray
    colour_idx: np.ndarray
    radii: np.ndarray
    centres: np.ndarray

    def objects(
        self, make: Callable[..., Any], kinds: Sequence[str], colours: Sequence[str], sizes: Sequence[str]
    ) -> tuple[Any, ...]:
        """``make(kind, colour, size, cx, cy, radius)`` for each object: the world's object type."""
        return tuple(
            make(
                kinds[int(self.kind_idx[k])],
                colours[int(self.colour_idx[k])],
                sizes[int(self.size_idx[k])],
                float(self.centres[k, 0]),
                float(self.centres[k, 1]),
                float(self.radii[k]),
            )
            for k in range(len(self.radii))
        )


def lay_out(
    rng: np.random.Generator,
    n: int,
    radius_bounds: np.ndarray,
    n_kinds: int,
    n_colours: int,
    *,
    border: float,
    box_gap: float,
    max_tries: int,
    row: bool = False,
    row_jitter: float = 0.0,
    seed: int | None = None,
) -> Layout:
    """Rejection-sample ``n`` objects whose bounding boxes keep ``box_gap`` apart and ``border``
    from the image edge. ``radius_bounds[s]`` is size ``s``'s (min, max) radius. ``row`` stands
    object k within ``row_jitter`` of the k-th of n evenly spaced columns, so left / middle / right
    orders occur. ``seed`` only names the scene in the error."""
    for attempt in range(max_tries):
        # Keep the drawn sizes through several failed layouts: resampling them at every failure
        # would favour small objects in crowded scenes (four big ones place ~1 time in 5).
        if attempt % _LAYOUTS_PER_DRAW == 0:
            size_idx = rng.integers(0, len(radius_bounds), n)
            lo, hi = radius_bounds[size_idx, 0], radius_bounds[size_idx, 1]
            radii = lo + rng.random(n) * (hi - lo)
            kind_idx = rng.integers(0, n_kinds, n)
            colour_idx = rng.integers(0, n_colours, n)
        centres = np.empty((n, 2))
        # Big objects first: they are the hard ones to fit, the small ones slot in around them.
        order = np.argsort(-radii, kind="stable")
        for m, k in enumerate(order):
            r = radii[k]
            start, span = border + r, 1.0 - 2.0 * (border + r)
            # A whole batch of candidate centres per draw: vectorised rejection, first survivor wins.
            cand = start + rng.random((_PLACEMENT_CANDIDATES, 2)) * span
            if row:
                x = (k + 0.5) / n + (rng.random(_PLACEMENT_CANDIDATES) * 2.0 - 1.0) * row_jitter
                cand[:, 0] = np.clip(x, start, start + span)
            prev = order[:m]
            # Chebyshev gap between boxes: apart along either axis means no shared pixel centre.
            gap = np.abs(cand[:, None, :] - centres[prev][None]).max(axis=-1) - radii[prev][None] - r
            ok = np.flatnonzero((gap >= box_gap).all(axis=1))
            if ok.size == 0:
                break  # dead end: start a fresh layout
            centres[k] = cand[ok[0]]
        else:
            return Layout(size_idx, kind_idx, colour_idx, radii, centres)
    raise RuntimeError(f"could not place {n} objects without overlap in {max_tries} layouts (seed {seed})")
