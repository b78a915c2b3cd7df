"""``refam eval``: run RefAM over a benchmark split, resumably and sharded, and report the paper's table.

Records go to ``OUT/records.rank<R>.jsonl``, one line per sentence, flushed as they are written: a
killed run loses nothing finished, and a restarted one skips every key already scored (a sentence
skipped for an unreadable image is tried again). ``OUT/run.json`` holds the configuration the
records were made with; a run with another one is refused (:func:`refam.run_folder.check_config`),
and a lock per rank refuses a second process writing the same records. With
``torchrun`` / ``accelerate launch`` each rank takes the images ``i % world == rank`` of the sorted
image list; rank 0 merges every rank's records into the table (``--merge-only`` does it later).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refam.metrics import RisScores
from refam.run_folder import check_config, claim, inside

__all__ = [
    "PAPER",
    "PAPER_PROMPT",
    "PAPER_VIDEO",
    "PRESETS",
    "Shard",
    "davis_results_table",
    "evaluate_ref_davis",
    "evaluate_refer",
    "evaluate_video",
    "mean_over_sets",
    "summarize_video",
    "write_report",
    "predict_ytvos",
    "refer_run_keys",
    "video_run_keys",
    "zip_submission",
    "video_results_table",
    "load_records",
    "results_table",
    "run_config",
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

# Table 3 (video; J&F) and the point accuracy on Ref-DAVIS17.
PAPER_VIDEO = {"ref-davis17": {"J&F": 57.6, "PA": 68.9}, "mevis": {"J&F": 30.6}, "ref-youtube-vos": {"J&F": 42.7}}

# The paper's prompt ("identify the argmax location, and apply SAM", Fig. 2): the argmax point and
# SAM's own best mask, whatever the library's defaults are (refam.variants: DEFAULT_POINT_STRATEGY).
PAPER_PROMPT: dict[str, Any] = {
    "point_strategy": "argmax", "points": 1, "negative_points": 0, "box_prompt": False,
    "mask_choice": "sam_score", "heatmap_mask": False,
}
# ``full``: the library's defaults. ``paper``: Table 2 as published. Tables 4-6 switch attention
# magnets (AM), the noun-phrase filter (NP) and the spatial bias (SB) off, with the paper's prompt,
# so each row compares with ``paper``.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "paper": PAPER_PROMPT,
    "no-am": {**PAPER_PROMPT, "magnets": ()},
    "no-np": {**PAPER_PROMPT, "noun_phrase": False},
    "no-sb": {**PAPER_PROMPT, "spatial_bias": False},
    "no-am-np-sb": {**PAPER_PROMPT, "magnets": (), "noun_phrase": False, "spatial_bias": False},
    "am-only": {**PAPER_PROMPT, "noun_phrase": False, "spatial_bias": False},
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


def _open_records(out: Path, rank: int):
    """This rank's records file for appending. A line cut by a kill stays on its own (and is
    ignored by :func:`load_records`), never glued to the next record."""
    path = _records_path(out, rank)
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    return open(path, "a")  # noqa: SIM115 (the caller's with-block closes it)


def _check_limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of images / videos, got {limit!r} (leave it out for all)")
    return limit


def _video_groups(dataset: Any, limit: int | None) -> list[tuple[str, list[Any]]]:
    """A video dataset's samples grouped by video (all of a video's expressions share its passes),
    videos sorted, the first ``limit`` kept."""
    videos: dict[str, list[Any]] = {}
    for s in dataset.samples:
        videos.setdefault(s.video, []).append(s)
    return sorted(videos.items())[: _check_limit(limit)]


def load_records(out: str | Path) -> list[dict[str, Any]]:
    """Every rank's records, one per key: a key written twice by a resumed run counts once, and a
    scored record wins over a skip of the same key (the image was restored and the run resumed)."""
    seen: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(out).glob("records.rank*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: its sentence is redone on resume
            if not isinstance(record, dict) or "key" not in record:
                continue
            kept = seen.get(record["key"])
            if kept is None or "skipped" in kept or "skipped" not in record:
                seen[record["key"]] = record
    return list(seen.values())


def _scored_keys(out: Path) -> set[str]:
    return {r["key"] for r in load_records(out) if "skipped" not in r}


def _digest(mapping: Mapping[str, Any] | None) -> str | None:
    """A short fingerprint of a captions map: a run conditioned on other captions is another run."""
    if not mapping:
        return None
    return hashlib.sha1(json.dumps(dict(mapping), sort_keys=True).encode()).hexdigest()[:12]


def run_config(pipeline: Any, overrides: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """What decides a run's numbers: ``extra`` (dataset, split, caption source...), the model and
    segmenter, and every method option as resolved for the backend."""
    resolve = getattr(pipeline, "resolved", None)
    if callable(resolve):
        options: Any = dataclasses.asdict(resolve(**overrides))
    else:  # a stand-in pipeline (tests, custom wrappers): its type and overrides are what is known
        options = {k: repr(v) for k, v in overrides.items()}
    backend = getattr(pipeline, "backend", None)
    segmenter = getattr(pipeline, "segmenter", None)
    return {
        **extra,
        "model": getattr(backend, "name", type(pipeline).__name__),
        "segmenter": getattr(segmenter, "name", None if segmenter is None else type(segmenter).__name__),
        "options": options,
    }


@contextmanager
def _open_run(out: Path, shard: Shard, config: Mapping[str, Any]) -> Iterator[None]:
    """This rank's claim on ``out``, after checking ``config`` against the records already there."""
    out.mkdir(parents=True, exist_ok=True)
    with claim(out, shard.rank):
        has_results = any(out.glob("records.rank*.jsonl")) or (out / "Annotations").is_dir()
        check_config(out, config, has_results=has_results)
        yield


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
    truth) in ``OUT/visuals/`` for :func:`write_report`. ``run_info``: what else names the run
    (the CLI's dataset and caption source), stored in ``OUT/run.json`` with the options."""
    from refam.images import load_image

    shard = shard or Shard()
    out = Path(out)
    groups = list(dataset.by_image(split).items())[: _check_limit(limit)]
    mine = shard.take(groups)
    written = skipped = 0
    config = run_config(pipeline, overrides, **refer_run_keys(dataset, split, overlap, caption_mode), **(run_info or {}))
    with _open_run(out, shard, config), _open_records(out, shard.rank) as sink:
        done = _scored_keys(out)
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
                    _save_visual(inside(out, "visuals", f"{s.key.replace(':', '_')}.jpg"), image, res, pred, gt)
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
                        "noun_phrase": res.noun_phrase,
                        "parser": res.parser,
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


def _fit(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask on the frame's pixel grid (pad with background / crop) — some shipped
    annotations are a pixel narrower than their frames."""
    if mask.shape == tuple(size):
        return mask
    out = np.zeros(size, dtype=mask.dtype)
    h, w = min(size[0], mask.shape[0]), min(size[1], mask.shape[1])
    out[:h, :w] = mask[:h, :w]
    return out


@dataclass
class _VideoPass:
    """One video's expressions after RefAM and SAM2 (see :func:`_predicted_videos`)."""

    video: str
    samples: list[Any]
    frames: Any
    results: list[Any]
    seconds: float  # per expression
    caption: str


def _predicted_videos(
    pipeline: Any,
    predictor: Any,
    dataset: Any,
    pending: Callable[[str, list[Any]], list[Any]],
    *,
    prompt_frame: str | int,
    candidates: int,
    points_from: int,
    shard: Shard,
    limit: int | None,
    progress: Callable[[str], None] | None,
    mochi: bool,
    captions: dict[str, str] | None,
    overrides: dict[str, Any],
) -> Iterator[_VideoPass]:
    """This rank's videos whose ``pending(video, samples)`` expressions are not done yet, each
    predicted once (all its expressions share the passes), conditioned on its caption if given."""
    from refam.segment.sam2_video import FolderFrames

    for video, samples in shard.take(_video_groups(dataset, limit)):
        todo = pending(video, samples)
        if not todo:
            continue
        if progress:
            progress(f"[rank {shard.rank}] {video}: {len(todo)} expression(s)")
        frames = FolderFrames(dataset.frame_dir(video))
        caption = (captions or {}).get(video, "")
        start = time.perf_counter()
        results = _segment(pipeline, predictor, frames, [s.expression for s in todo], mochi,
                           prompt_frame, candidates, points_from, overrides, caption)
        yield _VideoPass(video, todo, frames, results, (time.perf_counter() - start) / len(todo), caption)


def evaluate_video(
    pipeline: Any,
    predictor: Any,
    dataset: Any,
    out: str | Path,
    *,
    prompt_frame: str | int = "first",
    candidates: int = 8,
    points_from: int = 1,
    shard: Shard | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    mochi: bool = False,
    captions: dict[str, str] | None = None,
    run_info: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Referring video segmentation over a dataset (Ref-DAVIS17, MeViS): per expression J, F, J&F
    on the annotated frames and whether the prompt point fell on the object; resumable like
    :func:`evaluate_refer`. All expressions of a video share the DiT passes."""
    from refam.metrics import jf_scores, point_in_mask

    shard = shard or Shard()
    out = Path(out)
    mine = shard.take(_video_groups(dataset, limit))
    written = 0
    protocol = _protocol(prompt_frame, candidates, points_from, mochi, captions)
    config = _video_config(pipeline, predictor, dataset, overrides, run_info, **protocol)
    with _open_run(out, shard, config), _open_records(out, shard.rank) as sink:
        done = _scored_keys(out)
        for run in _predicted_videos(
            pipeline, predictor, dataset, lambda _video, samples: [s for s in samples if s.key not in done],
            shard=shard, limit=limit, progress=progress, overrides=overrides, **protocol,
        ):
            for s, res in zip(run.samples, run.results, strict=True):
                gts = {t: _fit(m, run.frames.size) for t, m in dataset.masks(s).items()}
                frames_scored = sorted(gts)
                scores = jf_scores([res.masks[t] for t in frames_scored], [gts[t] for t in frames_scored])
                prompt = res.prompts[0]
                gt_prompt = gts.get(prompt.frame)
                _write(
                    sink,
                    {
                        "key": s.key,
                        "video": run.video,
                        "expression": s.expression,
                        "prompt_frame": prompt.frame,
                        "point": [round(v, 2) for v in prompt.points[0]],
                        "pa": bool(point_in_mask(prompt.points[0], gt_prompt)) if gt_prompt is not None else None,
                        "J": scores["J"],
                        "F": scores["F"],
                        "J&F": scores["J&F"],
                        "frames_scored": len(frames_scored),
                        "caption": run.caption,
                        "seconds": round(run.seconds, 3),
                    },
                )
                written += 1
    return {"rank": shard.rank, "written": written, "videos": len(mine)}


def evaluate_ref_davis(
    pipeline: Any,
    predictor: Any,
    dataset: Any,
    out: str | Path,
    *,
    prompt_frame: str | int = "first",
    candidates: int = 8,
    points_from: int = 1,
    shard: Shard | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    mochi: bool = False,
    captions: dict[str, str] | None = None,
    run_info: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Ref-DAVIS17 as the literature scores it: per video, every expression's masks painted into one
    label map by object id (a later expression of an object overwrites an earlier one), then
    davis2017's unsupervised task on the annotated frames — predicted objects matched to the
    ground-truth objects by the Hungarian method, one record per ground-truth object (J, F, J&F,
    the matched label, and whether the prompt point of its expression fell on it). Resumable per video."""
    from refam.metrics import davis_unsupervised, paint_labels, point_in_mask

    shard = shard or Shard()
    out = Path(out)
    mine = shard.take(_video_groups(dataset, limit))
    written = 0
    protocol = _protocol(prompt_frame, candidates, points_from, mochi, captions)
    config = _video_config(pipeline, predictor, dataset, overrides, run_info, **protocol)
    with _open_run(out, shard, config), _open_records(out, shard.rank) as sink:
        done = {r["video"] for r in load_records(out) if "skipped" not in r}
        for run in _predicted_videos(
            pipeline, predictor, dataset, lambda video, samples: [] if video in done else samples,
            shard=shard, limit=limit, progress=progress, overrides=overrides, **protocol,
        ):
            gt = {t: _fit(m, run.frames.size) for t, m in dataset.labels(run.video, run.samples[0].frames).items()}
            scored = sorted(gt)
            by_object = {s.targets[0]: res for s, res in zip(run.samples, run.results, strict=True)}
            predicted = paint_labels({obj: [res.masks[t] for t in scored] for obj, res in by_object.items()})
            matched = davis_unsupervised([gt[t] for t in scored], predicted)
            for obj, score in sorted(matched.items()):
                res = by_object.get(obj)
                prompt = res.prompts[0] if res is not None else None
                gt_prompt = gt.get(prompt.frame) if prompt is not None else None
                _write(
                    sink,
                    {
                        "key": f"{run.video}:object-{obj}",
                        "video": run.video,
                        "object": obj,
                        "expression": next((s.expression for s in run.samples if s.targets[0] == obj), None),
                        "matched": score["matched"],
                        "pa": bool(point_in_mask(prompt.points[0], gt_prompt == obj)) if gt_prompt is not None else None,
                        "J": score["J"],
                        "F": score["F"],
                        "J&F": score["J&F"],
                        "frames_scored": len(scored),
                        "caption": run.caption,
                        "seconds": round(run.seconds, 3),
                    },
                )
                written += 1
    return {"rank": shard.rank, "written": written, "videos": len(mine)}


def refer_run_keys(dataset: Any, split: str, overlap: str, caption_mode: str) -> dict[str, Any]:
    """The part of a refer run's configuration known before any model loads."""
    return {
        "dataset": getattr(dataset, "dataset", type(dataset).__name__),
        "split": split,
        "overlap": overlap,
        "caption_mode": caption_mode,
        "captions": _digest(getattr(dataset, "captions", None)) if caption_mode == "file" else None,
    }


def video_run_keys(dataset: Any, captions: Mapping[str, str] | None, **protocol: Any) -> dict[str, Any]:
    """The part of a video run's configuration known before any model loads (``protocol``: prompt
    frame, candidates, points_from, mochi)."""
    return {"dataset": type(dataset).__name__, "split": getattr(dataset, "split", None),
            "captions": _digest(captions), **protocol}


def _protocol(
    prompt_frame: str | int, candidates: int, points_from: int, mochi: bool, captions: dict[str, str] | None
) -> dict[str, Any]:
    """How a video evaluation prompts and conditions: what both its passes and its run.json take."""
    return {"prompt_frame": prompt_frame, "candidates": candidates, "points_from": points_from, "mochi": mochi,
            "captions": captions}


def _video_config(
    pipeline: Any, predictor: Any, dataset: Any, overrides: Mapping[str, Any], run_info: Mapping[str, Any] | None,
    *, captions: Mapping[str, str] | None, **protocol: Any,
) -> dict[str, Any]:
    extra = {**video_run_keys(dataset, captions, **protocol), "tracker": type(predictor).__name__, **(run_info or {})}
    return run_config(pipeline, overrides, **extra)


def mean_over_sets(per_set: dict[str, dict[str, Any]]) -> dict[str, float]:
    """J, F, J&F and PA averaged over Ref-DAVIS17's annotator sets (the figure papers report)."""
    return {k: float(np.mean([s[k] for s in per_set.values()])) for k in ("J", "F", "J&F", "PA")}


def davis_results_table(per_set: dict[str, dict[str, Any]]) -> str:
    """Ref-DAVIS17 over annotator sets: one row per set and their mean (the figure papers report)."""
    paper = PAPER_VIDEO.get("ref-davis17", {})
    lines = ["| annotator set | J | F | J&F | PA | objects |", "|---|---|---|---|---|---|"]
    for name, summary in per_set.items():
        lines.append(
            f"| {name} | {summary['J']:.2f} | {summary['F']:.2f} | {summary['J&F']:.2f} | {summary['PA']:.2f} | {summary['n']} |"
        )
    if len(per_set) > 1:
        mean = mean_over_sets(per_set)
        ref = f" (paper {paper['J&F']:.1f})" if "J&F" in paper else ""
        lines.append(f"| mean of {len(per_set)} sets | {mean['J']:.2f} | {mean['F']:.2f} | {mean['J&F']:.2f}{ref} | {mean['PA']:.2f} | |")
    return "\n".join(lines)


def summarize_video(records: Iterable[dict[str, Any]]) -> dict[str, float | int]:
    """Dataset J, F, J&F: the mean of the per-expression values (percent); PA over prompts with GT."""
    records = [r for r in records if "skipped" not in r]
    if not records:
        return {"J": math.nan, "F": math.nan, "J&F": math.nan, "PA": math.nan, "n": 0}
    pa = [r["pa"] for r in records if r.get("pa") is not None]
    return {
        "J": 100.0 * float(np.mean([r["J"] for r in records])),
        "F": 100.0 * float(np.mean([r["F"] for r in records])),
        "J&F": 100.0 * float(np.mean([r["J&F"] for r in records])),
        "PA": 100.0 * float(np.mean(pa)) if pa else math.nan,
        "n": len(records),
    }


def video_results_table(summary: dict[str, Any], dataset: str) -> str:
    paper = PAPER_VIDEO.get(dataset, {})

    def cell(metric: str) -> str:
        ref = paper.get(metric)
        return f"{summary[metric]:.2f}" + (f" (paper {ref:.1f})" if ref is not None else "")

    return "\n".join(
        [
            f"| {dataset} | J | F | J&F | PA | expressions |",
            "|---|---|---|---|---|---|",
            f"| RefAM (this run) | {summary['J']:.2f} | {summary['F']:.2f} | {cell('J&F')} | {cell('PA')} | {summary['n']} |",
        ]
    )


def _save_visual(path: Path, image: np.ndarray, result: Any, pred: np.ndarray, gt: np.ndarray) -> None:
    from PIL import Image

    from refam.visualize import draw_points, heatmap_overlay, mask_overlay

    point = [(result.point.x, result.point.y)]
    heat = getattr(result, "heatmap", None)
    first = heatmap_overlay(image, heat) if heat is not None else image
    panels = [
        draw_points(first, point),
        draw_points(mask_overlay(image, pred), point),
        mask_overlay(image, gt, colour=(40, 200, 80)),
    ]
    strip = Image.fromarray(np.concatenate(panels, axis=1))
    strip.thumbnail((960, 320))
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path, quality=85)


def write_report(out: str | Path, k: int = 12, title: str = "RefAM evaluation") -> Path:
    """``OUT/report.html``: the ``k`` best and ``k`` worst sentences by IoU, each with its picture
    (heatmap + point | prediction | ground truth) when ``visuals`` were saved."""
    import html

    out = Path(out)
    records = sorted((r for r in load_records(out) if "iou" in r), key=lambda r: r["iou"])
    summary = summarize(records)

    def rows(chosen: list[dict[str, Any]]) -> str:
        cells = []
        for r in chosen:
            pic = Path("visuals") / f"{r['key'].replace(':', '_')}.jpg"
            img = f'<img src="{pic}" width="480">' if (out / pic).is_file() else "(no picture)"
            cells.append(
                f"<tr><td>{img}</td><td>{html.escape(r['sentence'])}<br>IoU {r['iou']:.3f} · "
                f"point {'on' if r['pa'] else 'off'} the object</td></tr>"
            )
        return "\n".join(cells)

    body = f"""<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head><body>
<h1>{html.escape(title)}</h1>
<p>{summary['n']} sentences · oIoU {summary['oIoU']:.2f} · mIoU {summary['mIoU']:.2f} · PA {summary['PA']:.2f}.
Pictures: heatmap with the point | predicted mask | ground truth (green).</p>
<h2>Best {k}</h2><table>{rows(records[::-1][:k])}</table>
<h2>Worst {k}</h2><table>{rows(records[:k])}</table>
</body></html>"""
    path = out / "report.html"
    path.write_text(body)
    return path


def predict_ytvos(
    pipeline: Any,
    predictor: Any,
    dataset: Any,
    out: str | Path,
    *,
    prompt_frame: str | int = "first",
    candidates: int = 8,
    points_from: int = 1,
    shard: Shard | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    mochi: bool = False,
    captions: dict[str, str] | None = None,
    run_info: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Ref-YouTube-VOS predictions in the submission layout ``OUT/Annotations/<video>/<exp_id>/<frame>.png``
    (0/255 masks at frame size); an expression whose folder is complete is skipped on resume."""
    from PIL import Image

    shard = shard or Shard()
    out = Path(out)
    written = 0
    source = f"{getattr(dataset, 'root', 'the dataset')}'s meta_expressions.json"

    def folder(video: str, expression_id: str) -> Path:
        return inside(out, "Annotations", video, expression_id, source=source)

    def pending(video: str, samples: list[Any]) -> list[Any]:
        return [s for s in samples if len(list(folder(video, s.expression_id).glob("*.png"))) < len(s.frames)]

    protocol = _protocol(prompt_frame, candidates, points_from, mochi, captions)
    config = _video_config(pipeline, predictor, dataset, overrides, run_info, **protocol)
    with _open_run(out, shard, config):
        for run in _predicted_videos(
            pipeline, predictor, dataset, pending,
            shard=shard, limit=limit, progress=progress, overrides=overrides, **protocol,
        ):
            stems = [p.stem for p in run.frames.paths]
            for s, res in zip(run.samples, run.results, strict=True):
                target = folder(run.video, s.expression_id)
                target.mkdir(parents=True, exist_ok=True)
                for t, stem in enumerate(stems):
                    if stem in s.frames:
                        png = inside(target, f"{stem}.png", source=source)
                        Image.fromarray(res.masks[t].astype(np.uint8) * 255).save(png)
                written += 1
    return {"rank": shard.rank, "written": written}


def zip_submission(out: str | Path) -> Path:
    """``OUT/submission.zip`` holding ``Annotations/...`` as the Ref-YouTube-VOS server expects."""
    import zipfile

    out = Path(out)
    path = out / "submission.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for png in sorted((out / "Annotations").rglob("*.png")):
            z.write(png, png.relative_to(out))
    return path


def _segment(pipeline, predictor, frames, texts, mochi, prompt_frame, candidates, points_from, overrides, caption=""):
    """One video's expressions: Mochi over the clip, or FLUX on the prompt / candidate frames."""
    from refam.video import segment_video, segment_video_mochi

    if mochi:
        return segment_video_mochi(
            pipeline, predictor, frames, texts, caption, prompt_frame=prompt_frame, points_from=points_from, **overrides
        )
    return segment_video(
        pipeline, predictor, frames, texts, caption, prompt_frame=prompt_frame, candidates=candidates,
        points_from=points_from, **overrides,
    )
