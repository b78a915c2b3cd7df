"""``refam bench capture``: what the expression branch costs on a random FLUX-architecture
transformer (full width 3072 by default), in each dtype asked for (see :mod:`.capture_cost`)."""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from refam.bench.capture_cost import (
    AMORTISATION_TARGET,
    OVERHEAD_TARGET,
    CaptureWorkload,
    expression_lengths,
    measure_capture_cost,
    parse_dtypes,
    print_capture_cost,
)
from refam.dtypes import parse_dtype

__all__ = ["bench_capture", "build_klein", "build_model", "print_capture"]

COUNTS = (1, 8)


def build_model(
    width_heads: int, double: int, single: int, dtype: torch.dtype, device: torch.device, seed: int = 0
) -> torch.nn.Module:
    """A FLUX.1-shaped ``FluxTransformer2DModel`` with random weights (``width_heads`` heads of 128)."""
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


def build_klein(width_heads: int, double: int, single: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """A FLUX.2 klein 4B-shaped ``Flux2Transformer2DModel`` with random weights (``width_heads`` heads of 128)."""
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    with torch.device(device):
        model = Flux2Transformer2DModel(
            num_layers=double, num_single_layers=single, attention_head_dim=128, num_attention_heads=width_heads,
            joint_attention_dim=KLEIN_CONTEXT, guidance_embeds=False,
        )  # fmt: skip
    return model.to(dtype).eval().requires_grad_(False)


KLEIN_CONTEXT = 7680  # Qwen3-4B's layers 9, 18, 27 concatenated


def _klein_inputs(args: argparse.Namespace, grid: int, g: torch.Generator, dtype: torch.dtype, device: torch.device):
    img_ids = torch.zeros(grid * grid, 4, device=device)
    img_ids[:, 1] = torch.arange(grid, device=device).repeat_interleave(grid)
    img_ids[:, 2] = torch.arange(grid, device=device).repeat(grid)
    txt_ids = torch.zeros(args.text_len, 4, device=device)
    txt_ids[:, 3] = torch.arange(args.text_len, device=device)
    return dict(
        hidden_states=torch.randn(1, grid * grid, 128, generator=g).to(device, dtype),
        encoder_hidden_states=torch.randn(1, args.text_len, KLEIN_CONTEXT, generator=g).to(device, dtype),
        timestep=torch.full((1,), 0.75, device=device, dtype=dtype),
        img_ids=img_ids,
        txt_ids=txt_ids,
        return_dict=False,
    )


def _workload(
    args: argparse.Namespace, dtype: torch.dtype, device: torch.device
) -> tuple[CaptureWorkload, float]:
    from refam.architectures.flux import latent_image_ids

    klein = getattr(args, "model", "flux1") == "flux2-klein"
    t0 = time.perf_counter()
    model = (build_klein if klein else build_model)(args.heads, args.double, args.single, dtype, device)
    build_s = time.perf_counter() - t0
    grid = args.size // 16
    g = torch.Generator("cpu").manual_seed(0)
    lengths = {n: expression_lengths(n) for n in COUNTS}
    if klein:
        embeds = {n: torch.randn(1, sum(lengths[n]), KLEIN_CONTEXT, generator=g).to(device, dtype) for n in COUNTS}
        return CaptureWorkload.of(model, _klein_inputs(args, grid, g, dtype, device), embeds, lengths, device), build_s
    inputs = dict(
        hidden_states=torch.randn(1, grid * grid, 64, generator=g).to(device, dtype),
        encoder_hidden_states=torch.randn(1, args.text_len, 4096, generator=g).to(device, dtype),
        pooled_projections=torch.randn(1, 768, generator=g).to(device, dtype),
        timestep=torch.full((1,), 0.75, device=device, dtype=dtype),
        guidance=torch.full((1,), 3.5, device=device),
        img_ids=latent_image_ids(grid, grid, device),
        txt_ids=torch.zeros(args.text_len, 3, device=device),
        return_dict=False,
    )
    embeds = {n: torch.randn(1, sum(lengths[n]), 4096, generator=g).to(device, dtype) for n in COUNTS}

    return CaptureWorkload.of(model, inputs, embeds, lengths, device), build_s


@torch.no_grad()  # scoped: a global switch would leak into whatever runs next in the process
def bench_capture(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    grid = args.size // 16
    result: dict[str, Any] = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "model": f"{'FLUX.2 klein' if getattr(args, 'model', 'flux1') == 'flux2-klein' else 'FLUX'} width "
        f"{args.heads * 128}, {args.double} double + {args.single} single blocks (random)",
        "image": f"{args.size}x{args.size} ({grid * grid} image tokens), caption {args.text_len} tokens",
        "expression_tokens": {str(n): sum(expression_lengths(n)) for n in COUNTS},
        "runs": args.runs,
        "targets": {
            "capture_overhead": f"<= {OVERHEAD_TARGET}",
            "amortisation_8_vs_1": f"<= {AMORTISATION_TARGET}",
        },
        "dtypes": {},
    }
    for name in parse_dtypes(args.dtypes):
        work, build_s = _workload(args, parse_dtype(name), device)
        result["dtypes"][name] = {"build_s": round(build_s, 1), **measure_capture_cost(work, args.runs)}
        del work
    return result


def print_capture(r: dict[str, Any]) -> None:
    tokens = r["expression_tokens"]
    for name, per in r["dtypes"].items():
        title = f"RefAM capture cost — {r['model']}, {r['image']}, {name} on {r['device']}"
        title += f"\nexpression tokens: 1 expr = {tokens['1']}, 8 expr = {tokens['8']}"
        print_capture_cost(title, per, COUNTS)
