"""Which of the segmenter's candidate masks is the answer: SAM's own pick, or the heatmap's.

The rules are :data:`refam.variants.MASK_CHOICES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from refam.regions import HeatmapRegions
from refam.variants import DEFAULT_MASK_CHOICE, MASK_CHOICES, check_choice

if TYPE_CHECKING:
    from refam.segment.base import MaskPrediction

__all__ = ["MaskChoice", "choose_mask"]


@dataclass(frozen=True)
class MaskChoice:
    """The chosen candidate: its index, mask, the segmenter's score and its agreement."""

    index: int
    mask: np.ndarray  # [H, W] bool
    score: float  # the segmenter's predicted IoU of this candidate
    agreement: float  # its IoU with the heatmap's target region
    agreements: np.ndarray  # [K] every candidate's


def choose_mask(
    prediction: MaskPrediction, regions: HeatmapRegions, rule: str = DEFAULT_MASK_CHOICE
) -> MaskChoice:
    """The candidate of ``prediction`` that ``rule`` picks.

    ``sam_score``: the highest predicted IoU (``prediction.mask``). ``agreement``: the highest IoU
    with the heatmap's target region upsampled to the image (:meth:`HeatmapRegions.agreement`),
    ties to the higher predicted IoU, then the lower index.
    """
    check_choice("mask_choice", rule, MASK_CHOICES)
    agreements = regions.agreement(prediction.masks)
    scores = np.asarray(prediction.scores, dtype=np.float64)
    if rule == "sam_score":
        index = int(np.argmax(scores))
    else:
        index = int(np.lexsort((np.arange(len(scores)), -scores, -agreements.astype(np.float64)))[0])
    return MaskChoice(
        index=index,
        mask=prediction.masks[index],
        score=float(scores[index]),
        agreement=float(agreements[index]),
        agreements=agreements,
    )
