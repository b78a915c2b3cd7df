"""Referring video segmentation runs: Ref-DAVIS17 and MeViS scored per expression or per object,
Ref-YouTube-VOS written in its submission layout. All expressions of a video share one prompt →
propagate call of :func:`refam.video.segment_video`, which picks the image or video DiT path from
the backend."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refam.eval.records import (
    Shard,
    check_limit,
    load_records,
    open_records,
    open_run,
    run_config,
    scored_keys,
    video_run_keys,
    write_record,
)
from refam.run_folder import inside

__all__ = ["evaluate_ref_davis", "evaluate_video", "predict_ytvos"]


def _video_groups(dataset: Any, limit: int | None) -> list[tuple[str, list[Any]]]:
    """A video dataset's samples grouped by video (all of a video's expressions share its passes),
    videos sorted, the first ``limit`` kept."""
    videos: dict[str, list[Any]] = {}
    for s in dataset.samples:
        videos.setdefault(s.video, []).append(s)
    return sorted(videos.items())[: check_limit(limit)]


def _fit(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask on the frame's pixel grid (pad with background / crop) — some shipped
    annotations are a pixel narrower than their frames."""
    if mask.shape == tuple(size):
        return mask
    out = np.zeros(size, dtype=mask.dtype)
    h, w = min(size[0], mask.shape[0]), min(size[1], mask.shape[1])
    out[:h, :w] = mask[:h, :w]
    return out


def _protocol(
    prompt_frame: str | int, candidates: int, points_from: int, captions: dict[str, str] | None
) -> dict[str, Any]:
    """How a video evaluation prompts and conditions: what both its passes and its run.json take."""
    return {"prompt_frame": prompt_frame, "candidates": candidates, "points_from": points_from, "captions": captions}


def _video_config(
    pipeline: Any, predictor: Any, dataset: Any, overrides: Mapping[str, Any], run_info: Mapping[str, Any] | None,
    *, prompt_frame: str | int, candidates: int, points_from: int, mochi: bool, captions: Mapping[str, str] | None,
) -> dict[str, Any]:
    # ``mochi`` only names the run (segment_video reads the DiT path off the backend); it stays a
    # run.json key so a folder of FLUX records is never resumed with Mochi.
    keys = video_run_keys(
        dataset, captions, prompt_frame=prompt_frame, candidates=candidates, points_from=points_from, mochi=mochi
    )
    return run_config(pipeline, overrides, **{**keys, "tracker": type(predictor).__name__, **(run_info or {})})


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
    captions: dict[str, str] | None,
    overrides: dict[str, Any],
) -> Iterator[_VideoPass]:
    """This rank's videos whose ``pending(video, samples)`` expressions are not done yet, each
    predicted once (all its expressions share the passes), conditioned on its caption if given."""
    from refam.segment.sam2_video import FolderFrames
    from refam.video import segment_video

    for video, samples in shard.take(_video_groups(dataset, limit)):
        todo = pending(video, samples)
        if not todo:
            continue
        if progress:
            progress(f"[rank {shard.rank}] {video}: {len(todo)} expression(s)")
        frames = FolderFrames(dataset.frame_dir(video))
        caption = (captions or {}).get(video, "")
        start = time.perf_counter()
        results = segment_video(
            pipeline, predictor, frames, [s.expression for s in todo], caption,
            prompt_frame=prompt_frame, candidates=candidates, points_from=points_from, **overrides,
        )
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
    :func:`refam.eval.evaluate_refer`. All expressions of a video share the DiT passes."""
    from refam.metrics import jf_scores, point_in_mask

    shard = shard or Shard()
    out = Path(out)
    mine = shard.take(_video_groups(dataset, limit))
    written = 0
    protocol = _protocol(prompt_frame, candidates, points_from, captions)
    config = _video_config(pipeline, predictor, dataset, overrides, run_info, mochi=mochi, **protocol)
    with open_run(out, shard, config), open_records(out, shard.rank) as sink:
        done = scored_keys(out)
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
                write_record(
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
    protocol = _protocol(prompt_frame, candidates, points_from, captions)
    config = _video_config(pipeline, predictor, dataset, overrides, run_info, mochi=mochi, **protocol)
    with open_run(out, shard, config), open_records(out, shard.rank) as sink:
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
                write_record(
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

    protocol = _protocol(prompt_frame, candidates, points_from, captions)
    config = _video_config(pipeline, predictor, dataset, overrides, run_info, mochi=mochi, **protocol)
    with open_run(out, shard, config):
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
