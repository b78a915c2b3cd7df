"""``refam bench features``: what each feature mode costs (:mod:`refam.features`) on a random
FLUX-architecture transformer at one resolution, side by side in one process: one plain forward,
the single pass, one pass per σ, and RF-inversion (``steps`` inversion + ``steps`` denoising
passes) without and with the capture, each with 1 and 8 expressions.

Modes run interleaved round by round, so machine noise hits them alike; ratios are of medians.
Peak memory is the device's peak allocation on CUDA; on a CPU, where no allocator reports one,
the bytes the capture keeps (its records, or the running average of every collected step).
"""

from __future__ import annotations

import argparse
import gc
import statistics
from collections.abc import Callable
from typing import Any

import torch

from refam.bench.capture_cost import MB, _timed, expression_lengths, spread
from refam.bench.flux import build_model
from refam.dtypes import parse_dtype

__all__ = ["STEP_OVERHEAD_TARGET", "bench_features", "print_features"]

STEP_OVERHEAD_TARGET = 1.05  # issue 16: a collected denoising step <= 1.05x a plain step
EXPRESSIONS_TARGET = 1.1  # issue 16: 8 expressions <= 1.1x one, over the whole inversion run
SIGMAS = (0.5, 0.75, 0.9)
COUNTS = (1, 8)


def _kept_bytes(kept: Any) -> int:
    blocks = kept.blocks() if hasattr(kept, "blocks") else kept
    if not blocks:
        return 0
    return sum(t.numel() * t.element_size() for b in blocks for t in (*b.scores.values(), b.text_mass))


def _modes(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Callable[[], Any]]:
    from torch import nn

    from refam.architectures.flux import FLUX_IMAGE
    from refam.attention import ExpressionLayout
    from refam.backends.diffusers_flux import Branch, DiffusersFlux, FluxInputs
    from refam.features import FeatureOptions, PassAverage

    model = build_model(args.heads, args.double, args.single, dtype, device)
    backend = DiffusersFlux(
        transformer=model, vae=nn.Identity(), t5=nn.Identity(), t5_tokenizer=None, clip=None, clip_tokenizer=None,
        device=device, dtype=dtype,
    )  # fmt: skip
    grid = args.size // 16
    g = torch.Generator("cpu").manual_seed(0)
    clean = torch.randn(1, grid * grid, 64, generator=g).to(device)
    noise = torch.randn(1, grid * grid, 64, generator=g).to(device)
    caption = torch.randn(1, args.text_len, 4096, generator=g).to(dtype)
    flux = FluxInputs(backend, caption, torch.randn(1, 768, generator=g).to(dtype), (grid, grid), 1, FLUX_IMAGE.guidance)
    layouts = {n: ExpressionLayout(expression_lengths(n)) for n in COUNTS}
    branches = {
        n: Branch(torch.randn(1, layouts[n].total, 4096, generator=g).to(device, dtype), layouts[n], None) for n in COUNTS
    }
    features = FeatureOptions(mode="inversion", inversion_steps=args.steps)
    schedule = features.schedule(FLUX_IMAGE.time_shift, grid * grid)
    noised = 0.25 * clean + 0.75 * noise

    def several(n: int) -> PassAverage:
        average = PassAverage(layouts[n])
        for s in SIGMAS:
            average.add(backend.capture_latent((1 - s) * clean + s * noise, s, flux, branches[n]))
        return average

    def inversion(n: int | None) -> Any:
        average = None if n is None else PassAverage(layouts[n])
        branch = None if n is None else branches[n]
        backend.invert_and_denoise(clean, noise, schedule, features, flux, branch=branch, average=average)
        return average

    modes: dict[str, Callable[[], Any]] = {"plain forward": lambda: backend.forward(noised, 0.75, flux)}
    for n in COUNTS:
        modes[f"single pass, {n} expr"] = lambda n=n: backend.capture_latent(noised, 0.75, flux, branches[n])
    for n in COUNTS:
        modes[f"{len(SIGMAS)} sigmas, {n} expr"] = lambda n=n: several(n)
    modes["inversion, no capture"] = lambda: inversion(None)
    for n in COUNTS:
        modes[f"inversion, {n} expr"] = lambda n=n: inversion(n)
    return modes


@torch.no_grad()  # scoped: a global switch would leak into whatever runs next in the process
def bench_features(args: argparse.Namespace) -> dict[str, Any]:
    if args.runs < 1 or args.steps < 1:
        raise ValueError("--runs and --steps must be at least 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = parse_dtype(args.dtype)
    modes = _modes(args, device, dtype)
    for fn in modes.values():  # warm-up: allocator, kernels, lazy imports
        fn()
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.runs):
        for name, fn in modes.items():
            gc.collect()
            times[name].append(_timed(fn, device))
    memory: dict[str, float] = {}
    for name, fn in modes.items():
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            memory[name] = round(torch.cuda.max_memory_allocated(device) / MB, 1)
        else:
            memory[name] = round(_kept_bytes(fn()) / MB, 3) if "expr" in name else 0.0
    plain = statistics.median(times["plain forward"])
    median = {m: statistics.median(v) for m, v in times.items()}
    grid = args.size // 16
    steps = args.steps
    uncaptured = median["inversion, no capture"]
    return {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "dtype": args.dtype,
        "model": f"FLUX width {args.heads * 128}, {args.double} double + {args.single} single blocks (random)",
        "image": f"{args.size}x{args.size} ({grid * grid} image tokens), caption {args.text_len} tokens",
        "inversion_steps": steps,
        "sigmas": list(SIGMAS),
        "runs": args.runs,
        "memory": "peak allocated MB (CUDA)" if device.type == "cuda" else "kept MB (records / running average)",
        "modes": {
            m: {"seconds": spread(times[m]), "ratio_to_plain": round(median[m] / plain, 3), "memory_mb": memory[m]}
            for m in modes
        },
        # Every denoising step is collected: what each adds over its plain step, per step.
        "per_step_capture_overhead": {
            str(n): round(1 + (median[f"inversion, {n} expr"] - uncaptured) / (steps * plain), 4) for n in COUNTS
        },
        "inversion_8_vs_1": round(median["inversion, 8 expr"] / median["inversion, 1 expr"], 4),
        "targets": {"per_step_capture_overhead": f"<= {STEP_OVERHEAD_TARGET}", "inversion_8_vs_1": f"<= {EXPRESSIONS_TARGET}"},
    }


def print_features(r: dict[str, Any]) -> None:
    print(
        f"\nRefAM feature modes — {r['model']}, {r['image']}, {r['dtype']} on {r['device']}\n"
        f"inversion: {r['inversion_steps']} + {r['inversion_steps']} steps, every denoising step collected; "
        f"sigmas {r['sigmas']}; {r['runs']} runs interleaved, seconds min / median / max"
    )
    print(f"{'mode':<26}{'seconds':>28}{'x plain fwd':>12}{'memory MB':>11}   ({r['memory']})")
    for name, m in r["modes"].items():
        s = m["seconds"]
        print(f"{name:<26}{s['min']:>9.3f} /{s['median']:>8.3f} /{s['max']:>8.3f}{m['ratio_to_plain']:>12.2f}{m['memory_mb']:>11.2f}")
    per = r["per_step_capture_overhead"]
    print(
        f"per collected step: 1 expr {per['1']:.3f}x, 8 expr {per['8']:.3f}x a plain step (target <= {STEP_OVERHEAD_TARGET}); "
        f"inversion 8 expr / 1 expr {r['inversion_8_vs_1']:.3f} (target <= {EXPRESSIONS_TARGET})"
    )
