"""Evaluation metrics for referring image and video segmentation.

All scores are fractions in ``[0, 1]``; papers usually print them multiplied by 100.

- :mod:`~refam.metrics.ris`: image (RefCOCO/+/g) — IoU, oIoU, mIoU, point accuracy, ``RisScores``.
- :mod:`~refam.metrics.davis`: video (Ref-DAVIS17) — J, F, J&F and the unsupervised matching, as
  ``davis2017-evaluation`` computes them.
- :mod:`~refam.metrics.heatmap_segmentation`: a heatmap as a segmentation (Table 11), scored as
  ConceptAttention scores it on ImageNet-Segmentation and PascalVOC — Acc, mIoU, mAP.
- :mod:`~refam.metrics.masks`: the mask types the others accept.
"""

from refam.metrics.davis import (
    boundary_map,
    boundary_radius,
    davis_unsupervised,
    f_measure,
    j_measure,
    jf_scores,
    paint_labels,
)
from refam.metrics.heatmap_segmentation import (
    BinaryCounts,
    CaCounts,
    HeatmapSegmentationScores,
    average_precision,
    ca_imagenet_ap,
    ca_imagenet_counts,
    ca_prediction,
    ca_voc_ap,
    ca_voc_counts,
    confusion_counts,
    plain_counts,
)
from refam.metrics.masks import MaskLike
from refam.metrics.ris import (
    RisScores,
    intersection_union,
    iou,
    mean_iou,
    overall_iou,
    point_accuracy,
    point_in_mask,
)

__all__ = [
    "BinaryCounts",
    "CaCounts",
    "HeatmapSegmentationScores",
    "MaskLike",
    "RisScores",
    "average_precision",
    "boundary_map",
    "boundary_radius",
    "ca_imagenet_ap",
    "ca_imagenet_counts",
    "ca_prediction",
    "ca_voc_ap",
    "ca_voc_counts",
    "confusion_counts",
    "davis_unsupervised",
    "f_measure",
    "intersection_union",
    "iou",
    "j_measure",
    "jf_scores",
    "mean_iou",
    "overall_iou",
    "paint_labels",
    "plain_counts",
    "point_accuracy",
    "point_in_mask",
]
