"""Every knob of the method in one frozen value, checked where it is built."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from refam.expression import DEFAULT_MAGNETS
from refam.expression.magnets import MagnetPlan, magnet_plan
from refam.features import FeatureOptions
from refam.heatmap import BlockSelection, HeatmapOptions
from refam.images import MAX_PIXELS
from refam.noise import check_seed, check_sigma
from refam.operating_point import FROM_BACKEND, FromBackend, OperatingPoint, check_resolution
from refam.prompts import check_point_strategy
from refam.variants import (
    BRANCH_POOLED,
    DEFAULT_MASK_CHOICE,
    DEFAULT_POINT_STRATEGY,
    MAGNET_VARIANTS,
    MASK_CHOICES,
    check_choice,
)

__all__ = ["RefAMOptions"]


@dataclass(frozen=True)
class RefAMOptions:
    """Every knob of the method; the defaults are the paper's.

    ``sigma``, ``guidance`` and ``resolution`` left at :data:`FROM_BACKEND` come from the
    backend's operating point (:mod:`refam.operating_point`: FLUX σ 0.75 at 1024², Mochi σ 0.01 at
    480p, the toy its validated σ); :meth:`at` fills them in.
    """

    magnets: tuple[str, ...] = DEFAULT_MAGNETS
    magnet_variant: str = MAGNET_VARIANTS[0]  # Table 5's variants of the magnets (refam.variants)
    magnet_seed: int = 0  # draws the random stop words / vectors of those variants
    sigma: float | FromBackend = FROM_BACKEND
    seed: int = 0
    guidance: float | None | FromBackend = FROM_BACKEND  # ignored by models without guidance
    resolution: int | None | FromBackend = FROM_BACKEND  # model sees ~resolution² pixels; None: the image's size
    capture_blocks: tuple[int, ...] | None = None  # None = all blocks
    branch_pooled: str = BRANCH_POOLED[0]  # the pooled vector modulating the branch (refam.variants)
    heatmap: HeatmapOptions = field(default_factory=HeatmapOptions)
    features: FeatureOptions = field(default_factory=FeatureOptions)  # one pass, several σ, or inversion
    points: int = 1  # positive points handed to the segmenter (1 = the paper's argmax)
    point_min_distance: int = 2  # patches between peaks when points > 1 (point_strategy "argmax")
    point_strategy: str = DEFAULT_POINT_STRATEGY  # where the positive points go (refam.variants)
    negative_points: int = 0  # negative points, one per other high region of the heatmap
    box_prompt: bool = False  # also prompt with the target region's bounding box
    mask_choice: str = DEFAULT_MASK_CHOICE  # which multimask candidate is the mask (refam.variants)
    heatmap_mask: bool = False  # the mask is the heatmap's target region, not the segmenter's
    max_pixels: int | None = MAX_PIXELS  # larger images are refused (refam.images); None: no limit

    def __post_init__(self) -> None:
        # Checked here, where every front end (CLI, library, nodes) builds its options, so a bad
        # value is refused before a model loads instead of silently becoming another one.
        if not isinstance(self.sigma, FromBackend):
            check_sigma(self.sigma)
        check_seed(self.seed)
        try:
            check_seed(self.magnet_seed)
        except ValueError as exc:
            raise ValueError(f"magnet_{exc}") from None
        check_choice("magnet_variant", self.magnet_variant, MAGNET_VARIANTS)
        if not isinstance(self.features, FeatureOptions):
            raise ValueError(f"features must be a FeatureOptions (or give features='inversion' to replace), got {self.features!r}")
        if not isinstance(self.resolution, FromBackend):
            check_resolution(self.resolution)
        for name in ("points", "point_min_distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if isinstance(self.guidance, float | int) and not math.isfinite(self.guidance):
            raise ValueError(f"guidance must be a finite number, got {self.guidance}")
        check_point_strategy(self.point_strategy, self.points)
        check_choice("mask_choice", self.mask_choice, MASK_CHOICES)
        if isinstance(self.negative_points, bool) or not isinstance(self.negative_points, int) or self.negative_points < 0:
            raise ValueError(f"negative_points must be a whole number >= 0 (0: none), got {self.negative_points!r}")
        for name in ("box_prompt", "heatmap_mask"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def magnet_plan(self) -> MagnetPlan:
        """The magnets the expressions are tokenized with, as ``magnet_variant`` makes them."""
        return magnet_plan(self.magnet_variant, self.magnets, self.magnet_seed)

    def at(self, point: OperatingPoint) -> RefAMOptions:
        """These options with every value left to the backend taken from ``point``."""
        filled = point.fill(sigma=self.sigma, guidance=self.guidance, resolution=self.resolution)
        heatmap = dataclasses.replace(self.heatmap, **point.fill(score=self.heatmap.score))
        return dataclasses.replace(self, heatmap=heatmap, **filled)

    def replace(self, **changes: Any) -> RefAMOptions:
        """Copy with changes; heatmap fields (``noun_phrase=False``...) and feature fields may be
        given flat (``features="inversion"`` names the mode, ``gamma=0.5``, ``sigmas=(0.5, 0.75)``...)."""
        feature_fields = {f.name for f in dataclasses.fields(FeatureOptions)} - {"mode"}
        feat = {k: changes.pop(k) for k in list(changes) if k in feature_fields}
        if isinstance(changes.get("features"), str):
            feat["mode"] = changes.pop("features")
        if feat:
            base = changes.pop("features", self.features)
            if feat.get("mode", base.mode) != base.mode:
                # A switch of mode drops what only the other mode reads, unless given anew.
                feat = {"sigmas": None, "collect_steps": None, **feat}
            changes["features"] = dataclasses.replace(base, **feat)
        heat: dict[str, Any] = {}
        # ``blocks`` / ``skip_fraction`` come flat (indices, fraction) and become a BlockSelection;
        # this runs before the generic heatmap fields, one of which is also called ``blocks``.
        if "skip_fraction" in changes or "blocks" in changes:
            blocks = changes.pop("blocks", ())
            heat["blocks"] = (
                blocks
                if isinstance(blocks, BlockSelection)
                else BlockSelection(
                    indices=tuple(blocks or ()), skip_fraction=changes.pop("skip_fraction", 0.0)
                )
            )
        heat_fields = {f.name for f in dataclasses.fields(HeatmapOptions)}
        heat.update({k: changes.pop(k) for k in list(changes) if k in heat_fields})
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown RefAM option(s): {', '.join(sorted(unknown))}")
        out = dataclasses.replace(self, **changes)
        return dataclasses.replace(out, heatmap=dataclasses.replace(out.heatmap, **heat)) if heat else out
