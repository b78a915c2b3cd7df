"""What travels on RefAM's own sockets between nodes (plain containers, no algorithm)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from refam.attention import CapturedAttention, ExpressionLayout, ImageGeometry
from refam.expression import TokenizedExpression
from refam.heatmap import HeatmapOptions
from refam.language import LanguageCues
from refam.points import Point
from refam.prompts import Prompt

EXPRESSION = "REFAM_EXPRESSION"
ATTENTION = "REFAM_ATTENTION"
HEATMAP = "REFAM_HEATMAP"
POINTS = "REFAM_POINTS"
SEGMENTER = "REFAM_SEGMENTER"
FEATURES = "REFAM_FEATURES"  # a refam.features.FeatureOptions

# The order of every batched RefAM output: image-major, expressions in the order typed.
BATCH_ORDER = "image-major: entry = image_index * n_expressions + expression_index"


@dataclass
class Expressions:
    """Referring expressions, tokenized with roles, analysed and encoded by the model's T5."""

    tokenized: list[TokenizedExpression]
    cues: list[LanguageCues]
    embeds: torch.Tensor  # [1, L, D] float32 CPU
    layout: ExpressionLayout

    @property
    def texts(self) -> list[str]:
        return [t.text for t in self.tokenized]


@dataclass
class Attention:
    """Captured attention plus the heatmap options chosen so far along the chain."""

    captured: CapturedAttention
    expressions: Expressions
    options: HeatmapOptions = field(default_factory=HeatmapOptions)

    def with_options(self, **changes: Any) -> Attention:
        return replace(self, options=replace(self.options, **changes))


@dataclass
class Heatmaps:
    """Heatmaps on the latent grid for every (image, expression), in :data:`BATCH_ORDER`."""

    grids: torch.Tensor  # [B*E, h, w] in [0, 1]
    geometry: ImageGeometry
    texts: list[str]
    n_images: int
    warnings: list[str]


@dataclass
class Points:
    """Prompt points per (image, expression), in :data:`BATCH_ORDER`, in original-image pixels:
    the positive ones first, then any negative ones (``labels`` 1 / 0), with an optional box."""

    points: list[list[Point]]
    texts: list[str]
    n_images: int
    image_size: tuple[int, int]  # (H, W)
    prompts: list[Prompt] | None = None  # the full prompts (labels, box, heatmap regions), same order

    def labels(self, i: int) -> list[int]:
        return list(self.prompts[i].labels) if self.prompts else [1] * len(self.points[i])

    def box(self, i: int) -> tuple[float, float, float, float] | None:
        return self.prompts[i].box if self.prompts else None

FRAMES = "REFAM_FRAMES"


@dataclass
class FrameSelection:
    """Which frames of a clip were sent through the image chain (in that batch's order)."""

    indices: list[int]
    num_frames: int
    size: tuple[int, int]  # (H, W) of every frame
