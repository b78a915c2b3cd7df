"""ComfyUI-style single weight files -> diffusers / transformers modules, offline.

One file per part: the FLUX transformer (Black Forest Labs' layout or diffusers'), T5-XXL, CLIP-L
and the FLUX VAE. Architecture configs ship in ``refam/configs``; what a checkpoint can tell
(depth, widths, vocabulary, guidance) is read off its tensors instead, so pruned or small
FLUX-architecture files load too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from refam.weights import count_blocks, load_state_dict_file, strip_prefixes

__all__ = [
    "CONFIG_DIR",
    "flux_config_for",
    "load_clip_file",
    "load_t5_file",
    "load_transformer_file",
    "load_vae_file",
]

CONFIG_DIR = Path(__file__).parent / "configs"


def flux_config_for(sd: dict[str, torch.Tensor], bfl_layout: bool) -> dict[str, Any]:
    """FLUX.1's shipped config, with depth and guidance read off the checkpoint (so random or
    pruned FLUX-width models, e.g. ComfyUI's 1 + 1 block test model, load too)."""
    keys = list(sd)
    if bfl_layout:
        guidance = any(k.startswith("guidance_in.") for k in keys)
        depth = count_blocks(keys, "double_blocks."), count_blocks(keys, "single_blocks.")
    else:
        guidance = any(k.startswith("time_text_embed.guidance_embedder.") for k in keys)
        depth = count_blocks(keys, "transformer_blocks."), count_blocks(keys, "single_transformer_blocks.")
    variant = "flux1-dev" if guidance else "flux1-schnell"
    config = json.loads((CONFIG_DIR / variant / "transformer" / "config.json").read_text())
    config["num_layers"], config["num_single_layers"] = depth
    return config


def load_transformer_file(path: Path, dtype: torch.dtype) -> Any:
    from diffusers import FluxTransformer2DModel

    sd = strip_prefixes(load_state_dict_file(path), ("model.diffusion_model.", "diffusion_model."))
    bfl_layout = any(k.startswith("double_blocks.") for k in sd)
    if not bfl_layout and not any(k.startswith("transformer_blocks.") for k in sd):
        raise ValueError(
            f"{path} does not look like a FLUX transformer (no double_blocks.* / transformer_blocks.* keys)"
        )
    config = flux_config_for(sd, bfl_layout)
    if bfl_layout:
        from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

        if "img_in.weight" not in sd:
            raise ValueError(f"{path} is an incomplete FLUX checkpoint (no img_in.weight)")
        width = sd["img_in.weight"].shape[0]
        if width != config["num_attention_heads"] * config["attention_head_dim"]:
            raise ValueError(
                f"{path}: FLUX width {width}; only FLUX.1's width 3072 is supported for single files"
            )
        sd = convert_flux_transformer_checkpoint_to_diffusers(sd)
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(config)
    # fp8 checkpoints (e.g. flux1-dev-fp8) are upcast to the compute dtype here.
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return model.eval()


def load_t5_file(path: Path, dtype: torch.dtype) -> Any:
    from transformers import T5Config, T5EncoderModel

    sd = strip_prefixes(load_state_dict_file(path), ("text_encoders.t5xxl.transformer.", "t5xxl.transformer."))
    # ComfyUI's scaled-fp8 files carry scales next to the weights; the fp8 weights upcast below.
    sd = {k: v for k, v in sd.items() if not k.endswith(("scale_weight", "scaled_fp8", "scale_input"))}
    if "shared.weight" not in sd and "encoder.embed_tokens.weight" in sd:
        sd["shared.weight"] = sd["encoder.embed_tokens.weight"]
    base = json.loads((CONFIG_DIR / "text_encoders" / "t5-v1_1-xxl-encoder.json").read_text())
    try:
        sd.setdefault("encoder.embed_tokens.weight", sd["shared.weight"])
        vocab, d_model = sd["shared.weight"].shape
        rel = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        inner = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
        base.update(
            vocab_size=vocab,
            d_model=d_model,
            num_layers=count_blocks(list(sd), "encoder.block."),
            num_heads=rel.shape[1],
            relative_attention_num_buckets=rel.shape[0],
            d_kv=inner // rel.shape[1],
            d_ff=sd["encoder.block.0.layer.1.DenseReluDense.wo.weight"].shape[1],
        )
    except (KeyError, ValueError, IndexError) as exc:
        raise ValueError(
            f"{path} is not a T5 encoder (missing or misshapen {exc}); pass a T5-XXL file such as t5xxl_fp16.safetensors"
        ) from exc
    with torch.device("meta"):
        model = T5EncoderModel(T5Config.from_dict(base))
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return model.eval()


def load_clip_file(path: Path, dtype: torch.dtype) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    sd = strip_prefixes(load_state_dict_file(path), ("text_encoders.clip_l.transformer.", "clip_l.transformer."))
    # ComfyUI's clip_l files use transformers 4's "text_model." names; transformers 5 dropped the prefix.
    sd = {k.removeprefix("text_model."): v.to(dtype) for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith("text_projection") and "position_ids" not in k}
    base = json.loads((CONFIG_DIR / "text_encoders" / "clip-vit-large-patch14-text.json").read_text())
    try:
        vocab, hidden = sd["embeddings.token_embedding.weight"].shape
        base.update(
            vocab_size=vocab,
            hidden_size=hidden,
            projection_dim=hidden,
            max_position_embeddings=sd["embeddings.position_embedding.weight"].shape[0],
            num_hidden_layers=count_blocks(list(sd), "encoder.layers."),
            intermediate_size=sd["encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_attention_heads=max(1, hidden // 64),  # CLIP text towers use 64-dim heads
        )
    except KeyError as exc:
        raise ValueError(f"{path} is not a CLIP text encoder (missing {exc})") from exc
    with torch.device("meta"):
        model = CLIPTextModel(CLIPTextConfig.from_dict(base))
    if any(k.startswith("text_model.") for k in model.state_dict()):
        sd = {f"text_model.{k}": v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise ValueError(
            f"{path} is not a CLIP-L text encoder: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    embeddings = getattr(model, "text_model", model).embeddings
    if embeddings.position_ids.is_meta:
        embeddings.register_buffer(
            "position_ids", torch.arange(base["max_position_embeddings"])[None], persistent=False
        )
    return model.eval()


def load_vae_file(path: Path, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKL

    sd = strip_prefixes(load_state_dict_file(path), ("vae.", "first_stage_model."))
    return AutoencoderKL.from_single_file(
        sd, config=str(CONFIG_DIR / "flux1-dev"), subfolder="vae", torch_dtype=dtype, local_files_only=True
    ).eval()
