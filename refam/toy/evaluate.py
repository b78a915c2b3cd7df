"""Point accuracy and mIoU of a RefAM pipeline on held-out toy scenes, per expression kind."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from refam.metrics import RisScores, point_in_mask
from refam.toy import scenes
from refam.toy.worlds import world_of

__all__ = ["baselines", "evaluate", "near_miss"]


def evaluate(
    pipe: Any,
    examples: Sequence[scenes.ToyExample],
    *,
    size: tuple[int, int] = (48, 48),
    caption: str | None = "scene",
    **overrides: Any,
) -> dict[str, dict[str, float]]:
    """Per kind: point accuracy (point inside the named object's mask), mIoU/oIoU when the pipeline
    has a segmenter, and the count. ``caption="scene"`` conditions on each scene's own caption,
    ``None`` / ``""`` on the empty prompt."""
    per_kind: dict[str, RisScores] = defaultdict(RisScores)
    near: dict[str, int] = defaultdict(int)
    height, width = size
    for i, ex in enumerate(examples):
        world = world_of(ex.scene).scenes
        image = world.render(ex.scene, height, width)
        target = world.masks(ex.scene, height, width)[ex.referral.target]
        text = world.caption(ex.scene, np.random.default_rng(i)) if caption == "scene" else (caption or "")
        res = pipe.segment(image, ex.referral.text, text, **overrides)[0]
        pred = res.mask if res.mask is not None else np.zeros_like(target)
        per_kind[ex.referral.kind].add(pred, target, point=(res.point.x, res.point.y))
        near[ex.referral.kind] += near_miss((res.point.x, res.point.y), target, res.heatmap_grid.shape)
    out = {}
    for kind, sc in per_kind.items():
        d = sc.as_dict()
        out[kind] = {"pa": d["point_accuracy"], "miou": d["mIoU"], "oiou": d["oIoU"], "n": d["count"],
                     "near_miss": near[kind] / d["count"]}
    return out


def near_miss(point: tuple[float, float], target: np.ndarray, grid: tuple[int, ...]) -> bool:
    """The point is off the target, but by less than one latent patch: the heatmap found the object
    and the prompt missed it (an edge point), not a wrong object."""
    from scipy import ndimage

    if point_in_mask(point, target) or not target.any():
        return False
    height, width = target.shape
    row = min(max(int(point[1]), 0), height - 1)
    col = min(max(int(point[0]), 0), width - 1)
    patch = (height / grid[0], width / grid[1])
    # Distance to the nearest target pixel, in patches along each axis (patches need not be square).
    _, (rows, cols) = ndimage.distance_transform_edt(~target, return_indices=True)
    dy, dx = abs(rows[row, col] - row) / patch[0], abs(cols[row, col] - col) / patch[1]
    return bool(max(dy, dx) < 1.0)


def baselines(
    examples: Sequence[scenes.ToyExample], size: tuple[int, int] = (48, 48), seed: int = 0
) -> dict[str, dict[str, float]]:
    """Chance (target area fraction), image centre, and a random object's centre, per kind."""
    rng = np.random.default_rng(seed)
    height, width = size
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for ex in examples:
        all_masks = world_of(ex.scene).scenes.masks(ex.scene, height, width)
        target = all_masks[ex.referral.target]
        kind = acc[ex.referral.kind]
        kind["chance"].append(float(target.mean()))
        kind["centre"].append(float(point_in_mask((width / 2, height / 2), target)))
        pick = ex.scene.objects[int(rng.integers(len(ex.scene.objects)))]
        kind["random_object"].append(float(point_in_mask((pick.cx * width, pick.cy * height), target)))
    return {k: {name: float(np.mean(v)) for name, v in d.items()} for k, d in acc.items()}
