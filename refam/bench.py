"""Benchmarks that print numbers (never pass/fail).

``python -m refam.bench capture`` (or ``refam bench capture``): on a FLUX-architecture transformer
with random weights (full width 3072 by default), measured side by side in one process:
  (a) capture overhead   = time(forward with the expression branch) / time(plain forward)
  (b) amortisation       = time(8 expressions, one pass) / time(1 expression, one pass)
  (c) extra peak memory of the capture (MB): CUDA peak allocation on GPU, peak RSS on CPU
Modes are interleaved run by run so machine noise hits all of them alike; medians are reported.

``refam bench memory [--size 8000x6000]``: peak RSS of ``refam segment`` (the embedded toy
model, CPU) on a synthetic image of that size, measured in a child process (target 1.5 GB).
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

EXPRESSIONS = (
    "the cat on the left",
    "a remote control",
    "the man in a red shirt holding a bat",
    "second giraffe from the right",
    "the bowl closest to the camera",
    "a white car parked behind the bus",
    "the smallest elephant",
    "woman with an umbrella on the top right",
)


def _shared_t5_tokenizer() -> Any:
    from transformers import AutoTokenizer

    here = Path(__file__).resolve().parents[2] / "shared" / "data" / "tokenizers" / "t5"
    if here.is_dir():
        return AutoTokenizer.from_pretrained(str(here))
    return None


def _expression_lengths(n: int) -> tuple[int, ...]:
    """Token counts of real expressions + the default magnets (the real T5 tokenizer when it is at hand)."""
    tok = _shared_t5_tokenizer()
    if tok is None:
        return tuple(6 + 2 * i for i in range(n))
    from refam.expression import tokenize_expression

    return tuple(tokenize_expression(EXPRESSIONS[i % len(EXPRESSIONS)], tok).valid_length for i in range(n))


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _measure_peak(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak memory above the level before ``fn`` (MB)."""
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
    base = _rss_mb("VmRSS")
    fn()
    return _rss_mb("VmHWM") - base


def build_model(
    width_heads: int, double: int, single: int, dtype: torch.dtype, device: torch.device, seed: int = 0
):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    with torch.device(device):
        model = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=double,
            num_single_layers=single,
            attention_head_dim=128,
            num_attention_heads=width_heads,
            joint_attention_dim=4096,
            pooled_projection_dim=768,
            guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        )
    return model.to(dtype).eval().requires_grad_(False)


