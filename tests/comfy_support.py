"""A real ComfyUI checkout for the integration tests (``COMFYUI_PATH``), and small FLUX models in it.

Without ``COMFYUI_PATH`` every test that asks for ComfyUI is skipped with the reason printed.
The pack itself is imported under the name ComfyUI gives custom nodes, never as a top-level
``nodes`` (that name is ComfyUI's own ``nodes.py``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from bfl_layout import to_bfl
from conftest import REPO_ROOT
from tiny_models import tiny_vae

PACK_MODULE = "comfyui_refam"


def comfyui_path() -> Path:
    raw = os.environ.get("COMFYUI_PATH")
    if not raw:
        pytest.skip("COMFYUI_PATH not set: point it at a ComfyUI checkout to run the ComfyUI tests")
    path = Path(raw).expanduser().resolve()
    if not (path / "comfy" / "model_patcher.py").is_file():
        pytest.fail(f"COMFYUI_PATH={path} is not a ComfyUI checkout (no comfy/model_patcher.py)")
    return path


def import_comfy() -> Path:
    """Put ComfyUI first on ``sys.path`` (its ``nodes.py`` must win) and import its core."""
    path = comfyui_path()
    if str(path) in sys.path:
        sys.path.remove(str(path))
    sys.path.insert(0, str(path))
    cached = sys.modules.get("nodes")
    if cached is not None and not str(getattr(cached, "__file__", "")).startswith(str(path)):
        del sys.modules["nodes"]
    import comfy.cli_args

    if not torch.cuda.is_available():
        # What ``main.py --cpu`` sets; ComfyUI otherwise asks CUDA for a device at import.
        comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (initialises ComfyUI's device state)

    return path


def load_pack() -> ModuleType:
    """The node pack as ComfyUI loads it: the repository root as a package."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    importlib.import_module(f"{PACK_MODULE}.nodes")
    return module


def comfy_unet_config(transformer) -> dict:
    """ComfyUI's FLUX ``unet_config`` for a diffusers ``FluxTransformer2DModel`` (patch_size 1 = packed)."""
    cfg = transformer.config
    heads = cfg.num_attention_heads
    return {
        "image_model": "flux",
        "in_channels": cfg.in_channels // 4,
        "out_channels": (cfg.out_channels or cfg.in_channels) // 4,
        "patch_size": 2,
        "vec_in_dim": cfg.pooled_projection_dim,
        "context_in_dim": cfg.joint_attention_dim,
        "hidden_size": heads * cfg.attention_head_dim,
        "mlp_ratio": 4.0,
        "num_heads": heads,
        "depth": cfg.num_layers,
        "depth_single_blocks": cfg.num_single_layers,
        "axes_dim": list(cfg.axes_dims_rope),
        "theta": 10000,
        "qkv_bias": True,
        "guidance_embed": bool(cfg.guidance_embeds),
    }


