"""Tiny random-weight FLUX-family components built from configs (no downloads)."""

from __future__ import annotations

import torch

TINY_FLUX = dict(
    patch_size=1,
    in_channels=16,
    num_layers=2,
    num_single_layers=2,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=(4, 6, 6),
)


def tiny_flux_transformer(seed: int = 0, guidance_embeds: bool = False, **overrides):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**{**TINY_FLUX, "guidance_embeds": guidance_embeds, **overrides})
    # Random init leaves adaLN/out projections at diffusers' defaults; perturb every parameter so no
    # path is trivially zero and a wrong index or transpose shows.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


# FLUX.2 klein's layout at a small width: no guidance embedding, four RoPE axes (16 = head dim),
# an LLM-sized context (three concatenated hidden layers).
TINY_FLUX2 = dict(
    patch_size=1,
    in_channels=32,
    num_layers=2,
    num_single_layers=2,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=48,
    axes_dims_rope=(4, 4, 4, 4),
    guidance_embeds=False,
)


def tiny_flux2_transformer(seed: int = 0, **overrides):
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    model = Flux2Transformer2DModel(**{**TINY_FLUX2, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def tiny_vae(seed: int = 0, channels: int = 8, groups: int = 4, quant_conv: bool = False, perturb: float = 0.0):
    """A 4-level (8x) diffusers VAE. ComfyUI's LDM autoencoder needs ``channels=groups=32`` and quant convs."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(channels,) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=groups,
        sample_size=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=quant_conv,
        use_post_quant_conv=quant_conv,
    ).eval()
    if perturb:
        with torch.no_grad():
            for p in vae.parameters():
                p.add_(torch.randn_like(p) * perturb)
    return vae


def tiny_t5(vocab_size: int = 32128, d_model: int = 32, seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=8,
    )
    return T5EncoderModel(cfg).eval()


def tiny_clip(vocab_size: int = 49408, hidden: int = 32, heads: int = 4, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=heads,
        max_position_embeddings=77,
        projection_dim=hidden,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(cfg).eval()


def tiny_flux_backend(t5_tokenizer, clip_tokenizer, seed: int = 0, **kwargs):
    """A whole tiny FLUX (transformer, VAE, T5, CLIP) as a RefAM backend, in memory."""
    from refam.backends.diffusers_flux import DiffusersFlux

    return DiffusersFlux(
        transformer=tiny_flux_transformer(seed),
        vae=tiny_vae(seed),
        t5=tiny_t5(seed=seed),
        t5_tokenizer=t5_tokenizer,
        clip=tiny_clip(seed=seed),
        clip_tokenizer=clip_tokenizer,
        name="tiny-flux",
        **kwargs,
    )


def save_tiny_flux_folder(path, t5_tokenizer, clip_tokenizer, seed: int = 0):
    """Write a diffusers-layout FLUX folder of tiny random components (what ``refam --model`` loads)."""
    import json
    from pathlib import Path

    path = Path(path)
    tiny_flux_transformer(seed).save_pretrained(path / "transformer")
    tiny_vae(seed).save_pretrained(path / "vae")
    tiny_t5(seed=seed).save_pretrained(path / "text_encoder_2")
    tiny_clip(seed=seed).save_pretrained(path / "text_encoder")
    t5_tokenizer.save_pretrained(path / "tokenizer_2")
    clip_tokenizer.save_pretrained(path / "tokenizer")
    (path / "model_index.json").write_text(
        json.dumps({"_class_name": "FluxPipeline", "_diffusers_version": "0.42.1"})
    )
    return path


# Chroma's layout at a small width: FLUX.1's RoPE axes (text ids zero), and an approximator whose
# input stays Chroma's 64 wide (16 timestep + 16 guidance + 32 index channels, fixed in ComfyUI).
TINY_CHROMA = dict(
    patch_size=1,
    in_channels=64,
    num_layers=2,
    num_single_layers=2,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    axes_dims_rope=(4, 6, 6),
    approximator_num_channels=64,
    approximator_hidden_dim=32,
    approximator_layers=2,
)


def tiny_chroma_transformer(seed: int = 0, **overrides):
    from diffusers import ChromaTransformer2DModel

    torch.manual_seed(seed)
    model = ChromaTransformer2DModel(**{**TINY_CHROMA, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


# Qwen3 at a small width with the 28 layers klein reads from (9, 18, 27); heads of 128 as ComfyUI's.
TINY_QWEN3 = dict(
    vocab_size=151936, hidden_size=64, intermediate_size=64, num_hidden_layers=28, num_attention_heads=2,
    num_key_value_heads=1, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=4096,
)  # fmt: skip


def tiny_qwen3(seed: int = 0):
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    model = Qwen3Model(Qwen3Config(**TINY_QWEN3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def tiny_flux2_vae(seed: int = 0):
    """A 4-level (8x) FLUX.2 VAE (latent batch norm over 2x2 patches) with 4 latent channels."""
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(block_out_channels=(32,) * 4, latent_channels=4, norm_num_groups=32, layers_per_block=1)
    with torch.no_grad():
        vae.bn.running_mean.normal_(0.0, 0.1)
        vae.bn.running_var.uniform_(1.0, 2.0)
    return vae.eval()


def save_tiny_flux2_klein_folder(path, qwen_tokenizer, seed: int = 0):
    """A diffusers-layout FLUX.2 klein folder of tiny random parts (transformer, VAE, Qwen3, tokenizer)."""
    import json

    text = tiny_qwen3(seed)
    context = 3 * text.config.hidden_size  # klein concatenates three hidden layers
    tiny_flux2_transformer(seed, in_channels=16, joint_attention_dim=context).save_pretrained(path / "transformer")
    tiny_flux2_vae(seed).save_pretrained(path / "vae")
    text.save_pretrained(path / "text_encoder")
    qwen_tokenizer.save_pretrained(path / "tokenizer")
    (path / "model_index.json").write_text(json.dumps({"_class_name": "Flux2KleinPipeline"}))
    return path


# Qwen-Image's layout at a small width: 2x2 patches of 16 latent channels, three RoPE axes (16 = head
# dim), a caption width of its own (Qwen2.5-VL's 3584 in the real model).
TINY_QWEN_IMAGE = dict(
    patch_size=2,
    in_channels=64,
    out_channels=16,
    num_layers=2,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=48,
    axes_dims_rope=(4, 6, 6),
)


def tiny_qwen_image_transformer(seed: int = 0, **overrides):
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    model = QwenImageTransformer2DModel(**{**TINY_QWEN_IMAGE, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


# Qwen2.5-VL's text model at a small width: ComfyUI fixes its heads at 128 wide and its M-RoPE
# sections at (16, 24, 24), so one head of 128; two layers; the real vocabulary.
TINY_QWEN25_VL = dict(
    vocab_size=152064, hidden_size=128, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
    num_key_value_heads=1, rms_norm_eps=1e-6, max_position_embeddings=4096,
)  # fmt: skip


def tiny_qwen25_vl_text(seed: int = 0):
    """Qwen2.5-VL's text decoder (Hugging Face layout; what diffusers' Qwen-Image pipeline reads the
    last hidden state of) with random weights."""
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    config = Qwen2_5_VLTextConfig(
        **TINY_QWEN25_VL, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLTextModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


# Z-Image's layout at a quarter of its width: 8 heads of 128 (its RoPE axes 32 / 48 / 48), 2 joint
# layers, 2 + 2 refiners. 1024 is the narrowest width whose timestep MLP both hosts build alike.
TINY_Z_IMAGE = dict(
    in_channels=4, dim=1024, n_layers=2, n_refiner_layers=2, n_heads=8, n_kv_heads=8, cap_feat_dim=32,
    axes_dims=[32, 48, 48], axes_lens=[1024, 64, 64],
)  # fmt: skip


def tiny_z_image_transformer(seed: int = 0, **overrides):
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(seed)
    model = ZImageTransformer2DModel(**{**TINY_Z_IMAGE, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def save_tiny_chroma_folder(path, t5_tokenizer, seed: int = 0):
    """A diffusers-layout Chroma folder of tiny random parts (transformer, FLUX-layout VAE, T5, tokenizer)."""
    import json

    # the tiny VAE's 4 latent channels, packed 2x2
    tiny_chroma_transformer(seed, in_channels=16).save_pretrained(path / "transformer")
    tiny_vae(seed).save_pretrained(path / "vae")
    tiny_t5(seed=seed).save_pretrained(path / "text_encoder")
    t5_tokenizer.save_pretrained(path / "tokenizer")
    (path / "model_index.json").write_text(json.dumps({"_class_name": "ChromaPipeline"}))
    return path


def save_tiny_z_image_folder(path, qwen_tokenizer, seed: int = 0):
    """A diffusers-layout Z-Image folder of tiny random parts (transformer, FLUX-layout VAE, Qwen3, tokenizer)."""
    import json

    text = tiny_qwen3(seed)
    tiny_z_image_transformer(seed, cap_feat_dim=text.config.hidden_size).save_pretrained(path / "transformer")
    tiny_vae(seed).save_pretrained(path / "vae")
    text.save_pretrained(path / "text_encoder")
    qwen_tokenizer.save_pretrained(path / "tokenizer")
    (path / "model_index.json").write_text(json.dumps({"_class_name": "ZImagePipeline"}))
    return path


def save_tiny_qwen_image_folder(path, qwen_tokenizer, seed: int = 0):
    """A diffusers-layout Qwen-Image folder of tiny random parts (transformer, Qwen-Image VAE,
    Qwen2.5-VL text decoder, tokenizer)."""
    import json

    from diffusers import AutoencoderKLQwenImage

    text = tiny_qwen25_vl_text(seed)
    tiny_qwen_image_transformer(seed, joint_attention_dim=text.config.hidden_size).save_pretrained(path / "transformer")
    torch.manual_seed(seed)
    AutoencoderKLQwenImage(base_dim=8, num_res_blocks=1).eval().save_pretrained(path / "vae")
    text.save_pretrained(path / "text_encoder")
    qwen_tokenizer.save_pretrained(path / "tokenizer")
    (path / "model_index.json").write_text(json.dumps({"_class_name": "QwenImagePipeline"}))
    return path


def random_expressions(model, lengths=(3, 4), seed: int = 2):
    """Random text-encoder embeddings for expressions of ``lengths`` tokens, back to back, as wide as
    ``model``'s text input, and their layout."""
    from refam.attention import ExpressionLayout

    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, sum(lengths), model.config.joint_attention_dim, generator=g), ExpressionLayout(tuple(lengths))
