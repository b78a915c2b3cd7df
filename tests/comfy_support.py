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

from bfl_layout import flux2_to_bfl, to_bfl
from conftest import REPO_ROOT
from tiny_models import TINY_QWEN3, tiny_qwen3, tiny_vae

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
    """Put ComfyUI first on ``sys.path`` (its ``nodes.py`` must win) and import its core, with the
    top-level modules custom nodes expect (``folder_paths``, ``nodes``) in place on every core."""
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

    try:
        from comfy_compatibility.vanilla import prepare_vanilla_environment
    except ImportError:
        pass  # upstream ComfyUI: folder_paths and nodes are top-level modules already
    else:
        # The pip-packaged core makes them top-level here; its server does the same at start-up.
        prepare_vanilla_environment()
    return path


def interrupt_exception() -> type[BaseException]:
    """ComfyUI's interrupt exception, wherever the running core defines it."""
    import comfy.model_management

    found = getattr(comfy.model_management, "InterruptProcessingException", None)
    if found is None:
        from comfy.interruption import InterruptProcessingException as found
    return found


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


def run_node(pack: ModuleType, node_id: str, **kwargs):
    """Run a node of the pack as ComfyUI would: widgets not given keep their declared defaults."""
    spec = next(s for s in pack.nodes.NODE_SPECS if s.node_id == node_id)
    defaults = {p.name: p.default for p in spec.inputs if p.is_widget and p.name not in kwargs}
    return spec.run(**defaults, **kwargs)


def detected_unet_config(state_dict: dict, **weights_cannot_tell) -> dict:
    """ComfyUI's own ``unet_config`` for a state dict (``model_detection``), so fields a newer core
    requires arrive by themselves. ``weights_cannot_tell``: what the detector takes as the real
    model's constants (widths, heads, RoPE axes) and a small test model does not share."""
    import comfy.model_detection

    config = comfy.model_detection.detect_unet_config(state_dict, "")
    if config is None:
        raise AssertionError("ComfyUI's model detection does not recognise the test weights")
    config.update(weights_cannot_tell)
    return config


def comfy_model_from_config(
    unet_config: dict, state_dict: dict | None, dtype: torch.dtype = torch.float32, seed: int = 0
):
    """A ComfyUI MODEL for ``unet_config`` (matched by ``model_detection`` to its supported model)
    holding ``state_dict``, or random weights drawn with ``seed`` when it is None; on the CPU."""
    import comfy.model_detection
    import comfy.model_patcher

    model_config = comfy.model_detection.model_config_from_unet_config(unet_config, state_dict)
    if model_config is None:
        raise AssertionError(f"no ComfyUI model matches {unet_config}")
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, device="cpu")
    if state_dict is None:
        # ComfyUI allocates weights uninitialised; give every one a defined random value.
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, p in model.diffusion_model.named_parameters():
                p.copy_(torch.randn_like(p) * 0.05 + (1.0 if "norm" in name and p.ndim == 1 else 0.0))
    else:
        missing, unexpected = model.diffusion_model.load_state_dict(
            {k: v.to(dtype) for k, v in state_dict.items()}, strict=False
        )
        if missing or unexpected:
            raise AssertionError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.diffusion_model.to(dtype)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def comfy_flux_from_diffusers(transformer, dtype: torch.dtype = torch.float32):
    """The same weights as a ComfyUI FLUX MODEL (detected by ComfyUI), on the CPU."""
    cfg = transformer.config
    sd = to_bfl(transformer.state_dict(), cfg.num_layers, cfg.num_single_layers)
    unet_config = detected_unet_config(
        sd,
        hidden_size=cfg.num_attention_heads * cfg.attention_head_dim,
        num_heads=cfg.num_attention_heads,
        axes_dim=list(cfg.axes_dims_rope),
        context_in_dim=cfg.joint_attention_dim,
        out_channels=(cfg.out_channels or cfg.in_channels) // 4,
    )
    return comfy_model_from_config(unet_config, sd, dtype)


