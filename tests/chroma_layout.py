"""diffusers Chroma state dict -> the original (ComfyUI) single-file layout, for the ComfyUI tests.

The inverse of diffusers' Chroma converter, written from the two layouts: FLUX.1's block keys
without any modulation layer (fused q/k/v; the single blocks' q/k/v and MLP input fused into
``linear1``), the approximator's MLP layers and RMSNorm scales under ComfyUI's names, and a final
layer that has only its linear projection (its shift and scale come from the approximator).
"""

from __future__ import annotations

import torch

from bfl_layout import _DOUBLE, _NORMS_DOUBLE

_TOP = {"txt_in": "context_embedder", "img_in": "x_embedder", "final_layer.linear": "proj_out"}
_APPROXIMATOR = {"in_proj": "in_proj", "out_proj": "out_proj"}
_APPROXIMATOR_LAYER = {"in_layer": "linear_1", "out_layer": "linear_2"}


def chroma_to_comfy(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = sd[f"{src}.weight"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"]

    def fused(dst: str, srcs: list[str]) -> None:
        out[f"{dst}.weight"] = torch.cat([sd[f"{s}.weight"] for s in srcs])
        out[f"{dst}.bias"] = torch.cat([sd[f"{s}.bias"] for s in srcs])

    def indices(prefix: str) -> list[int]:
        return sorted({int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)})

    for dst, src in _TOP.items():
        linear(dst, src)
    for dst, src in _APPROXIMATOR.items():
        linear(f"distilled_guidance_layer.{dst}", f"distilled_guidance_layer.{src}")
    for i in indices("distilled_guidance_layer.layers."):
        for dst, src in _APPROXIMATOR_LAYER.items():
            linear(f"distilled_guidance_layer.layers.{i}.{dst}", f"distilled_guidance_layer.layers.{i}.{src}")
        out[f"distilled_guidance_layer.norms.{i}.scale"] = sd[f"distilled_guidance_layer.norms.{i}.weight"]
    for i in indices("transformer_blocks."):
        src, dst = f"transformer_blocks.{i}", f"double_blocks.{i}"
        for d, s in _DOUBLE.items():
            if not d.endswith("_mod.lin"):  # Chroma's blocks are handed their modulation
                linear(f"{dst}.{d}", f"{src}.{s}")
        for d, s in _NORMS_DOUBLE.items():
            out[f"{dst}.{d}"] = sd[f"{src}.{s}"]
        fused(f"{dst}.img_attn.qkv", [f"{src}.attn.to_{x}" for x in "qkv"])
        fused(f"{dst}.txt_attn.qkv", [f"{src}.attn.add_{x}_proj" for x in "qkv"])
    for i in indices("single_transformer_blocks."):
        src, dst = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        fused(f"{dst}.linear1", [f"{src}.attn.to_q", f"{src}.attn.to_k", f"{src}.attn.to_v", f"{src}.proj_mlp"])
        linear(f"{dst}.linear2", f"{src}.proj_out")
        out[f"{dst}.norm.query_norm.scale"] = sd[f"{src}.attn.norm_q.weight"]
        out[f"{dst}.norm.key_norm.scale"] = sd[f"{src}.attn.norm_k.weight"]
    return out
