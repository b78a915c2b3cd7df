"""Referring video segmentation: a RefAM point on a prompt frame, SAM2 carries the mask through the clip.

The paper takes the point from the first frame. Its stated limitation — the referred object may be
small, occluded or absent there — is addressed by ``prompt_frame="best"``: candidate frames are
scored by how peaked their heatmap is and the most evident one prompts SAM2, which then tracks
forward and backward. ``"first"`` keeps the paper's protocol; ``points_from=k`` adds the argmax
points of the ``k`` most evident frames as extra positive prompts.
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

__all__ = ["VideoResult", "candidate_frames", "choose_prompts", "frame_evidence", "frame_heatmaps", "segment_video", "segment_video_mochi"]


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
class VideoResult:
    """One expression on one clip."""

    expression: str
    prompt_frame: int
    prompts: list[VideoPrompt]
    evidence: dict[int, float]  # candidate frame -> frame_evidence
    heatmap: np.ndarray  # [H, W] heatmap of the prompt frame
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
    predictor: Any,
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
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> list[VideoResult]:
    """Per expression: the prompt frame's point(s) from RefAM, then SAM2 through the whole clip.

    ``predictor`` is a ``SAM2VideoPredictor`` (:func:`refam.segment.load_sam2_video`). Candidate
    frames go through the DiT ``batch`` at a time; all expressions share those passes.
    """
    texts = normalize_expressions(expressions)
    if points_from < 1:
        raise ValueError(f"points_from must be >= 1, got {points_from}")
    chosen = candidate_frames(len(frames), prompt_frame, candidates)
    heat_only = RefAMPipeline(pipeline.backend, None, pipeline.options)
    per_frame: dict[int, list[Any]] = {}
    for start in range(0, len(chosen), max(1, batch)):
        group = chosen[start : start + max(1, batch)]
        if progress:
            progress(f"heatmaps on frames {group}")
        images = np.stack([frames.frame(i) for i in group])
        # heatmap_mask off: SAM2 makes the masks here, the frames' heatmap masks would go unused
        found = heat_only.segment_batch(images, texts, caption, **{**overrides, "heatmap_mask": False})
        for index, results in zip(group, found, strict=True):
            per_frame[index] = results

    out = []
    for e, text in enumerate(texts):
        evidence = {i: frame_evidence(per_frame[i][e].heatmap_grid) for i in chosen}
        prompts = choose_prompts(
            evidence,
            {i: per_frame[i][e].points for i in chosen},
            points_from,
            labels={i: per_frame[i][e].labels for i in chosen},
            boxes={i: per_frame[i][e].box for i in chosen},
        )
        best = max(chosen, key=lambda i: (evidence[i], -i))
        if progress:
            progress(f"propagating {text!r} from frame {best}")
        masks = np.zeros((len(frames), *frames.size), dtype=bool)
        for index, mask, _score in propagate(
            predictor, frames, prompts, forward=forward, backward=backward, on_frame=on_frame
        ):
            masks[index] = mask
        out.append(
            VideoResult(
                expression=text,
                prompt_frame=best,
                prompts=prompts,
                evidence=evidence,
                heatmap=per_frame[best][e].heatmap,
                masks=masks,
                warnings=list(per_frame[best][e].warnings),
            )
        )
    return out


def choose_prompts(
    evidence: dict[int, float],
    points: dict[int, Sequence[Point]],
    points_from: int = 1,
    *,
    labels: dict[int, Sequence[int]] | None = None,
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


def frame_heatmaps(captured: Any, cues: Sequence[Any], options: Any, num_frames: int) -> torch.Tensor:
    """Per clip frame and expression ``[T, E, H, W]`` heatmaps from a Mochi capture (one capture
    image per latent frame); each frame takes its latent frame's heatmap, at the frame's size."""
    from refam.backends.mochi_layout import latent_frame_of
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


def segment_video_mochi(
    pipeline: RefAMPipeline,
    predictor: Any,
    frames: FrameSource,
    expressions: str | Sequence[str],
    caption: str = "",
    *,
    prompt_frame: str | int = "first",
    points_from: int = 1,
    forward: bool = True,
    backward: bool = True,
    on_frame: FrameCallback | None = None,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> list[VideoResult]:
    """The paper's video path: one Mochi pass over the whole clip (``pipeline.backend`` is a Mochi
    backend), then SAM2 tracks from a prompt frame through the clip.

    ``prompt_frame``: ``"first"`` (the paper: the point comes from the first frame), a frame index
    (prompted with its latent frame's heatmap), or ``"best"``: among one frame per latent frame,
    the one whose heatmap is most peaked (``points_from`` > 1 adds the next most evident ones).
    """
    from refam.backends.mochi_layout import latent_frame_of, representative_frames
    from refam.pipeline import expression_heatmaps, prompt_for
    from refam.points import upsample_heatmap

    if points_from < 1:
        raise ValueError(f"points_from must be >= 1, got {points_from}")
    opts = pipeline.resolved(**overrides)
    tokenized, cues = pipeline.tokenize(expressions, opts)
    clip = np.stack([frames.frame(t) for t in range(len(frames))])
    if progress:
        progress(f"Mochi pass over {len(frames)} frames")
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
    shown = representative_frames(len(frames), captured.batch_size)
    # candidate prompt frame -> the latent frame whose heatmap it takes
    if prompt_frame == "best":
        candidates = {f: c for c, f in enumerate(shown)}
    else:
        candidates = {f: latent_frame_of(f) for f in candidate_frames(len(frames), prompt_frame, 1)}
    out = []
    for heat, expr in zip(expression_heatmaps(captured, cues, opts.heatmap), tokenized, strict=True):
        evidence = {f: frame_evidence(heat.grid[c]) for f, c in candidates.items()}
        found = {f: prompt_for(heat.grid[c], captured.geometry, opts) for f, c in candidates.items()}
        prompts = choose_prompts(
            evidence,
            {f: p.points for f, p in found.items()},
            points_from,
            labels={f: p.labels for f, p in found.items()},
            boxes={f: p.box for f, p in found.items()},
        )
        best = max(candidates, key=lambda f: (evidence[f], -f))
        masks = np.zeros((len(frames), *frames.size), dtype=bool)
        for index, mask, _score in propagate(
            predictor, frames, prompts, forward=forward, backward=backward, on_frame=on_frame
        ):
            masks[index] = mask
        full = upsample_heatmap(heat.grid[candidates[best]][None], captured.geometry)[0].numpy()
        out.append(
            VideoResult(
                expression=expr.text,
                prompt_frame=best,
                prompts=prompts,
                evidence=evidence,
                heatmap=full,
                masks=masks,
                warnings=[*expr.warnings, *heat.warnings],
            )
        )
    return out