def comfy_flux_from_diffusers(transformer, dtype: torch.dtype = torch.float32):
    """The same weights as a ComfyUI FLUX MODEL (``comfy.supported_models.Flux``), on the CPU."""
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = comfy_unet_config(transformer)
    model_config = comfy.supported_models.Flux(unet_config)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, device="cpu")
    sd = to_bfl(transformer.state_dict(), transformer.config.num_layers, transformer.config.num_single_layers)
    missing, unexpected = model.diffusion_model.load_state_dict(
        {k: v.to(dtype) for k, v in sd.items()}, strict=False
    )
    if missing or unexpected:
        raise AssertionError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.diffusion_model.to(dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def vae_ddconfig(vae) -> dict:
    cfg = vae.config
    base = cfg.block_out_channels[0]
    return {
        "double_z": True,
        "z_channels": cfg.latent_channels,
        "resolution": 256,
        "in_channels": cfg.in_channels,
        "out_ch": cfg.out_channels,
        "ch": base,
        "ch_mult": [c // base for c in cfg.block_out_channels],
        "num_res_blocks": cfg.layers_per_block,
        "attn_resolutions": [],
        "dropout": 0.0,
    }


def comfy_vae_from_diffusers(vae):
    """A ComfyUI ``VAE`` with the weights of a diffusers ``AutoencoderKL`` (ComfyUI converts the keys)."""
    import comfy.sd

    config = {"params": {"embed_dim": vae.config.latent_channels, "ddconfig": vae_ddconfig(vae)}}
    return comfy.sd.VAE(sd=vae.state_dict(), config=config, device=torch.device("cpu"), dtype=torch.float32)


def tiny_vae_for_comfy(seed: int = 0):
    """A diffusers VAE that ComfyUI's LDM autoencoder can hold: 32-channel groups, quant convs."""
    return tiny_vae(seed, channels=32, groups=32, quant_conv=True, perturb=0.02)


TINY_T5 = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, vocab_size=32128)
TINY_CLIP_L = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=49408)
# FLUX's widths (T5-XXL 4096 with 64 heads of 64, CLIP-L 768) with one layer each and small MLPs.
WIDE_T5 = dict(d_model=4096, d_kv=64, d_ff=256, num_layers=1, num_heads=64, vocab_size=32128)
WIDE_CLIP_L = dict(hidden_size=768, intermediate_size=256, num_hidden_layers=1, num_attention_heads=12, vocab_size=49408)


