"""What the pipeline returns for one expression on one image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refam.heatmap import TokenMap
from refam.language import SpatialCue
from refam.points import Point, points_to_json

__all__ = ["ExpressionResult"]


@dataclass
class ExpressionResult:
    """One expression on one image."""

    expression: str
    image_index: int
    heatmap: np.ndarray  # [H, W] float32 in [0, 1], original image size
    heatmap_grid: np.ndarray  # [h, w] on the latent grid
    point: Point  # the first positive point
    points: list[Point]  # every prompt point: the positive ones, then the negative ones
    mask: np.ndarray | None  # [H, W] bool, None without a segmenter (unless heatmap_mask)
    mask_score: float | None  # the segmenter's predicted IoU of the chosen candidate
    token_maps: list[TokenMap]
    gas_tokens: list[str]
    noun_phrase: str | None
    spatial: SpatialCue | None
    blocks: list[str]
    warnings: list[str]
    parser: str | None = None  # the spaCy pipeline that read the expression
    labels: list[int] = field(default_factory=list)  # per point: 1 positive, 0 negative
    box: tuple[float, float, float, float] | None = None  # (x0, y0, x1, y1) given to the segmenter
    mask_agreement: float | None = None  # IoU of the chosen candidate with the heatmap's target region
    mask_index: int | None = None  # which of the segmenter's candidates is the mask

    def positives(self) -> list[Point]:
        """The positive prompt points (all of them when no labels were recorded)."""
        if not self.labels:
            return list(self.points)
        return [p for p, label in zip(self.points, self.labels, strict=True) if label == 1]

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no arrays)."""
        return {
            "expression": self.expression,
            "image_index": self.image_index,
            "point": {"x": self.point.x, "y": self.point.y, "score": self.point.score},
            "points": points_to_json(self.points),
            "labels": list(self.labels),
            "box": [round(v, 2) for v in self.box] if self.box is not None else None,
            "mask_area": int(self.mask.sum()) if self.mask is not None else None,
            "mask_score": self.mask_score,
            "mask_agreement": self.mask_agreement,
            "mask_index": self.mask_index,
            "noun_phrase": self.noun_phrase,
            "spatial": (
                {"horizontal": self.spatial.horizontal, "vertical": self.spatial.vertical, "rule": self.spatial.rule}
                if self.spatial
                else None
            ),
            "parser": self.parser,
            "gas_tokens": self.gas_tokens,
            "tokens": [
                {"piece": t.piece, "role": t.role.value, "kept": t.kept, "gas": t.gas}
                for t in self.token_maps
            ],
            "blocks": self.blocks,
            "warnings": self.warnings,
        }
