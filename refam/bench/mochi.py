"""``refam bench mochi``: what the expression branch costs on a random Mochi (full size by default:
48 blocks, 10B parameters — a GPU job), 8 expressions, measured as in :mod:`.capture_cost`."""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from refam.bench.capture_cost import (
    CaptureWorkload,
    expression_lengths,
    measure_capture_cost,
    parse_dtypes,
    print_capture_cost,
)
from refam.dtypes import parse_dtype

__all__ = ["bench_mochi", "print_mochi"]

COUNTS = (8,)


def _workload(
    args: argparse.Namespace, dtype: torch.dtype, device: torch.device
) -> tuple[CaptureWorkload, float]:
    from diffusers import MochiTransformer3DModel

    from refam.architectures.mochi import latent_frames, mochi_timestep
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = MochiTransformer3DModel(num_layers=args.layers).to(dtype).eval().requires_grad_(False)
    build_s = time.perf_counter() - t0
    g = torch.Generator("cpu").manual_seed(0)
    t_lat, h, w = latent_frames(args.frames), args.height // 8, args.width // 8
    lengths = expression_lengths(8)
    inputs = dict(
        hidden_states=torch.randn(1, 12, t_lat, h, w, generator=g).to(device, dtype),
        encoder_hidden_states=torch.randn(1, 256, 4096, generator=g).to(device, dtype),
        encoder_attention_mask=torch.ones(1, 256, dtype=torch.long, device=device),
        timestep=torch.tensor([mochi_timestep(0.01)], device=device),
        return_dict=False,
    )
    embeds = torch.randn(1, sum(lengths), 4096, generator=g).to(device, dtype)

    return CaptureWorkload.of(model, inputs, {8: embeds}, {8: lengths}, device), build_s


@torch.no_grad()  # scoped: a global switch would leak into whatever runs next in the process
def bench_mochi(args: argparse.Namespace) -> dict[str, Any]:
    from refam.architectures.mochi import latent_frames

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t_lat, h, w = latent_frames(args.frames), args.height // 8, args.width // 8
    result: dict[str, Any] = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "model": f"Mochi, {args.layers} blocks (random)",
        "clip": f"{args.frames} frames {args.width}x{args.height} -> {t_lat}x{h // 2}x{w // 2} tokens",
        "expression_tokens": {"8": sum(expression_lengths(8))},
        "runs": args.runs,
        "dtypes": {},
    }
    for name in parse_dtypes(args.dtypes, ("fp32", "bf16")):
        work, build_s = _workload(args, parse_dtype(name), device)
        result["dtypes"][name] = {"build_s": round(build_s, 1), **measure_capture_cost(work, args.runs)}
        del work
    return result


def print_mochi(r: dict[str, Any]) -> None:
    for name, per in r["dtypes"].items():
        title = f"RefAM Mochi capture cost — {r['model']}, {r['clip']}, {name} on {r['device']}"
        title += f"\nexpression tokens: 8 expr = {r['expression_tokens']['8']}"
        print_capture_cost(title, per, COUNTS)
