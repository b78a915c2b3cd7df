"""``refam bench memory [--size 8000x6000]``: peak RSS of ``refam segment`` (the embedded toy model,
CPU) on a synthetic image of that size, measured in a child process (target 1.5 GB); and the
peak-memory helpers the video bench shares."""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "MEMORY_TARGET_MB",
    "bench_memory",
    "measure_peak",
    "memory_child",
    "parse_size",
    "print_memory",
    "rss_mb",
]

MEMORY_TARGET_MB = 1536  # 1.5 GB: a 48-megapixel photo on a laptop with room to spare
MEMORY_EXPRESSION = "the red circle"


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MB; NaN off Linux."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return float("nan")
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def measure_peak(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak memory above the level before ``fn`` (MB): CUDA peak allocation, else peak RSS."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    if not _peak_rss_reset():
        return float("nan")
    base = rss_mb("VmRSS")
    fn()
    return rss_mb("VmHWM") - base


def parse_size(text: str) -> tuple[int, int]:
    """``"8000x6000"`` -> (width, height), refused above what ``refam segment`` accepts."""
    from refam.images import MAX_PIXELS

    found = re.fullmatch(r"\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*", text)
    if not found or min(int(found.group(1)), int(found.group(2))) < 1:
        raise ValueError(f"--size {text!r} is not WIDTHxHEIGHT in pixels; write it like 8000x6000")
    width, height = int(found.group(1)), int(found.group(2))
    if width * height > MAX_PIXELS:
        raise ValueError(f"--size {text} is above refam's limit of {MAX_PIXELS} pixels; give a smaller size")
    return width, height


def _synthetic_scene(width: int, height: int) -> Any:
    """A toy-world picture at any size: a red disc left of centre on a flat grey page."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (width, height), (200, 200, 200))
    r, cx, cy = min(width, height) / 6, width / 3, height / 2
    ImageDraw.Draw(im).ellipse([cx - r, cy - r, cx + r, cy + r], fill=(220, 30, 30))
    return im


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of the ``refam segment`` path on a synthetic image, in a child process so that
    nothing of this one (the scene drawn, torch already loaded) counts."""
    import resource
    import subprocess
    import tempfile

    width, height = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="refam_bench_memory_") as scratch:
        _synthetic_scene(width, height).save(Path(scratch) / "scene.png")
        # Fixed arguments: the interpreter, this package and the scratch folder made above.
        cmd = [sys.executable, "-m", "refam.bench", "memory", "--child", scratch]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"the measured run failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    stages = json.loads(done.stdout.strip().splitlines()[-1])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0  # Linux: kB
    return {
        "image": f"{width}x{height}",
        "megapixels": round(width * height / 1e6, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "target_mb": MEMORY_TARGET_MB,
        "within_target": peak_mb <= MEMORY_TARGET_MB,
        "peak_mb_after": stages,
    }


def memory_child(folder: str) -> dict[str, float]:
    """``refam segment`` with the toy model: load_image -> segment -> the CLI's own outputs.
    Returns the peak RSS (MB) reached by the end of each stage."""
    from refam.cli.writers import write_image_outputs
    from refam.images import load_image
    from refam.pipeline import RefAMPipeline
    from refam.toy.model import load_toy
    from refam.toy.segmenter import toy_segmenter

    stages: dict[str, float] = {"start": rss_mb("VmHWM")}
    image = load_image(Path(folder) / "scene.png")
    stages["load_image"] = rss_mb("VmHWM")
    backend = load_toy(device="cpu")
    pipe = RefAMPipeline(backend, toy_segmenter(backend.world))  # the toy pipeline refam segment builds
    stages["load_model"] = rss_mb("VmHWM")
    results = pipe.segment(image, [MEMORY_EXPRESSION])
    stages["segment"] = rss_mb("VmHWM")
    meta = {
        "image": "scene.png",
        "image_size": [int(image.shape[0]), int(image.shape[1])],
        "model": pipe.backend.name,
    }
    write_image_outputs(Path(folder) / "out", image, results, meta)
    stages["write_outputs"] = rss_mb("VmHWM")
    return {k: round(v, 1) for k, v in stages.items()}


def print_memory(r: dict[str, Any]) -> None:
    verdict = "within" if r["within_target"] else "ABOVE"
    print(
        f"\nrefam segment memory — {r['image']} ({r['megapixels']} MP) synthetic image, embedded toy model, CPU"
    )
    print(f"peak RSS {r['peak_rss_mb']:.0f} MB — {verdict} the target of {r['target_mb']} MB (1.5 GB)")
    print("peak by the end of: " + ", ".join(f"{k} {v:.0f}" for k, v in r["peak_mb_after"].items()))
