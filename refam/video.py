"""Referring video segmentation, one routine for every backend: RefAM points on prompt frames, then
the SAM2 video predictor carries the mask through the clip.

The paper takes the point from the first frame. Its stated limitation — the referred object may be
small, occluded or absent there — is addressed by ``prompt_frame="best"``: candidate frames are
scored by how peaked their heatmap is and the most evident one prompts SAM2, which then tracks
forward and backward. ``"first"`` keeps the paper's protocol; ``points_from=k`` adds the argmax
points of the ``k`` most evident frames as extra positive prompts.

Where the heatmaps come from is the backend's ``modality``: an image backend (FLUX) runs on the
candidate frames a batch at a time; a video backend (Mochi) makes one pass over the whole clip and
gives one heatmap per latent frame. Both end in :func:`prompt_and_track`, which the ComfyUI
Propagate node calls too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from refam.pipeline import RefAMPipeline, normalize_expressions
from refam.points import Point
from refam.segment.sam2_video import FrameCallback, FrameSource, VideoPrompt, propagate

__all__ = [
    "FrameFinding",
    "VideoResult",
    "candidate_frames",
    "choose_prompts",
    "frame_evidence",
    "frame_heatmaps",
    "prompt_and_track",
    "segment_video",
]

Progress = Callable[[str], None]


def frame_evidence(heatmap_grid: np.ndarray | torch.Tensor) -> float:
    """How clearly one frame shows the referred object: 1 - mean of the [0, 1] heatmap.

    A heatmap with one sharp peak on a cold background scores near 1; a diffuse one (nothing
    stands out, or the object is absent) scores low.
    """
    grid = torch.as_tensor(np.asarray(heatmap_grid), dtype=torch.float32)
    lo, hi = grid.min(), grid.max()
    if float(hi - lo) <= 1e-12:
        return 0.0
    return float(1.0 - ((grid - lo) / (hi - lo)).mean())


def candidate_frames(num_frames: int, prompt_frame: str | int, candidates: int) -> list[int]:
    """Frames whose heatmaps are computed: the given index, the first, or ``candidates`` spread evenly."""
    if num_frames < 1:
        raise ValueError("the clip has no frames")
    if isinstance(prompt_frame, (int, np.integer)) and not isinstance(prompt_frame, bool):
        if not 0 <= prompt_frame < num_frames:
            raise ValueError(f"prompt_frame {prompt_frame} is outside the clip of {num_frames} frames")
        return [int(prompt_frame)]
    if prompt_frame == "first":
        return [0]
    if prompt_frame != "best":
        raise ValueError(f"prompt_frame must be 'first', 'best' or a frame index, got {prompt_frame!r}")
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    count = min(candidates, num_frames)
    return sorted({round(i * (num_frames - 1) / max(count - 1, 1)) for i in range(count)})


@dataclass
class FrameFinding:
    """What RefAM found on one candidate frame for one expression: the prompt SAM2 would get there
    and how evident the object is."""

    evidence: float
    points: Sequence[Point]
    labels: Sequence[int] | None = None  # default: every point positive
    box: tuple[float, float, float, float] | None = None
    # The frame-size heatmap, made on demand: only the prompt frame's is kept, and upsampling every
    # latent frame of a long clip would cost memory for nothing.
    heatmap: Callable[[], np.ndarray] | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class VideoResult:
    """One expression on one clip."""

    expression: str
    prompt_frame: int
    prompts: list[VideoPrompt]
    evidence: dict[int, float]  # candidate frame -> frame_evidence
    heatmap: np.ndarray | None  # [H, W] heatmap of the prompt frame (None when given only points)
    masks: np.ndarray  # [T, H, W] bool, frame order
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "expression": self.expression,
            "prompt_frame": self.prompt_frame,
            "prompts": [
                {
                    "frame": p.frame,
                    "points": [list(xy) for xy in p.points],
                    "labels": list(p.labels) if p.labels is not None else [1] * len(p.points),
                    "box": list(p.box) if p.box is not None else None,
                }
                for p in self.prompts
            ],
            "evidence": {str(k): round(v, 4) for k, v in self.evidence.items()},
            "mask_area_per_frame": [int(m.sum()) for m in self.masks],
            "warnings": self.warnings,
        }


def segment_video(
    pipeline: RefAMPipeline,
    tracker: Any,
    frames: FrameSource,
    expressions: str | Sequence[str],
    caption: str = "",
    *,
    prompt_frame: str | int = "first",
    candidates: int = 8,
    points_from: int = 1,
    batch: int = 4,
    forward: bool = True,
    backward: bool = True,
    on_frame: FrameCallback | None = None,
    progress: Progress | None = None,
    **overrides: Any,
) -> list[VideoResult]:
    """Per expression: the prompt frame's point(s) from RefAM, then SAM2 through the whole clip.

    ``tracker`` is a ``SAM2VideoPredictor`` (:func:`refam.segment.load_sam2_video`). The backend's
    ``modality`` decides where the heatmaps come from. An image backend runs on the candidate frames
    (``prompt_frame`` itself, or ``candidates`` spread over the clip for ``"best"``), ``batch`` at a
    time; all expressions share those passes. A video backend makes one pass over the clip and a
    frame takes its latent frame's heatmap; ``"best"`` chooses among one frame per latent frame, so
    ``candidates`` and ``batch`` do not apply.
    """
    texts = normalize_expressions(expressions)
    if points_from < 1:
        raise ValueError(f"points_from must be >= 1, got {points_from}")
    if getattr(pipeline.backend, "modality", "image") == "video":
        found = _clip_findings(pipeline, frames, texts, caption, prompt_frame, progress, overrides)
    else:
        found = _frame_findings(pipeline, frames, texts, caption, prompt_frame, candidates, batch, progress, overrides)
    track = {"forward": forward, "backward": backward, "on_frame": on_frame, "progress": progress}
    return [prompt_and_track(tracker, frames, text, findings, points_from, **track) for text, findings in found]


def prompt_and_track(
    tracker: Any,
    frames: FrameSource,
    expression: str,
    findings: dict[int, FrameFinding],
    points_from: int = 1,
    *,
    forward: bool = True,
    backward: bool = True,
    on_frame: FrameCallback | None = None,
    progress: Progress | None = None,
) -> VideoResult:
    """From what was found on the candidate frames to the clip's masks: the most evident frames
    prompt SAM2 (:func:`choose_prompts`), which propagates through the clip into ``[T, H, W]``."""
    if not findings:
        raise ValueError(f"no candidate frame for {expression!r}")
    evidence = {f: found.evidence for f, found in findings.items()}
    prompts = choose_prompts(
        evidence,
        {f: found.points for f, found in findings.items()},
        points_from,
        labels={f: found.labels for f, found in findings.items()},
        boxes={f: found.box for f, found in findings.items()},
    )
    best = max(findings, key=lambda f: (evidence[f], -f))
    if progress:
        progress(f"propagating {expression!r} from frame {best}")
    masks = np.zeros((len(frames), *frames.size), dtype=bool)
    for index, mask, _score in propagate(tracker, frames, prompts, forward=forward, backward=backward, on_frame=on_frame):
        masks[index] = mask
    chosen = findings[best]
    return VideoResult(
        expression=expression,
        prompt_frame=best,
        prompts=prompts,
        evidence=evidence,
        heatmap=chosen.heatmap() if chosen.heatmap is not None else None,
        masks=masks,
        warnings=list(chosen.warnings),
    )


def choose_prompts(
    evidence: dict[int, float],
    points: dict[int, Sequence[Point]],
    points_from: int = 1,
    *,
    labels: dict[int, Sequence[int] | None] | None = None,
    boxes: dict[int, tuple[float, float, float, float] | None] | None = None,
) -> list[VideoPrompt]:
    """SAM2 prompts from the ``points_from`` most evident candidate frames (ties: the earlier frame);
    per frame its points, their ``labels`` (default: all positive) and its box (default: none)."""
    if points_from < 1:
        raise ValueError(f"points_from must be >= 1, got {points_from}")
    ranked = sorted(evidence, key=lambda i: (-evidence[i], i))
    return [
        VideoPrompt(
            i,
            tuple(_xy(p) for p in points[i]),
            tuple(int(v) for v in labels[i]) if labels and labels.get(i) else None,
            (boxes or {}).get(i),
        )
        for i in sorted(ranked[:points_from])
    ]


def _xy(point: Point) -> tuple[float, float]:
    return (float(point.x), float(point.y))


def _frame_findings(
    pipeline: RefAMPipeline,
    frames: FrameSource,
    texts: list[str],
    caption: str,
    prompt_frame: str | int,
    candidates: int,
    batch: int,
    progress: Progress | None,
    overrides: dict[str, Any],
) -> list[tuple[str, dict[int, FrameFinding]]]:
    """An image backend: the candidate frames through the DiT ``batch`` at a time."""
    chosen = candidate_frames(len(frames), prompt_frame, candidates)
    heat_only = RefAMPipeline(pipeline.backend, None, pipeline.options)
    found: list[dict[int, FrameFinding]] = [{} for _ in texts]
    step = max(1, batch)
    for start in range(0, len(chosen), step):
        group = chosen[start : start + step]
        if progress:
            progress(f"heatmaps on frames {group}")
        images = np.stack([frames.frame(i) for i in group])
        # heatmap_mask off: SAM2 makes the masks here, the frames' heatmap masks would go unused
        results = heat_only.segment_batch(images, texts, caption, **{**overrides, "heatmap_mask": False})
        for index, per_expression in zip(group, results, strict=True):
            for e, r in enumerate(per_expression):
                found[e][index] = FrameFinding(
                    evidence=frame_evidence(r.heatmap_grid),
                    points=r.points,
                    labels=r.labels,
                    box=r.box,
                    heatmap=lambda r=r: r.heatmap,
                    warnings=list(r.warnings),
                )
    return list(zip(texts, found, strict=True))


def _clip_findings(
    pipeline: RefAMPipeline,
    frames: FrameSource,
    texts: list[str],
    caption: str,
    prompt_frame: str | int,
    progress: Progress | None,
    overrides: dict[str, Any],
) -> list[tuple[str, dict[int, FrameFinding]]]:
    """A video backend: one pass over the whole clip, one heatmap per latent frame; a candidate
    frame is prompted with its latent frame's heatmap."""
    from refam.architectures.mochi import latent_frame_of, representative_frames
    from refam.pipeline import expression_heatmaps, prompt_for
    from refam.points import upsample_heatmap

    # An explicit frame is checked before the pass, not after minutes of it.
    fixed = None if prompt_frame == "best" else candidate_frames(len(frames), prompt_frame, 1)
    opts = pipeline.resolved(**overrides)
    tokenized, cues = pipeline.tokenize(texts, opts)
    clip = np.stack([frames.frame(t) for t in range(len(frames))])
    if progress:
        progress(f"one {pipeline.backend.name} pass over {len(frames)} frames")
    captured = pipeline.backend.capture(
        clip,
        tokenized,
        caption,
        sigma=opts.sigma,
        seed=opts.seed,
        resolution=opts.resolution,
        blocks=opts.capture_blocks,
        progress=progress,
    )
    if fixed is None:
        latent_of = {f: c for c, f in enumerate(representative_frames(len(frames), captured.batch_size))}
    else:
        latent_of = {f: latent_frame_of(f) for f in fixed}
    out = []
    for heat, expr in zip(expression_heatmaps(captured, cues, opts.heatmap), tokenized, strict=True):
        findings = {}
        for f, c in latent_of.items():
            prompt = prompt_for(heat.grid[c], captured.geometry, opts)
            findings[f] = FrameFinding(
                evidence=frame_evidence(heat.grid[c]),
                points=prompt.points,
                labels=prompt.labels,
                box=prompt.box,
                heatmap=lambda grid=heat.grid[c]: upsample_heatmap(grid[None], captured.geometry)[0].numpy(),
                warnings=[*expr.warnings, *heat.warnings],
            )
        out.append((expr.text, findings))
    return out


def frame_heatmaps(captured: Any, cues: Sequence[Any], options: Any, num_frames: int) -> torch.Tensor:
    """Per clip frame and expression ``[T, E, H, W]`` heatmaps from a video capture (one capture
    image per latent frame); each frame takes its latent frame's heatmap, at the frame's size."""
    from refam.architectures.mochi import latent_frame_of
    from refam.pipeline import expression_heatmaps
    from refam.points import upsample_heatmap

    heats = expression_heatmaps(captured, cues, options)
    per_latent = torch.stack([upsample_heatmap(h.grid, captured.geometry) for h in heats], dim=1)
    index = torch.tensor([latent_frame_of(t) for t in range(num_frames)])
    if int(index.max()) >= per_latent.shape[0]:
        raise ValueError(
            f"{num_frames} frames need {int(index.max()) + 1} latent frames; the capture has {per_latent.shape[0]}"
        )
    return per_latent[index]