def comfy_flux2_from_diffusers(transformer, dtype: torch.dtype = torch.float32):
    """The same FLUX.2 weights as a ComfyUI MODEL (detected by ComfyUI as ``flux2``), on the CPU."""
    cfg = transformer.config
    sd = flux2_to_bfl(transformer.state_dict(), cfg.num_layers, cfg.num_single_layers)
    unet_config = detected_unet_config(
        sd, axes_dim=list(cfg.axes_dims_rope), num_heads=cfg.num_attention_heads, out_channels=cfg.in_channels
    )
    assert unet_config["image_model"] == "flux2"
    return comfy_model_from_config(unet_config, sd, dtype)


def scores_agree(a, b, tolerance: float = 1e-4) -> list[float]:
    """Every score of two block captures agrees to ``tolerance`` relative to the score's own size
    (ConceptAttention's unscaled sums over heads run far larger than logits); the deviations."""
    from refam.variants import RECORDED_SCORES

    assert set(a.scores) == set(b.scores) == set(RECORDED_SCORES)  # the output space among them
    worst = []
    for score in a.scores:
        size = max(1.0, b.scores[score].abs().max().item())
        deviation = (a.scores[score] - b.scores[score]).abs().max().item() / size
        assert deviation <= tolerance, f"{a.name} {score}: relative deviation {deviation:.2e}"
        worst.append(deviation)
    return worst


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


def tiny_flux2_vae_for_comfy(seed: int = 0):
    """A ComfyUI FLUX.2 ``VAE``: the tiny 8x autoencoder with FLUX.2's latent batch norm (2x2
    patches, normalised by running statistics), so latents are 4·z channels at 1/16, as ComfyUI
    makes of a checkpoint holding ``bn.running_mean``."""
    import comfy.sd

    vae = tiny_vae_for_comfy(seed)
    channels = 4 * vae.config.latent_channels
    generator = torch.Generator().manual_seed(seed)
    sd = {
        **vae.state_dict(),
        "bn.running_mean": torch.randn(channels, generator=generator) * 0.1,
        "bn.running_var": 1.0 + torch.rand(channels, generator=generator),
        "bn.num_batches_tracked": torch.tensor(1),
    }
    ddconfig = {**vae_ddconfig(vae), "batch_norm_latent": True}
    config = {"params": {"embed_dim": vae.config.latent_channels, "ddconfig": ddconfig}}
    comfy_vae = comfy.sd.VAE(sd=sd, config=config, device=torch.device("cpu"), dtype=torch.float32)
    # What ComfyUI's loader sets when it finds the batch norm (comfy.sd.VAE without a config).
    comfy_vae.downscale_ratio *= 2
    comfy_vae.upscale_ratio *= 2
    comfy_vae.latent_channels = channels
    return comfy_vae


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