def _time_modes(
    modes: dict[str, Callable[[], None]], runs: int, device: torch.device
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, float]]:
    """Modes interleaved over ``runs`` rounds after a warm-up: all times, medians, peak memory (MB)."""

    def timed(fn: Callable[[], None]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for fn in modes.values():  # warm-up: allocator, kernels, lazy imports
        fn()
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(runs):
        for name, fn in modes.items():
            times[name].append(timed(fn))
    peaks = {name: _measure_peak(fn, device) for name, fn in modes.items()}
    return times, {m: statistics.median(v) for m, v in times.items()}, peaks


def bench_mochi(args: argparse.Namespace) -> dict[str, Any]:
    """Mochi capture on a random Mochi (full size by default: 48 blocks, 10B parameters; GPU):
    seconds and peak memory of the pass with and without the expression branch (8 expressions)."""
    from diffusers import MochiTransformer3DModel

    from refam.attention import ExpressionLayout
    from refam.backends.diffusers_mochi import capture_mochi_attention
    from refam.backends.mochi_layout import latent_frames, mochi_timestep

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    with torch.device(device):
        model = MochiTransformer3DModel(num_layers=args.layers).to(dtype).eval()
    build_s = time.perf_counter() - t0
    g = torch.Generator("cpu").manual_seed(0)
    t_lat, h, w = latent_frames(args.frames), args.height // 8, args.width // 8
    lengths = _expression_lengths(8)
    inputs = dict(
        hidden_states=torch.randn(1, 12, t_lat, h, w, generator=g).to(device, dtype),
        encoder_hidden_states=torch.randn(1, 256, 4096, generator=g).to(device, dtype),
        encoder_attention_mask=torch.ones(1, 256, dtype=torch.long, device=device),
        timestep=torch.tensor([mochi_timestep(0.01)], device=device),
        return_dict=False,
    )
    embeds = torch.randn(1, sum(lengths), 4096, generator=g).to(device, dtype)

    def plain() -> None:
        model(**inputs)

    def captured() -> None:
        with capture_mochi_attention(model, embeds, ExpressionLayout(lengths)):
            model(**inputs)

    times, med, peaks = _time_modes({"plain": plain, "capture_8": captured}, args.runs, device)
    return {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "dtype": args.dtype,
        "model": f"Mochi, {args.layers} blocks (random)",
        "clip": f"{args.frames} frames {args.width}x{args.height} -> {t_lat}x{h // 2}x{w // 2} tokens",
        "build_s": round(build_s, 1),
        "median_s": {m: round(v, 3) for m, v in med.items()},
        "peak_mb": {m: round(v, 1) for m, v in peaks.items()},
        "capture_overhead": round(med["capture_8"] / med["plain"], 4),
    }


def bench_capture(args: argparse.Namespace) -> dict[str, Any]:
    from refam.attention import ExpressionLayout
    from refam.backends.diffusers_flux import capture_flux_attention
    from refam.backends.diffusers_flux_model import latent_image_ids

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    model = build_model(args.heads, args.double, args.single, dtype, device)
    build_s = time.perf_counter() - t0
    grid = args.size // 16
    n_img = grid * grid
    g = torch.Generator("cpu").manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, n_img, 64, generator=g).to(device, dtype),
        encoder_hidden_states=torch.randn(1, args.text_len, 4096, generator=g).to(device, dtype),
        pooled_projections=torch.randn(1, 768, generator=g).to(device, dtype),
        timestep=torch.full((1,), 0.75, device=device, dtype=dtype),
        guidance=torch.full((1,), 3.5, device=device),
        img_ids=latent_image_ids(grid, grid, device),
        txt_ids=torch.zeros(args.text_len, 3, device=device),
        return_dict=False,
    )
    lengths = {n: _expression_lengths(n) for n in (1, 8)}
    embeds = {n: torch.randn(1, sum(lengths[n]), 4096, generator=g).to(device, dtype) for n in lengths}

    def plain() -> None:
        model(**inputs)

    def captured(n: int) -> Callable[[], None]:
        def run() -> None:
            with capture_flux_attention(model, embeds[n], ExpressionLayout(lengths[n])):
                model(**inputs)

        return run

    modes = {"plain": plain, "capture_1": captured(1), "capture_8": captured(8)}
    times, med, peaks = _time_modes(modes, args.runs, device)
    result = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "dtype": args.dtype,
        "model": f"FLUX width {args.heads * 128}, {args.double} double + {args.single} single blocks (random)",
        "image": f"{args.size}x{args.size} ({n_img} image tokens), caption {args.text_len} tokens",
        "expression_tokens": {"1": sum(lengths[1]), "8": sum(lengths[8])},
        "runs": args.runs,
        "build_s": round(build_s, 1),
        "median_s": {m: round(v, 4) for m, v in med.items()},
        "all_s": {m: [round(x, 4) for x in v] for m, v in times.items()},
        "capture_overhead": round(med["capture_1"] / med["plain"], 4),
        "amortisation_8_vs_1": round(med["capture_8"] / med["capture_1"], 4),
        "peak_mb": {m: round(v, 1) for m, v in peaks.items()},
        "extra_peak_mb_capture_1": round(peaks["capture_1"] - peaks["plain"], 1),
        "extra_peak_mb_capture_8": round(peaks["capture_8"] - peaks["plain"], 1),
        "targets": {"capture_overhead": "<= 1.10", "amortisation_8_vs_1": "<= 1.5"},
    }
    return result


