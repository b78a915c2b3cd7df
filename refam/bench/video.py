"""``refam bench video``: SAM2 video propagation speed and peak memory against clip length
(random hiera-tiny), RefAM's streaming against sam2's own loader."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from refam.bench.memory import measure_peak

__all__ = ["bench_video", "video_child"]


class _MovingSquare:
    """A synthetic clip rendered on demand (so the clip itself costs no memory): a square drifting."""

    def __init__(self, n: int, height: int = 480, width: int = 854) -> None:
        self.n, self.size = n, (height, width)

    def __len__(self) -> int:
        return self.n

    def frame(self, index: int) -> np.ndarray:
        h, w = self.size
        out = np.full((h, w, 3), 40, dtype=np.uint8)
        x = 40 + (index * 3) % (w - 200)
        out[150:300, x : x + 150] = (230, 60, 40)
        return out


def bench_video(args: argparse.Namespace) -> dict[str, Any]:
    """Every (length, memory mode) runs in a fresh process so one run's allocations cannot hide
    another's peak; memory is the peak RSS (or CUDA peak) above the level after model build."""
    rows = []
    for mode in args.modes:
        for n in args.lengths:
            cmd = [
                sys.executable,
                "-m",
                "refam.bench",
                "video",
                "--child",
                str(n),
                "--image-size",
                str(args.image_size),
            ]
            cmd += ["--device", args.device] if args.device else []
            cmd += ["--modes", mode]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{n:4d} frames  {mode:9}  {row['fps']:6.2f} fps  peak +{row['peak_mb']:8.1f} MB", flush=True
            )
    return {"image_size": args.image_size, "frame": "854x480", "rows": rows}


def video_child(args: argparse.Namespace) -> dict[str, Any]:
    """The measured process of one (length, mode): fps and peak memory."""
    from refam.segment import SAM2_VIDEO_MODEL_OVERRIDES, build_sam2_module
    from refam.segment.sam2_video import VideoPrompt, propagate

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    predictor = build_sam2_module(
        "sam2.1_hiera_t",
        image_size=args.image_size,
        model_overrides=SAM2_VIDEO_MODEL_OVERRIDES,
        device=device,
    )
    clip = _MovingSquare(args.child)
    mode = args.modes[0]
    timing: dict[str, float] = {}
    scratch = None
    if mode == "sam2":
        # sam2's own path: the clip as JPEGs, decoded into one tensor by init_state.
        import tempfile

        from PIL import Image

        scratch = tempfile.TemporaryDirectory(prefix="refam_bench_")
        for t in range(len(clip)):
            Image.fromarray(clip.frame(t)).save(f"{scratch.name}/{t:05d}.jpg", quality=90)

    def run() -> None:
        start = time.perf_counter()
        if mode == "sam2":
            with torch.inference_mode():
                state = predictor.init_state(scratch.name, offload_video_to_cpu=True)
                predictor.add_new_points_or_box(
                    state,
                    frame_idx=0,
                    obj_id=1,
                    points=np.array([[115.0, 225.0]], np.float32),
                    labels=np.array([1], np.int32),
                )
                for _ in predictor.propagate_in_video(state):
                    pass
        else:
            prompt = [VideoPrompt(0, ((115.0, 225.0),))]
            for _ in propagate(predictor, clip, prompt, backward=False, bounded_memory=mode == "bounded"):
                pass
        timing["s"] = time.perf_counter() - start

    peak = measure_peak(run, device)
    if scratch is not None:
        scratch.cleanup()
    return {
        "frames": args.child,
        "mode": mode,
        "device": str(device),
        "fps": args.child / timing["s"],
        "seconds": timing["s"],
        "peak_mb": peak,
    }
