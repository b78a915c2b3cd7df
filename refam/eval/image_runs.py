"""Referring image segmentation runs over a refer-format split (RefCOCO, RefCOCO+, RefCOCOg)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from refam.eval.records import (
    Shard,
    check_limit,
    open_records,
    open_run,
    refer_run_keys,
    run_config,
    scored_keys,
    write_record,
)
from refam.eval.report import VISUALS, save_visual, visual_name
from refam.metrics import RisScores
from refam.run_folder import inside

__all__ = ["evaluate_refer"]


def evaluate_refer(
    pipeline: Any,
    dataset: Any,
    split: str,
    out: str | Path,
    *,
    caption_mode: str = "file",
    overlap: str = "union",
    shard: Shard | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    visuals: bool = False,
    run_info: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate ``pipeline`` on ``dataset[split]``; returns this rank's counts (records are on disk).

    ``visuals``: also save a small picture per sentence (heatmap + point | prediction | ground
    truth) in ``OUT/visuals/`` for :func:`refam.eval.write_report`. ``run_info``: what else names
    the run (the CLI's dataset and caption source), stored in ``OUT/run.json`` with the options."""
    from refam.images import load_image

    shard = shard or Shard()
    out = Path(out)
    groups = list(dataset.by_image(split).items())[: check_limit(limit)]
    mine = shard.take(groups)
    written = skipped = 0
    config = run_config(pipeline, overrides, **refer_run_keys(dataset, split, overlap, caption_mode), **(run_info or {}))
    with open_run(out, shard, config), open_records(out, shard.rank) as sink:
        done = scored_keys(out)
        for n, (image_id, samples) in enumerate(mine):
            todo = [s for s in samples if s.key not in done]
            if not todo:
                continue
            if progress:
                progress(f"[rank {shard.rank}] image {n + 1}/{len(mine)} ({image_id}): {len(todo)} sentence(s)")
            try:
                image = load_image(dataset.image_path(todo[0]))
            except (OSError, ValueError) as exc:
                for s in todo:
                    write_record(sink, {"key": s.key, "image_id": image_id, "skipped": f"unreadable image: {exc}"})
                    skipped += 1
                continue
            caption = dataset.caption(image_id) if caption_mode == "file" else ""
            start = time.perf_counter()
            results = pipeline.segment(image, [s.sentence for s in todo], caption, **overrides)
            seconds = (time.perf_counter() - start) / len(todo)
            for s, res in zip(todo, results, strict=True):
                gt = dataset.mask(s, overlap=overlap)
                scores = RisScores()
                pred = res.mask if res.mask is not None else np.zeros_like(gt)
                value = scores.add(pred, gt, point=(res.point.x, res.point.y))
                inter, union = int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))
                if visuals:
                    save_visual(inside(out, VISUALS, visual_name(s.key)), image, res, pred, gt)
                write_record(
                    sink,
                    {
                        "key": s.key,
                        "image_id": image_id,
                        "sentence": s.sentence,
                        "point": [round(res.point.x, 2), round(res.point.y, 2)],
                        "pa": bool(scores.point_accuracy == 1.0),
                        "iou": value,
                        "inter": inter,
                        "union": union,
                        "noun_phrase": res.noun_phrase,
                        "parser": res.parser,
                        "seconds": round(seconds, 4),
                    },
                )
                written += 1
    return {"rank": shard.rank, "written": written, "skipped": skipped, "images": len(mine)}