def _print_capture_table(r: dict[str, Any]) -> None:
    print(f"\nRefAM capture benchmark — {r['model']}, {r['image']}, {r['dtype']} on {r['device']}")
    print(
        f"median of {r['runs']} runs (interleaved); expression tokens: 1 expr = {r['expression_tokens']['1']}, "
        f"8 expr = {r['expression_tokens']['8']}"
    )
    print(f"{'mode':<12}{'median s':>10}{'peak MB':>10}")
    for m in ("plain", "capture_1", "capture_8"):
        print(f"{m:<12}{r['median_s'][m]:>10.3f}{r['peak_mb'][m]:>10.1f}")
    print(f"(a) capture overhead  {r['capture_overhead']:.3f}  (target <= 1.10)")
    print(f"(b) amortisation 8:1  {r['amortisation_8_vs_1']:.3f}  (target <= 1.5)")
    print(
        f"(c) extra peak memory {r['extra_peak_mb_capture_1']:.1f} MB (1 expr), {r['extra_peak_mb_capture_8']:.1f} MB (8 expr)"
    )


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
    """SAM2 video propagation speed and peak memory against clip length (random hiera-tiny).

    Every (length, memory mode) runs in a fresh process so one run's allocations cannot hide
    another's peak; memory is the peak RSS (or CUDA peak) above the level after model build.
    """
    import subprocess

    rows = []
    for mode in args.modes:
        for n in args.lengths:
            cmd = [sys.executable, "-m", "refam.bench", "video", "--child", str(n), "--image-size", str(args.image_size)]
            cmd += ["--device", args.device] if args.device else []
            cmd += ["--modes", mode]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{n:4d} frames  {mode:9}  {row['fps']:6.2f} fps  peak +{row['peak_mb']:8.1f} MB", flush=True)
    return {"image_size": args.image_size, "frame": "854x480", "rows": rows}


def _video_child(args: argparse.Namespace) -> dict[str, Any]:
    from refam.segment import SAM2_VIDEO_MODEL_OVERRIDES, build_sam2_module
    from refam.segment.sam2_video import VideoPrompt, propagate

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    predictor = build_sam2_module(
        "sam2.1_hiera_t", image_size=args.image_size, model_overrides=SAM2_VIDEO_MODEL_OVERRIDES, device=device
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
                    state, frame_idx=0, obj_id=1, points=np.array([[115.0, 225.0]], np.float32), labels=np.array([1], np.int32)
                )
                for _ in predictor.propagate_in_video(state):
                    pass
        else:
            prompt = [VideoPrompt(0, ((115.0, 225.0),))]
            for _ in propagate(predictor, clip, prompt, backward=False, bounded_memory=mode == "bounded"):
                pass
        timing["s"] = time.perf_counter() - start

    peak = _measure_peak(run, device)
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


MEMORY_TARGET_MB = 1536  # 1.5 GB: a 48-megapixel photo on a laptop with room to spare
MEMORY_EXPRESSION = "the red circle"


def _parse_size(text: str) -> tuple[int, int]:
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

    width, height = _parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="refam_bench_memory_") as scratch:
        _synthetic_scene(width, height).save(Path(scratch) / "scene.png")
        # Fixed arguments: the interpreter, this module and the scratch folder made above.
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


def _memory_child(folder: str) -> dict[str, float]:
    """``refam segment`` with the toy model: load_image -> segment -> the CLI's own outputs.
    Returns the peak RSS (MB) reached by the end of each stage."""
    from refam.cli import _write_outputs
    from refam.images import load_image
    from refam.pipeline import RefAMPipeline
    from refam.toy.model import load_toy
    from refam.toy.segmenter import FloodFillSegmenter

    stages: dict[str, float] = {"start": _rss_mb("VmHWM")}
    image = load_image(Path(folder) / "scene.png")
    stages["load_image"] = _rss_mb("VmHWM")
    pipe = RefAMPipeline(load_toy(device="cpu"), FloodFillSegmenter())  # load_pipeline's toy branch
    stages["load_model"] = _rss_mb("VmHWM")
    results = pipe.segment(image, [MEMORY_EXPRESSION])
    stages["segment"] = _rss_mb("VmHWM")
    meta = {"image": "scene.png", "image_size": [int(image.shape[0]), int(image.shape[1])], "model": pipe.backend.name}
    _write_outputs(Path(folder) / "out", image, results, meta)
    stages["write_outputs"] = _rss_mb("VmHWM")
    return {k: round(v, 1) for k, v in stages.items()}


