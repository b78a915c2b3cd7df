"""``refam segment-video FRAMES_OR_VIDEO "expression" ...``: RefAM points on a prompt frame, SAM2
tracks them through the clip; DAVIS-layout masks per expression."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from typing import Any

from .arguments import add_method_options, add_model_options, check_args, parse_prompt_frame
from .models import load_tracker, load_video_pipeline, note_ignored, ran_with
from .progress import StageLog
from .writers import fresh_out, write_video_outputs

__all__ = ["FRAMES_SCRATCH", "add_video_parser", "check_frames", "cmd_segment_video"]

# A decoded video's frames live in the output folder, not the system temp: a run killed mid-way
# leaves them where the next run into the same folder finds and removes them.
FRAMES_SCRATCH = ".refam_frames"


def add_video_parser(sub: Any) -> None:
    vid = sub.add_parser(
        "segment-video", help="segment a clip: RefAM point on a prompt frame, SAM2 tracks it through the clip"
    )
    vid.add_argument("source", help="folder of frames (DAVIS layout: 00000.jpg ...) or a video file (mp4, ...)")
    vid.add_argument("expressions", nargs="+", help="referring expression(s)")
    vid.add_argument("--out", default="refam_video_out", help="output folder (default: ./refam_video_out)")
    vid.add_argument(
        "--prompt-frame",
        default="first",
        help="'first' (the paper), 'best' (the frame whose heatmap is most peaked) or a frame index",
    )
    vid.add_argument("--candidates", type=int, default=8, help="frames scored with --prompt-frame best")
    vid.add_argument(
        "--video-model",
        default=os.environ.get("REFAM_MOCHI_MODEL"),
        help="Mochi (diffusers folder or cached hub id, env REFAM_MOCHI_MODEL): one Mochi pass over the clip "
        "(the paper's video path; σ 0.01, 480 px unless given) instead of FLUX on candidate frames",
    )
    vid.add_argument("--points-from", type=int, default=1, help="positive points from the N most evident frames")
    vid.add_argument("--quiet", action="store_true", help="no progress lines")
    add_method_options(vid)
    add_model_options(vid)
    vid.set_defaults(func=cmd_segment_video)


def check_frames(frames: Any, prompt_frame: str | int) -> None:
    """A clip's frames all one size and the prompt frame inside the clip, before any DiT pass."""
    verify = getattr(frames, "verify", None)
    if callable(verify):
        verify()
    if isinstance(prompt_frame, int) and prompt_frame >= len(frames):
        raise ValueError(f"--prompt-frame {prompt_frame}: the clip has {len(frames)} frames (0 to {len(frames) - 1})")


def cmd_segment_video(args: argparse.Namespace) -> int:
    from refam.pipeline import normalize_expressions
    from refam.run_folder import prepare_out
    from refam.segment.sam2_video import open_frames
    from refam.video import segment_video

    log = StageLog(args.quiet)
    expressions = normalize_expressions(args.expressions)
    if not args.segmenter:
        raise ValueError(
            "video propagation needs a SAM2 / SAM2.1 checkpoint: --segmenter sam2.1_hiera_large.pt "
            "(or REFAM_SEGMENTER; looked up in ComfyUI's models/sam2 and models/sams)"
        )
    check_args(args)
    prompt_frame = parse_prompt_frame(args.prompt_frame)
    scratch = prepare_out(args.out) / FRAMES_SCRATCH
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        frames = open_frames(args.source, scratch)
        check_frames(frames, prompt_frame)
        log(f"{len(frames)} frames of {frames.size[1]}x{frames.size[0]}")
        tracker = load_tracker(args)
        pipe = load_video_pipeline(args, log)
        note_ignored(args, pipe, log)
        results = segment_video(
            pipe,
            tracker,
            frames,
            expressions,
            args.caption,
            prompt_frame=prompt_frame,
            candidates=args.candidates,
            points_from=args.points_from,
            on_frame=_tracking_log(log),
            progress=log,
        )
        meta = {
            "source": str(args.source),
            "frames": len(frames),
            "frame_size": list(frames.size),
            "model": pipe.backend.name,
            "caption": args.caption,
            "prompt_frame": prompt_frame,
            "options": ran_with(pipe),
        }
        out = fresh_out(args.out, log)
        summary = write_video_outputs(out, frames, results, meta)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"wrote {len(results)} mask sequence(s) to {out}")
    for r in summary["results"]:
        print(json.dumps({k: r[k] for k in ("expression", "prompt_frame", "masks", "warnings")}))
    return 0


def _tracking_log(log: StageLog) -> Any:
    """A SAM2 frame callback that logs at most every two seconds, and the last frame."""
    last = {"t": 0.0}

    def on_frame(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last["t"] > 2.0:
            last["t"] = now
            log(f"tracked {done}/{total} frames")

    return on_frame
