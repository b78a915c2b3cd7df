"""``refam eval``: run RefAM over a benchmark split, resumably and sharded, and report the paper's table.

Records go to ``OUT/records.rank<R>.jsonl``, one line per sentence, flushed as they are written: a
killed run loses nothing finished, and a restarted one skips every key already there. With
``torchrun`` / ``accelerate launch`` each rank takes the images ``i % world == rank`` of the sorted
image list; rank 0 merges every rank's records into the table (``--merge-only`` does it later).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refam.metrics import RisScores

__all__ = [
    "PAPER",
    "PRESETS",
    "Shard",
    "evaluate_refer",
    "load_records",
    "results_table",
    "summarize",
]

# Table 2 of the paper (RefAM, FLUX; mIoU / oIoU), for the side-by-side column.
PAPER = {
    ("refcoco", "val"): {"mIoU": 57.24, "oIoU": 46.91},
    ("refcoco", "testA"): {"mIoU": 59.78, "oIoU": 52.30},
    ("refcoco", "testB"): {"mIoU": 53.32, "oIoU": 43.88},
    ("refcoco+", "val"): {"mIoU": 43.59},
    ("refcoco+", "testA"): {"mIoU": 47.28},
    ("refcoco+", "testB"): {"mIoU": 38.77},
    ("refcocog", "val"): {"mIoU": 47.11},
    ("refcocog", "test"): {"mIoU": 48.35},
}

# Tables 4-6: attention magnets (AM), noun-phrase filter (NP), spatial bias (SB) on and off.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-am": {"magnets": ()},
    "no-np": {"noun_phrase": False},
    "no-sb": {"spatial_bias": False},
    "no-am-np-sb": {"magnets": (), "noun_phrase": False, "spatial_bias": False},
    "am-only": {"noun_phrase": False, "spatial_bias": False},
}


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        """``RANK`` / ``WORLD_SIZE`` as ``torchrun`` and ``accelerate launch`` set them."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    def take(self, items: list[Any]) -> list[Any]:
        return items[self.rank :: self.world]


def _records_path(out: Path, rank: int) -> Path:
    return out / f"records.rank{rank}.jsonl"


def load_records(out: str | Path) -> list[dict[str, Any]]:
    """Every rank's records, one per key (a key written twice by a resumed run counts once)."""
    seen: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(out).glob("records.rank*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: its sentence is redone on resume
            seen[record["key"]] = record
    return list(seen.values())


def evaluate_refer(
    pipeline: Any,
    dataset: Any,
    split: str,
    out: str | Path,
    *,
    caption_mode: str = "coco",
    overlap: str = "union",
    shard: Shard | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate ``pipeline`` on ``dataset[split]``; returns this rank's counts (records are on disk)."""
    from refam.images import load_image

    shard = shard or Shard()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = {r["key"] for r in load_records(out)}
    groups = list(dataset.by_image(split).items())
    if limit is not None:
        groups = groups[:limit]
    mine = shard.take(groups)
    written = skipped = 0
    path = _records_path(out, shard.rank)
    if path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        with open(path, "a") as f:
            f.write("\n")  # a line cut by a kill stays on its own (and is ignored), never glued to the next
    with open(path, "a") as sink:
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
                    _write(sink, {"key": s.key, "image_id": image_id, "skipped": f"unreadable image: {exc}"})
                    skipped += 1
                continue
            caption = dataset.caption(image_id) if caption_mode == "coco" else ""
            start = time.perf_counter()
            results = pipeline.segment(image, [s.sentence for s in todo], caption, **overrides)
            seconds = (time.perf_counter() - start) / len(todo)
            for s, res in zip(todo, results, strict=True):
                gt = dataset.mask(s, overlap=overlap)
                scores = RisScores()
                pred = res.mask if res.mask is not None else np.zeros_like(gt)
                value = scores.add(pred, gt, point=(res.point.x, res.point.y))
                inter, union = int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))
                _write(
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
                        "seconds": round(seconds, 4),
                    },
                )
                written += 1
    return {"rank": shard.rank, "written": written, "skipped": skipped, "images": len(mine)}


def _write(sink: Any, record: dict[str, Any]) -> None:
    sink.write(json.dumps(record) + "\n")
    sink.flush()


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, float | int]:
    """oIoU (cumulative I / cumulative U), mIoU (mean per-sentence IoU), PA, in percent."""
    records = list(records)
    scored = [r for r in records if "skipped" not in r]
    skipped = len(records) - len(scored)
    if not scored:
        return {"oIoU": math.nan, "mIoU": math.nan, "PA": math.nan, "n": 0, "skipped": skipped}
    inter = sum(r["inter"] for r in scored)
    union = sum(r["union"] for r in scored)
    return {
        "oIoU": 100.0 * (inter / union if union else 1.0),
        "mIoU": 100.0 * float(np.mean([r["iou"] for r in scored])),
        "PA": 100.0 * float(np.mean([r["pa"] for r in scored])),
        "n": len(scored),
        "skipped": skipped,
    }


def results_table(summary: dict[str, Any], dataset: str, split: str) -> str:
    """The paper's columns with its numbers beside ours (``—`` where the paper reports none)."""
    paper = PAPER.get((dataset, split), {})

    def cell(metric: str) -> str:
        ours = summary[metric]
        ref = paper.get(metric)
        return f"{ours:.2f}" + (f" (paper {ref:.2f})" if ref is not None else "")

    rows = [
        f"| {dataset} {split} | oIoU | mIoU | PA | sentences | skipped |",
        "|---|---|---|---|---|---|",
        f"| RefAM (this run) | {cell('oIoU')} | {cell('mIoU')} | {summary['PA']:.2f} | {summary['n']} | {summary['skipped']} |",
    ]
    return "\n".join(rows)