def _print_memory(r: dict[str, Any]) -> None:
    verdict = "within" if r["within_target"] else "ABOVE"
    print(f"\nrefam segment memory — {r['image']} ({r['megapixels']} MP) synthetic image, embedded toy model, CPU")
    print(f"peak RSS {r['peak_rss_mb']:.0f} MB — {verdict} the target of {r['target_mb']} MB (1.5 GB)")
    print("peak by the end of: " + ", ".join(f"{k} {v:.0f}" for k, v in r["peak_mb_after"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="refam bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="which")
    sub.add_parser(
        "toy", help="toy model: point accuracy / mIoU per kind, baselines, ablations", add_help=False
    )
    cap = sub.add_parser("capture", help="capture overhead, amortisation and memory on a random FLUX")
    cap.add_argument("--double", type=int, default=2)
    cap.add_argument("--single", type=int, default=2)
    cap.add_argument("--heads", type=int, default=24, help="attention heads of 128 (24 = FLUX's width 3072)")
    cap.add_argument("--size", type=int, default=512, help="image side in pixels (latent grid = size/16)")
    cap.add_argument("--text-len", type=int, default=512, help="caption tokens (diffusers pads T5 to 512)")
    cap.add_argument("--dtype", default="bf16", choices=("bf16", "fp32", "fp16"))
    cap.add_argument("--device", default=None)
    cap.add_argument("--runs", type=int, default=5)
    cap.add_argument(
        "--full", action="store_true", help="the real FLUX.1 depth (19 + 38 blocks) at 1024² (GPU)"
    )
    cap.add_argument("--json", default=None, help="also write the JSON result to this file")
    moc = sub.add_parser("mochi", help="Mochi capture seconds and peak memory on a random Mochi (GPU)")
    moc.add_argument("--layers", type=int, default=48, help="Mochi blocks (48 = full size, ~10B parameters)")
    moc.add_argument("--frames", type=int, default=31)
    moc.add_argument("--height", type=int, default=480)
    moc.add_argument("--width", type=int, default=848)
    moc.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    moc.add_argument("--device", default=None)
    moc.add_argument("--runs", type=int, default=3)
    moc.add_argument("--json", default=None)
    vid = sub.add_parser("video", help="SAM2 video propagation fps and peak memory vs clip length")
    vid.add_argument("--lengths", type=int, nargs="+", default=[30, 100, 300])
    vid.add_argument("--image-size", type=int, default=1024, help="SAM2 input resolution (config: 1024)")
    vid.add_argument(
        "--modes",
        nargs="+",
        default=["bounded", "unbounded", "sam2"],
        choices=("bounded", "unbounded", "sam2"),
        help="bounded: RefAM's streaming + pruning; unbounded: streaming, sam2's bookkeeping; sam2: sam2's own init_state",
    )
    vid.add_argument("--device", default=None)
    vid.add_argument("--json", default=None)
    vid.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    mem = sub.add_parser("memory", help="peak RSS of refam segment (toy model) on a big synthetic image")
    mem.add_argument("--size", default="8000x6000", help="image WIDTHxHEIGHT in pixels (default 8000x6000)")
    mem.add_argument("--json", default=None, help="also write the JSON result to this file")
    mem.add_argument("--child", default=None, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "toy":
        from refam.toy.bench import main as toy_main

        return toy_main(argv[1:])
    args = parser.parse_args(argv)
    if getattr(args, "child", None):  # the measured process of `memory` / `video`: its result goes back on stdout
        print(json.dumps(_memory_child(args.child) if args.which == "memory" else _video_child(args)))
        return 0
    if args.which in (None, "capture"):
        if args.which is None:
            args = parser.parse_args(["capture", *argv])
        if args.full:
            args.double, args.single, args.size = 19, 38, 1024
    run, show = {
        "mochi": (bench_mochi, None),
        "memory": (bench_memory, _print_memory),
        "video": (bench_video, None),
        "capture": (bench_capture, _print_capture_table),
    }[args.which]
    result = run(args)
    if show is not None:
        show(result)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
