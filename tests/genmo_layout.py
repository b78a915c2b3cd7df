"""ComfyUI's Mochi state dict (the original genmo layout) -> diffusers ``MochiTransformer3DModel``,
for the cross-backend test. Written from the two layouts: fused q/k/v are split, and the SwiGLU
halves are swapped (genmo applies SiLU to the first half, diffusers to the second)."""

from __future__ import annotations

import torch


def _swap_halves(w: torch.Tensor) -> torch.Tensor:
    a, b = w.chunk(2, dim=0)
    return torch.cat([b, a])


def to_diffusers_mochi(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    out = {
        "pos_frequencies": sd["pos_frequencies"],
        "patch_embed.proj.weight": sd["x_embedder.proj.weight"],
        "patch_embed.proj.bias": sd["x_embedder.proj.bias"],
    }
    for src, dst in (
        ("t_embedder.mlp.0", "time_embed.timestep_embedder.linear_1"),
        ("t_embedder.mlp.2", "time_embed.timestep_embedder.linear_2"),
        ("t5_y_embedder.to_kv", "time_embed.pooler.to_kv"),
        ("t5_y_embedder.to_q", "time_embed.pooler.to_q"),
        ("t5_y_embedder.to_out", "time_embed.pooler.to_out"),
        ("t5_yproj", "time_embed.caption_proj"),
        ("final_layer.linear", "proj_out"),
    ):
        out[f"{dst}.weight"], out[f"{dst}.bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]
    # genmo's final modulation is (shift, scale); diffusers' AdaLayerNormContinuous wants (scale, shift).
    for part in ("weight", "bias"):
        shift, scale = sd[f"final_layer.mod.{part}"].chunk(2)
        out[f"norm_out.linear.{part}"] = torch.cat([scale, shift])
    for i in range(depth):
        s, d = f"blocks.{i}.", f"transformer_blocks.{i}."
        last = i == depth - 1
        out[d + "norm1.linear.weight"], out[d + "norm1.linear.bias"] = sd[s + "mod_x.weight"], sd[s + "mod_x.bias"]
        ctx = "norm1_context.linear_1" if last else "norm1_context.linear"
        out[d + ctx + ".weight"], out[d + ctx + ".bias"] = sd[s + "mod_y.weight"], sd[s + "mod_y.bias"]
        for name, w in zip(("to_q", "to_k", "to_v"), sd[s + "attn.qkv_x.weight"].chunk(3), strict=True):
            out[d + f"attn1.{name}.weight"] = w
        for name, w in zip(("add_q_proj", "add_k_proj", "add_v_proj"), sd[s + "attn.qkv_y.weight"].chunk(3), strict=True):
            out[d + f"attn1.{name}.weight"] = w
        for src, dst in (("q_norm_x", "norm_q"), ("k_norm_x", "norm_k"), ("q_norm_y", "norm_added_q"), ("k_norm_y", "norm_added_k")):
            out[d + f"attn1.{dst}.weight"] = sd[s + f"attn.{src}.weight"]
        out[d + "attn1.to_out.0.weight"], out[d + "attn1.to_out.0.bias"] = sd[s + "attn.proj_x.weight"], sd[s + "attn.proj_x.bias"]
        out[d + "ff.net.0.proj.weight"] = _swap_halves(sd[s + "mlp_x.w1.weight"])
        out[d + "ff.net.2.weight"] = sd[s + "mlp_x.w2.weight"]
        if not last:
            out[d + "attn1.to_add_out.weight"] = sd[s + "attn.proj_y.weight"]
            out[d + "attn1.to_add_out.bias"] = sd[s + "attn.proj_y.bias"]
            out[d + "ff_context.net.0.proj.weight"] = _swap_halves(sd[s + "mlp_y.w1.weight"])
            out[d + "ff_context.net.2.weight"] = sd[s + "mlp_y.w2.weight"]
    return out
