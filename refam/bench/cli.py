"""The ``refam bench`` command line: one subcommand per benchmark, the result printed as a table
and as one JSON line (and written to ``--json`` when given)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]


def _flux_shape(p: argparse.ArgumentParser, heads: int, size: int) -> None:
    """The random FLUX's shape and input size (the capture and features benches)."""
    p.add_argument("--double", type=int, default=2)
    p.add_argument("--single", type=int, default=2)
    p.add_argument("--heads", type=int, default=heads, help="attention heads of 128 (24 = FLUX's width 3072)")
    p.add_argument("--size", type=int, default=size, help="image side in pixels (latent grid = size/16)")
    p.add_argument("--text-len", type=int, default=512, help="caption tokens (diffusers pads T5 to 512)")


def build_parser() -> argparse.ArgumentParser:
    import refam.bench

    parser = argparse.ArgumentParser(
        prog="refam bench",
        description=refam.bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="which")
    sub.add_parser(
        "toy", help="toy model: point accuracy / mIoU per kind, baselines, ablations", add_help=False
    )
    cap = sub.add_parser(
        "capture", help="the expression branch's cost on a random FLUX: time, bytes, overhead"
    )
    _flux_shape(cap, heads=24, size=512)
    cap.add_argument(
        "--dtypes", default="fp32,bf16", help="comma-separated, of fp32, bf16, fp16 (default fp32,bf16)"
    )
    cap.add_argument("--device", default=None)
    cap.add_argument("--runs", type=int, default=7, help="interleaved rounds (default 7)")
    cap.add_argument(
        "--full", action="store_true", help="the real depth (FLUX.1: 19 + 38 blocks; klein 4B: 5 + 20) at 1024² (GPU)"
    )
    cap.add_argument(
        "--model", choices=("flux1", "flux2-klein"), default="flux1",
        help="the random transformer's layout: FLUX.1's or FLUX.2 klein 4B's (shared modulation, Qwen3's 7680-wide text)",
    )
    cap.add_argument("--json", default=None, help="also write the JSON result to this file")
    feat = sub.add_parser(
        "features", help="single pass vs several σ vs RF-inversion on a random FLUX: seconds, ratios, memory"
    )
    _flux_shape(feat, heads=8, size=256)
    feat.add_argument("--steps", type=int, default=28, help="inversion and denoising steps (the paper: 28)")
    feat.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    feat.add_argument("--device", default=None)
    feat.add_argument("--runs", type=int, default=3, help="interleaved rounds (default 3)")
    feat.add_argument(
        "--full", action="store_true", help="the real FLUX.1 (19 + 38 blocks, width 3072) at 1024² in bf16 (GPU)"
    )
    feat.add_argument("--json", default=None, help="also write the JSON result to this file")
    moc = sub.add_parser("mochi", help="the expression branch's cost on a random Mochi (GPU)")
    moc.add_argument("--layers", type=int, default=48, help="Mochi blocks (48 = full size, ~10B parameters)")
    moc.add_argument("--frames", type=int, default=31)
    moc.add_argument("--height", type=int, default=480)
    moc.add_argument("--width", type=int, default=848)
    moc.add_argument("--dtypes", default="bf16", help="comma-separated, of fp32, bf16 (default bf16)")
    moc.add_argument("--device", default=None)
    moc.add_argument("--runs", type=int, default=7, help="interleaved rounds (default 7)")
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
    return parser


def _run(args: argparse.Namespace) -> dict[str, Any]:
    # Each bench imports its own heavy dependencies (diffusers, sam2) only when chosen.
    if args.which == "capture":
        from refam.bench.capture_cost import parse_dtypes
        from refam.bench.flux import bench_capture, print_capture

        parse_dtypes(args.dtypes)  # a typo fails before a model is built
        result = bench_capture(args)
        print_capture(result)
    elif args.which == "features":
        from refam.bench.features import bench_features, print_features

        result = bench_features(args)
        print_features(result)
    elif args.which == "mochi":
        from refam.bench.capture_cost import parse_dtypes
        from refam.bench.mochi import bench_mochi, print_mochi

        parse_dtypes(args.dtypes, ("fp32", "bf16"))
        result = bench_mochi(args)
        print_mochi(result)
    elif args.which == "memory":
        from refam.bench.memory import bench_memory, print_memory

        result = bench_memory(args)
        print_memory(result)
    else:
        from refam.bench.video import bench_video

        result = bench_video(args)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "toy":
        from refam.toy.bench import main as toy_main

        return toy_main(argv[1:])
    args = parser.parse_args(argv)
    if getattr(
        args, "child", None
    ):  # the measured process of `memory` / `video`: its result goes back on stdout
        if args.which == "memory":
            from refam.bench.memory import memory_child

            print(json.dumps(memory_child(args.child)))
        else:
            from refam.bench.video import video_child

            print(json.dumps(video_child(args)))
        return 0
    if args.which is None:
        args = parser.parse_args(["capture", *argv])
    if args.which == "capture" and args.full:
        args.double, args.single, args.size = (5, 20, 1024) if args.model == "flux2-klein" else (19, 38, 1024)
    if args.which == "features" and args.full:
        args.double, args.single, args.size, args.heads, args.dtype = 19, 38, 1024, 24, "bf16"
    try:
        result = _run(args)
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
