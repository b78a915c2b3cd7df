"""diffusers FLUX state dict -> the original (BFL / ComfyUI) single-file layout, for loader tests.

The inverse of diffusers' converter, written from the two layouts: fused q/k/v (and the single
blocks' MLP input) are concatenated, and the final AdaLN's (scale, shift) halves are swapped back.
"""

from __future__ import annotations

import torch

_EMBEDDERS = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
}
_DOUBLE = {
    "img_mod.lin": "norm1.linear",
    "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj",
    "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
}
_NORMS_DOUBLE = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight",
    "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}


def to_bfl(sd: dict[str, torch.Tensor], num_double: int, num_single: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str) -> None:
        if f"{src}.weight" in sd:
            out[f"{dst}.weight"] = sd[f"{src}.weight"]
            out[f"{dst}.bias"] = sd[f"{src}.bias"]

    def fused(dst: str, srcs: list[str]) -> None:
        out[f"{dst}.weight"] = torch.cat([sd[f"{s}.weight"] for s in srcs])
        out[f"{dst}.bias"] = torch.cat([sd[f"{s}.bias"] for s in srcs])

    for dst, src in _EMBEDDERS.items():
        linear(dst, src)
    shift_scale = sd["norm_out.linear.weight"].chunk(2)
    out["final_layer.adaLN_modulation.1.weight"] = torch.cat([shift_scale[1], shift_scale[0]])
    bias = sd["norm_out.linear.bias"].chunk(2)
    out["final_layer.adaLN_modulation.1.bias"] = torch.cat([bias[1], bias[0]])
    for i in range(num_double):
        src, dst = f"transformer_blocks.{i}", f"double_blocks.{i}"
        for d, s in _DOUBLE.items():
            linear(f"{dst}.{d}", f"{src}.{s}")
        for d, s in _NORMS_DOUBLE.items():
            out[f"{dst}.{d}"] = sd[f"{src}.{s}"]
        fused(f"{dst}.img_attn.qkv", [f"{src}.attn.to_{x}" for x in "qkv"])
        fused(f"{dst}.txt_attn.qkv", [f"{src}.attn.add_{x}_proj" for x in "qkv"])
    for i in range(num_single):
        src, dst = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        fused(
            f"{dst}.linear1", [f"{src}.attn.to_q", f"{src}.attn.to_k", f"{src}.attn.to_v", f"{src}.proj_mlp"]
        )
        linear(f"{dst}.linear2", f"{src}.proj_out")
        linear(f"{dst}.modulation.lin", f"{src}.norm.linear")
        out[f"{dst}.norm.query_norm.scale"] = sd[f"{src}.attn.norm_q.weight"]
        out[f"{dst}.norm.key_norm.scale"] = sd[f"{src}.attn.norm_k.weight"]
    return out


_FLUX2_GLOBAL = {
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in.in_layer": "time_guidance_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_guidance_embed.timestep_embedder.linear_2",
    "guidance_in.in_layer": "time_guidance_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_guidance_embed.guidance_embedder.linear_2",
    "double_stream_modulation_img.lin": "double_stream_modulation_img.linear",
    "double_stream_modulation_txt.lin": "double_stream_modulation_txt.linear",
    "single_stream_modulation.lin": "single_stream_modulation.linear",
    "final_layer.linear": "proj_out",
}
_FLUX2_DOUBLE = {
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.linear_in",
    "img_mlp.2": "ff.linear_out",
    "txt_mlp.0": "ff_context.linear_in",
    "txt_mlp.2": "ff_context.linear_out",
}


def flux2_to_bfl(sd: dict[str, torch.Tensor], num_double: int, num_single: int) -> dict[str, torch.Tensor]:
    """diffusers FLUX.2 -> BFL / ComfyUI layout: no per-block modulation (three shared ones), no
    biases, fused q/k/v in double blocks, single blocks already fused on both sides."""
    out: dict[str, torch.Tensor] = {}

    def copy(dst: str, src: str) -> None:
        for end in ("weight", "bias"):
            if f"{src}.{end}" in sd:
                out[f"{dst}.{end}"] = sd[f"{src}.{end}"]

    for dst, src in _FLUX2_GLOBAL.items():
        copy(dst, src)
    shift, scale = sd["norm_out.linear.weight"].chunk(2)
    out["final_layer.adaLN_modulation.1.weight"] = torch.cat([scale, shift])
    for i in range(num_double):
        src, dst = f"transformer_blocks.{i}", f"double_blocks.{i}"
        for d, s in _FLUX2_DOUBLE.items():
            copy(f"{dst}.{d}", f"{src}.{s}")
        for d, s in _NORMS_DOUBLE.items():
            out[f"{dst}.{d}"] = sd[f"{src}.{s}"]
        out[f"{dst}.img_attn.qkv.weight"] = torch.cat([sd[f"{src}.attn.to_{x}.weight"] for x in "qkv"])
        out[f"{dst}.txt_attn.qkv.weight"] = torch.cat([sd[f"{src}.attn.add_{x}_proj.weight"] for x in "qkv"])
    for i in range(num_single):
        src, dst = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        copy(f"{dst}.linear1", f"{src}.attn.to_qkv_mlp_proj")
        copy(f"{dst}.linear2", f"{src}.attn.to_out")
        out[f"{dst}.norm.query_norm.scale"] = sd[f"{src}.attn.norm_q.weight"]
        out[f"{dst}.norm.key_norm.scale"] = sd[f"{src}.attn.norm_k.weight"]
    return out