def _comfy_t5_options(dims: dict, model_options: dict, *, masks: bool) -> dict:
    """``SDClipModel`` arguments for a T5 encoder of ``dims`` (T5-XXL's gated-GELU layout)."""
    import comfy.text_encoders.t5

    config = {**dims, "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True, "layer_norm_epsilon": 1e-6, "model_type": "t5"}
    return {
        "textmodel_json_config": config,
        "special_tokens": {"end": 1, "pad": 0},
        "model_class": comfy.text_encoders.t5.T5,
        "enable_attention_masks": masks,
        "return_attention_masks": masks,
        "model_options": {**model_options, "model_name": "t5xxl"},
    }


def tiny_flux_clip(seed: int = 0, full_width: bool = False):
    """A ComfyUI FLUX ``CLIP`` (real ``FluxTokenizer``: T5 + CLIP-L tokenizers) with tiny random encoders.

    A full-size T5-XXL (4.7B parameters) is too heavy for CPU tests; the tokenizers, the
    ``CLIP`` object and ``encode_from_tokens`` are ComfyUI's own.
    """
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.text_encoders.flux

    t5_dims, clip_dims = (WIDE_T5, WIDE_CLIP_L) if full_width else (TINY_T5, TINY_CLIP_L)
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
            # FLUX's T5 runs without an attention mask.
            self.t5xxl = comfy.sd1_clip.SDClipModel(
                device=device, dtype=dtype, **_comfy_t5_options(t5_dims, model_options, masks=False)
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


def tiny_klein_clip(seed: int = 0):
    """A ComfyUI FLUX.2 klein ``CLIP`` (the real ``KleinTokenizer`` with its chat template and
    Qwen3 tokenizer files, ComfyUI's Qwen3 reading layers 9 / 18 / 27) holding a tiny random
    Qwen3, and that Qwen3 in Hugging Face's layout."""
    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.flux

    hf = tiny_qwen3(seed)
    config = {k: v for k, v in TINY_QWEN3.items() if k != "head_dim"}

    class TinyQwen3(comfy.text_encoders.flux.Qwen3_4BModel):
        def __init__(self, device="cpu", dtype=None, model_options=None, **kwargs):
            super().__init__(device=device, dtype=dtype, model_options=model_options, textmodel_json_config=config)

    te = comfy.text_encoders.flux.klein_te()

    class TinyKleinModel(te):
        def __init__(self, device="cpu", dtype=None, model_options=None):
            comfy.text_encoders.flux.Flux2TEModel.__init__(
                self, device=device, dtype=dtype, name="qwen3_4b", model_options=model_options or {}, clip_model=TinyQwen3
            )

    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.flux.KleinTokenizer, TinyKleinModel)
    clip = comfy.sd.CLIP(target=target, model_options={"initial_device": torch.device("cpu")})
    sd = {f"model.{k}": v for k, v in hf.state_dict().items()}
    missing, _unexpected = clip.cond_stage_model.qwen3_4b.load_sd(sd)
    if missing:
        raise AssertionError(f"tiny Qwen3 weights missing in ComfyUI's model: {missing}")
    return clip, hf


def tiny_mochi_clip(seed: int = 0):
    """A Mochi CLIP made by ComfyUI's own text-encoder loader (``load_text_encoder_state_dicts``,
    type ``mochi``): the real ``MochiT5Tokenizer`` and Mochi's T5 wrapper with attention masks,
    holding a tiny random T5 (32 wide, 2 layers) through the loader's ``t5xxl_class`` option.

    ComfyUI recognises T5-XXL by the shape of its 24th block's gated MLP (10240 x 4096; cores read
    one side or the other); the tiny encoder has two blocks of width 32, so that one key is added,
    as a zero-stride view the size of one number, for the detector only (the tiny model ignores it).
    """
    import comfy.sd

    return _tiny_t5_clip(comfy.sd.CLIPType.MOCHI, masks=True, seed=seed)  # Mochi's T5 masks its padding


def tiny_chroma_clip(seed: int = 0):
    """A Chroma CLIP made by ComfyUI's own loader (type ``chroma``: the PixArt T5 tokenizer, which pads
    nothing, and T5 without a mask) holding a tiny random T5, as :func:`tiny_mochi_clip` does."""
    import comfy.sd

    return _tiny_t5_clip(comfy.sd.CLIPType.CHROMA, masks=False, seed=seed)


def _tiny_t5_clip(clip_type, masks: bool, seed: int):
    import comfy.sd
    import comfy.sd1_clip

    class TinyT5(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):  # noqa: B006 (ComfyUI's signature)
            super().__init__(device=device, dtype=dtype, **_comfy_t5_options(TINY_T5, model_options, masks=masks))

    t5, _clip_l = tiny_text_encoders(seed)
    state_dict = dict(t5.state_dict())
    state_dict["encoder.block.23.layer.1.DenseReluDense.wi_1.weight"] = torch.zeros(1, 1).expand(10240, 4096)
    return comfy.sd.load_text_encoder_state_dicts(
        [state_dict], clip_type=clip_type, model_options={"t5xxl_class": TinyT5, "initial_device": torch.device("cpu")}
    )


def tiny_comfy_mochi(t5_dim: int = 32, seed: int = 0, depth: int = 3, full_width: bool = False):
    """ComfyUI's own Mochi (detected by ComfyUI from its text projection) with a few blocks and
    random weights.

    ``full_width``: Mochi's real widths (visual 3072 / text 1536, 24 heads) — the only ones whose
    MLP sizes a diffusers Mochi can match (ComfyUI fixes the visual MLP at 8192 wide).
    """
    unet_config = detected_unet_config(
        {"t5_yproj.weight": torch.empty(0)},  # the key ComfyUI recognises Mochi by
        depth=depth,
        t5_feat_dim=t5_dim,
        t5_token_length=16,
        **({} if full_width else dict(num_heads=2, hidden_size_x=64, hidden_size_y=32, mlp_ratio_x=192.0)),
    )
    return comfy_model_from_config(unet_config, None, seed=seed)


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


def comfy_chroma_from_diffusers(transformer, dtype: torch.dtype = torch.float32):
    """The same Chroma weights as a ComfyUI MODEL (detected by ComfyUI as ``chroma``), on the CPU."""
    from chroma_layout import chroma_to_comfy

    cfg = transformer.config
    sd = chroma_to_comfy(transformer.state_dict())
    unet_config = detected_unet_config(
        sd,
        hidden_size=cfg.num_attention_heads * cfg.attention_head_dim,
        num_heads=cfg.num_attention_heads,
        axes_dim=list(cfg.axes_dims_rope),
        context_in_dim=cfg.joint_attention_dim,
        # The approximator: ComfyUI takes Chroma's widths and depth as constants.
        out_dim=cfg.num_attention_heads * cfg.attention_head_dim,
        hidden_dim=cfg.approximator_hidden_dim,
        n_layers=cfg.approximator_layers,
        # the packed (2x2) latent width, which ComfyUI also takes as a constant
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels or cfg.in_channels,
    )
    assert unet_config["image_model"] == "chroma"
    return comfy_model_from_config(unet_config, sd, dtype)


def comfy_qwen_image_from_diffusers(transformer, dtype: torch.dtype = torch.float32):
    """The same Qwen-Image weights as a ComfyUI MODEL (detected by ComfyUI as ``qwen_image``; its
    keys are diffusers' own, so no conversion), on the CPU. An Edit-2511 transformer (diffusers'
    ``zero_cond_t``) gets the empty marker its ComfyUI checkpoints carry."""
    cfg = transformer.config
    sd = dict(transformer.state_dict())
    if cfg.zero_cond_t:
        sd["__index_timestep_zero__"] = torch.tensor([])
    unet_config = detected_unet_config(
        sd,
        attention_head_dim=cfg.attention_head_dim,
        num_attention_heads=cfg.num_attention_heads,
        joint_attention_dim=cfg.joint_attention_dim,
        axes_dims_rope=list(cfg.axes_dims_rope),
        patch_size=cfg.patch_size,
        out_channels=cfg.out_channels,
    )
    assert unet_config["image_model"] == "qwen_image"
    return comfy_model_from_config(unet_config, sd, dtype)


def tiny_qwen_image_clip(seed: int = 0):
    """A ComfyUI Qwen-Image ``CLIP`` — the real ``QwenImageTokenizer`` (its template, the shipped
    ``qwen25_tokenizer`` files), ComfyUI's Qwen2.5-VL settings (last layer after the final norm,
    pad 151643 masked) and its ``QwenImageTEModel`` template crop — holding a tiny random
    Qwen2.5-VL text decoder; and that decoder in Hugging Face's layout."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.text_encoders.llama as llama
    import comfy.text_encoders.qwen_image as qwen_image

    from tiny_models import TINY_QWEN25_VL, tiny_qwen25_vl_text

    hf = tiny_qwen25_vl_text(seed)

    class TextOnly(llama.Qwen25_7BVLI):
        # The decoder without its vision tower (~670M parameters that an image-free prompt never uses).
        def __init__(self, config_dict, dtype, device, operations):
            torch.nn.Module.__init__(self)
            config = llama.Qwen25_7BVLI_Config(**config_dict)
            self.num_layers = config.num_hidden_layers
            self.model = llama.Llama2_(config, device=device, dtype=dtype, ops=operations)
            self.dtype = dtype

    class Sized(comfy.sd1_clip.SDClipModel):
        # Sits under ComfyUI's Qwen25_7BVLIModel, which passes its own settings; only the size and
        # the model class are changed (both cores, whose Qwen25_7BVLIModel signatures differ).
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "textmodel_json_config": dict(TINY_QWEN25_VL), "model_class": TextOnly})

    class TinyQwen25(qwen_image.Qwen25_7BVLIModel, Sized):
        pass

    class TinyQwenImageTE(qwen_image.QwenImageTEModel):
        def __init__(self, device="cpu", dtype=None, model_options=None):
            comfy.sd1_clip.SD1ClipModel.__init__(
                self, device=device, dtype=dtype, name="qwen25_7b", clip_model=TinyQwen25, model_options=model_options or {}
            )

    target = comfy.supported_models_base.ClipTarget(qwen_image.QwenImageTokenizer, TinyQwenImageTE)
    clip = comfy.sd.CLIP(target=target, model_options={"initial_device": torch.device("cpu")})
    missing, _unexpected = clip.cond_stage_model.qwen25_7b.load_sd({f"model.{k}": v for k, v in hf.state_dict().items()})
    if missing:
        raise AssertionError(f"tiny Qwen2.5-VL weights missing in ComfyUI's model: {missing}")
    return clip, hf


def comfy_z_image_from_diffusers(transformer, dtype: torch.dtype = torch.float32):
    """The same Z-Image weights as a ComfyUI MODEL (NextDiT), converted with ComfyUI's own key map;
    the sizes ComfyUI's detection takes from the real model (heads, RoPE axes, the FFN rounding) set
    to the tiny one's."""
    import comfy.utils

    cfg = transformer.config
    key_map = comfy.utils.z_image_to_diffusers({"n_layers": cfg.n_layers, "dim": cfg.dim, "n_refiner_layers": cfg.n_refiner_layers})
    sd: dict[str, torch.Tensor] = {}
    for key, value in transformer.state_dict().items():
        target = key_map[key]
        if isinstance(target, tuple):  # a slice of a fused tensor: (name, (dim, offset, size))
            name, (dim, offset, size) = target[0], target[1]
            whole = sd.setdefault(name, torch.zeros(3 * cfg.dim, *value.shape[1:], dtype=value.dtype))
            whole.narrow(dim, offset, size).copy_(value)
        else:
            sd[target] = value
    unet_config = detected_unet_config(
        sd, in_channels=cfg.in_channels, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads, axes_dims=list(cfg.axes_dims),
        axes_lens=list(cfg.axes_lens), rope_theta=float(cfg.rope_theta), ffn_dim_multiplier=8.0 / 3.0, multiple_of=2,
        z_image_modulation=True, time_scale=1000.0, pad_tokens_multiple=32,
    )  # fmt: skip
    return comfy_model_from_config(unet_config, sd, dtype)


def tiny_z_image_clip(seed: int = 0):
    """A ComfyUI Z-Image ``CLIP`` (the real ``ZImageTokenizer`` with its chat template) holding a
    tiny random Qwen3 read at its second-to-last layer, as ComfyUI's Z-Image encoder reads it."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.text_encoders.llama
    import comfy.text_encoders.z_image

    hf = tiny_qwen3(seed)
    config = {k: v for k, v in TINY_QWEN3.items() if k != "head_dim"}

    class TinyQwen3(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options=None, **kwargs):
            super().__init__(
                device=device, layer="hidden", layer_idx=-2, textmodel_json_config=config, dtype=dtype,
                special_tokens={"pad": 151643}, layer_norm_hidden_state=False, model_class=comfy.text_encoders.llama.Qwen3_4B,
                enable_attention_masks=True, return_attention_masks=True, model_options=model_options or {},
            )  # fmt: skip

    class TinyZImageTE(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options=None):
            super().__init__(device=device, dtype=dtype, name="qwen3_4b", clip_model=TinyQwen3, model_options=model_options or {})

    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.z_image.ZImageTokenizer, TinyZImageTE)
    clip = comfy.sd.CLIP(target=target, model_options={"initial_device": torch.device("cpu")})
    missing, _unexpected = clip.cond_stage_model.qwen3_4b.load_sd({f"model.{k}": v for k, v in hf.state_dict().items()})
    if missing:
        raise AssertionError(f"tiny Qwen3 weights missing in ComfyUI's model: {missing}")
    return clip, hf


def tiny_wan21_vae(seed: int = 0):
    """A ComfyUI ``VAE`` of Wan 2.1's layout (Qwen-Image's VAE) at a tiny width, recognised from
    its state dict by ComfyUI's own loader: 16 latent channels at 1/8, a frame axis."""
    import comfy.sd
    from comfy.ldm.wan.vae import WanVAE

    torch.manual_seed(seed)
    module = WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                    temperal_downsample=[False, True, True], image_channels=3, dropout=0.0)  # fmt: skip
    # ComfyUI's layers are allocated uninitialised; give every weight a defined random value.
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn_like(p) * 0.05 + (1.0 if p.ndim == 1 and "gamma" in name else 0.0))
    return comfy.sd.VAE(sd=module.state_dict(), device=torch.device("cpu"), dtype=torch.float32)