def tiny_text_encoders(seed: int = 0, full_width: bool = False):
    """Random small T5 (ComfyUI's fixed 32 relative-position buckets) and CLIP-L, Hugging Face layout."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    t5_dims, clip_dims = (WIDE_T5, WIDE_CLIP_L) if full_width else (TINY_T5, TINY_CLIP_L)
    torch.manual_seed(seed)
    t5 = T5EncoderModel(
        T5Config(
            **t5_dims,
            feed_forward_proj="gated-gelu",
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
        )
    ).eval()
    clip_l = CLIPTextModel(
        CLIPTextConfig(
            **clip_dims, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=clip_dims["hidden_size"]
        )
    ).eval()
    return t5, clip_l


def tiny_flux_clip(seed: int = 0, full_width: bool = False):
    """A ComfyUI FLUX ``CLIP`` (real ``FluxTokenizer``: T5 + CLIP-L tokenizers) with tiny random encoders.

    A full-size T5-XXL (4.7B parameters) is too heavy for CPU tests; the tokenizers, the
    ``CLIP`` object and ``encode_from_tokens`` are ComfyUI's own.
    """
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.text_encoders.flux
    import comfy.text_encoders.t5

    t5_dims, clip_dims = (WIDE_T5, WIDE_CLIP_L) if full_width else (TINY_T5, TINY_CLIP_L)
    t5_cfg = {
        **t5_dims,
        "dense_act_fn": "gelu_pytorch_tanh",
        "is_gated_act": True,
        "layer_norm_epsilon": 1e-6,
        "model_type": "t5",
    }
    clip_cfg = {
        **clip_dims,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": 77,
        "projection_dim": clip_dims["hidden_size"],
        "eos_token_id": 49407,
        "model_type": "clip_text_model",
    }

    class TinyFluxClipModel(comfy.text_encoders.flux.FluxClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 (ComfyUI's signature)
            torch.nn.Module.__init__(self)
            self.clip_l = comfy.sd1_clip.SDClipModel(
                device=device,
                dtype=dtype,
                textmodel_json_config=clip_cfg,
                return_projected_pooled=False,
                model_options=model_options,
            )
            self.t5xxl = comfy.sd1_clip.SDClipModel(
                device=device,
                dtype=dtype,
                textmodel_json_config=t5_cfg,
                special_tokens={"end": 1, "pad": 0},
                model_class=comfy.text_encoders.t5.T5,
                enable_attention_masks=False,
                return_attention_masks=False,
                model_options={**model_options, "model_name": "t5xxl"},
            )
            self.dtypes = {dtype}

    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.flux.FluxTokenizer, TinyFluxClipModel)
    clip = comfy.sd.CLIP(target=target, model_options={"initial_device": torch.device("cpu")})
    t5, clip_l = tiny_text_encoders(seed, full_width)
    # transformers 5 drops CLIPTextModel's "text_model." prefix; ComfyUI's layout keeps it.
    clip_sd = {(k if k.startswith("text_model.") else f"text_model.{k}"): v for k, v in clip_l.state_dict().items()}
    for part, sd in (("clip_l", clip_sd), ("t5xxl", t5.state_dict())):
        missing, _unexpected = getattr(clip.cond_stage_model, part).load_sd(sd)
        missing = [k for k in missing if not k.endswith(("position_ids", "logit_scale", "text_projection.weight"))]
        if missing:
            raise AssertionError(f"tiny {part} weights missing in ComfyUI's model: {missing}")
    return clip, t5


def tiny_comfy_mochi(t5_dim: int = 32, seed: int = 0, depth: int = 3, full_width: bool = False):
    """ComfyUI's own Mochi (``comfy.supported_models.GenmoMochi``) with a few blocks, random weights.

    ``full_width``: Mochi's real widths (visual 3072 / text 1536, 24 heads) — the only ones whose
    MLP sizes a diffusers Mochi can match (ComfyUI fixes the visual MLP at 8192 wide).
    """
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = {
        "image_model": "mochi_preview",
        "depth": depth,
        "patch_size": 2,
        "num_heads": 24 if full_width else 2,
        "hidden_size_x": 3072 if full_width else 64,
        "hidden_size_y": 1536 if full_width else 32,
        # ComfyUI asserts hidden_size_x * mlp_ratio_x == 1536 * 8
        "mlp_ratio_x": 4.0 if full_width else 192.0,
        "mlp_ratio_y": 4.0,
        "learn_sigma": False,
        "in_channels": 12,
        "qk_norm": True,
        "qkv_bias": False,
        "out_bias": True,
        "attn_drop": 0.0,
        "patch_embed_bias": True,
        "posenc_preserve_area": True,
        "timestep_mlp_bias": True,
        "attend_to_padding": False,
        "timestep_scale": 1000.0,
        "use_t5": True,
        "t5_feat_dim": t5_dim,
        "t5_token_length": 16,
        "rope_theta": 10000.0,
    }
    config = comfy.supported_models.GenmoMochi(unet_config)
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({}, device="cpu")
    torch.manual_seed(seed)
    with torch.no_grad():
        # ComfyUI allocates weights uninitialised; give every one a defined random value.
        for name, p in base.diffusion_model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.05 + (1.0 if "norm" in name and p.ndim == 1 else 0.0))
    base.diffusion_model.float()
    return comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


class PooledVideoVAE:
    """Stand-in for ComfyUI's Mochi VAE (hundreds of millions of parameters) in CPU node tests:
    ``encode`` has its interface and latent layout — ``[T, H, W, 3]`` -> ``[1, 12, (T-1)/6+1, H/8, W/8]``
    — from fixed pooling and a fixed channel map, so the latent follows the pixels."""

    downscale_ratio = 8

    def __init__(self, seed: int = 0) -> None:
        self.mix = torch.randn(12, 3, generator=torch.Generator().manual_seed(seed))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        t = pixels.shape[0]
        groups = [pixels[:1]] + [pixels[i : i + 6] for i in range(1, t, 6)]
        frames = torch.stack([g.mean(0) for g in groups])  # [T', H, W, 3]
        pooled = torch.nn.functional.avg_pool2d(frames.permute(0, 3, 1, 2), 8)  # [T', 3, h, w]
        latent = torch.einsum("cd,tdhw->cthw", self.mix, pooled * 2 - 1)
        return latent[None]
