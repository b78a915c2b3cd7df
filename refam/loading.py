"""Load FLUX for RefAM from what users have on disk, offline.

Three sources:
- a diffusers folder (``model_index.json`` with ``transformer/``, ``vae/``, ``text_encoder*/``,
  ``tokenizer*/``), e.g. a ``save_pretrained`` copy or a Hugging Face snapshot;
- a hub id (``black-forest-labs/FLUX.1-dev`` / ``-schnell``) already in the Hugging Face cache;
- ComfyUI-style single files: the transformer from ``models/diffusion_models`` (or ``unet``), T5 and
  CLIP-L from ``models/text_encoders`` (or ``clip``), the VAE from ``models/vae``. Architecture
  configs ship in ``refam/configs``; tokenizers come from the Hugging Face cache or from the user's
  ComfyUI source tree (``comfy/text_encoders/t5_tokenizer``, ``comfy/sd1_tokenizer``).
Nothing here downloads unless the caller allows it (``local_files_only=False``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from refam.backends.diffusers_flux_model import DiffusersFlux
from refam.weights import (
    CHECKPOINT_SUFFIXES,
    count_blocks,
    find_weights_file,
    load_state_dict_file,
    safetensors_problem,
)

__all__ = [
    "CONFIG_DIR",
    "TOY_BANNER",
    "WHERE_WEIGHTS_GO",
    "load_pipeline",
    "cached_flux_model",
    "check_diffusers_folder",
    "segmenter_search_dirs",
    "comfyui_model_dirs",
    "find_model_file",
    "load_flux",
    "load_mochi",
    "parse_dtype",
]

CONFIG_DIR = Path(__file__).parent / "configs"
COMFY_FOLDERS = {
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
    "sams": ("sams",),
    "sam2": ("sam2",),
}
T5_NAMES = ("t5xxl_fp16.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors", "t5xxl_fp8_e4m3fn.safetensors")
CLIP_NAMES = ("clip_l.safetensors",)
VAE_NAMES = ("ae.safetensors", "flux_vae.safetensors", "ae.sft")
FLUX_HUB_IDS = ("black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-schnell")
ProgressFn = Callable[[str], None]


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if name not in table:
        raise ValueError(f"dtype must be one of {sorted(table)}, got {name!r}")
    return table[name]


def comfyui_root(explicit: str | Path | None = None) -> Path | None:
    root = explicit or os.environ.get("COMFYUI_PATH")
    return Path(root).expanduser() if root else None


def comfyui_model_dirs(kind: str, root: str | Path | None = None) -> list[Path]:
    """``models/<folder>`` directories of a ComfyUI installation for ``kind``."""
    base = comfyui_root(root)
    if base is None:
        return []
    return [base / "models" / folder for folder in COMFY_FOLDERS[kind]]


def segmenter_search_dirs(root: str | Path | None = None) -> list[Path]:
    """Where ComfyUI users keep SAM2 and SAM checkpoints (``models/sam2``, ``models/sams``)."""
    return [*comfyui_model_dirs("sam2", root), *comfyui_model_dirs("sams", root)]


def cached_flux_model() -> str | None:
    """A FLUX.1 hub id whose snapshot is already in the Hugging Face cache, if any (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for repo in FLUX_HUB_IDS:
        hit = try_to_load_from_cache(repo, "model_index.json")
        if isinstance(hit, str) and Path(hit).is_file():
            return repo
    return None


def find_model_file(name: str | Path, dirs: Sequence[Path], what: str) -> Path:
    """A path as given, or a file name looked up in ``dirs`` (and below them, like ComfyUI)."""
    return find_weights_file(name, dirs, what)


def _first_existing(names: Sequence[str], dirs: Sequence[Path], what: str, hint: str) -> Path:
    searched = []
    for d in dirs:
        for n in names:
            p = d / n
            searched.append(str(p))
            if p.is_file():
                return p
    raise FileNotFoundError(
        f"no {what} found. Searched:\n  "
        + "\n  ".join(searched or ["(no ComfyUI folder known: set COMFYUI_PATH)"])
        + f"\n{hint}"
    )


def _strip_prefixes(sd: dict[str, torch.Tensor], prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in sd.items()}
    return sd


def _looks_like_hub_id(text: str, path: Path) -> bool:
    """``owner/name`` that is not a local path nor a weight file name."""
    return (
        not path.exists()
        and re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None
        and not text.lower().endswith(CHECKPOINT_SUFFIXES)
    )


def _is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (
        (path / "model_index.json").is_file() or (path / "transformer" / "config.json").is_file()
    )


FLUX_PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2")
MOCHI_PARTS = ("transformer", "vae", "text_encoder")
_WEIGHT_GLOBS = ("*.safetensors", "*.bin")
_DIFFUSERS_HELP = (
    "copy the missing files from the model's release (e.g. its Hugging Face repository) or download it again"
)


def check_diffusers_folder(folder: str | Path, parts: Sequence[str]) -> None:
    """Refuse a diffusers folder whose ``parts`` lack ``config.json`` or whole weight files, before
    any of them is loaded: a missing text encoder should not cost a 24 GB transformer load first."""
    folder = Path(folder)
    problems = [problem for part in parts if (problem := _part_problem(folder / part))]
    if problems:
        raise ValueError(f"diffusers folder {folder} is incomplete: {'; '.join(problems)}; {_DIFFUSERS_HELP}")


def _part_problem(sub: Path) -> str | None:
    if not sub.is_dir():
        return f"no {sub.name}/ folder"
    if not (sub / "config.json").is_file():
        return f"no {sub.name}/config.json"
    weights = sorted(p for pattern in _WEIGHT_GLOBS for p in sub.glob(pattern) if p.is_file())
    for index in sorted(sub.glob("*.index.json")):
        problem = _index_problem(index)
        if problem:
            return problem
    if not weights:
        return f"no weights in {sub.name}/ (diffusion_pytorch_model.safetensors or model.safetensors)"
    for weight in weights:
        problem = safetensors_problem(weight) if weight.suffix == ".safetensors" else None
        if problem:
            return problem
    return None


def _index_problem(index: Path) -> str | None:
    """A sharded checkpoint's index: every shard it names must be there."""
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{index} is not a readable shard index ({type(exc).__name__}: {exc})"
    missing = sorted(name for name in shards if not (index.parent / name).is_file())
    if missing:
        return f"{index} names shards that are missing: {', '.join(missing[:5])}"
    return None


def _from_pretrained(cls: Any, repo: str, subfolder: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(repo, subfolder=...)`` with a failure that names the part and the folder."""
    from safetensors import SafetensorError

    try:
        return cls.from_pretrained(repo, subfolder=subfolder, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        raise ValueError(
            f"could not load {subfolder}/ of {repo} as {cls.__name__} ({type(exc).__name__}: {exc}); "
            f"check that folder is a complete diffusers model part, or {_DIFFUSERS_HELP}"
        ) from exc


def _load_tokenizers(source: Path | str | None, root: Path | None, local_files_only: bool) -> tuple[Any, Any]:
    """T5 and CLIP tokenizers: from a diffusers folder/hub id, else the HF cache, else ComfyUI's tree."""
    from transformers import CLIPTokenizer, T5TokenizerFast

    # The concrete class, not AutoTokenizer: offline, AutoTokenizer also wants a model config.json
    # that FLUX repositories do not have at their root.
    tried: list[str] = []
    candidates: list[tuple[str, dict[str, Any]]] = []
    if source is not None:
        candidates.append((str(source), {}))
    candidates += [(hub, {}) for hub in FLUX_HUB_IDS]
    for repo, _ in candidates:
        try:
            t5 = T5TokenizerFast.from_pretrained(
                repo, subfolder="tokenizer_2", local_files_only=local_files_only
            )
            clip = CLIPTokenizer.from_pretrained(
                repo, subfolder="tokenizer", local_files_only=local_files_only
            )
            return t5, clip
        except (OSError, ValueError) as exc:
            tried.append(f"{repo} (tokenizer_2/, tokenizer/): {type(exc).__name__}")
    if root is not None:
        t5_dir, clip_dir = root / "comfy" / "text_encoders" / "t5_tokenizer", root / "comfy" / "sd1_tokenizer"
        if t5_dir.is_dir() and clip_dir.is_dir():
            return T5TokenizerFast.from_pretrained(str(t5_dir)), CLIPTokenizer.from_pretrained(str(clip_dir))
        tried.append(f"{t5_dir} + {clip_dir}: missing")
    raise FileNotFoundError(
        "FLUX tokenizers not found offline. Tried:\n  "
        + "\n  ".join(tried)
        + "\nSet COMFYUI_PATH to your ComfyUI checkout (it ships both tokenizers) or put a FLUX.1 snapshot in the"
        " Hugging Face cache."
    )


def _flux_config_for(sd: dict[str, torch.Tensor], bfl_layout: bool) -> dict[str, Any]:
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


def _load_single_file_transformer(path: Path, dtype: torch.dtype) -> Any:
    from diffusers import FluxTransformer2DModel

    sd = _strip_prefixes(load_state_dict_file(path), ("model.diffusion_model.", "diffusion_model."))
    bfl_layout = any(k.startswith("double_blocks.") for k in sd)
    if not bfl_layout and not any(k.startswith("transformer_blocks.") for k in sd):
        raise ValueError(
            f"{path} does not look like a FLUX transformer (no double_blocks.* / transformer_blocks.* keys)"
        )
    config = _flux_config_for(sd, bfl_layout)
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


def _load_t5_file(path: Path, dtype: torch.dtype) -> Any:
    from transformers import T5Config, T5EncoderModel

    sd = _strip_prefixes(
        load_state_dict_file(path), ("text_encoders.t5xxl.transformer.", "t5xxl.transformer.")
    )
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


def _load_clip_file(path: Path, dtype: torch.dtype) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    sd = _strip_prefixes(
        load_state_dict_file(path), ("text_encoders.clip_l.transformer.", "clip_l.transformer.")
    )
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


def _load_vae_file(path: Path, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKL

    sd = _strip_prefixes(load_state_dict_file(path), ("vae.", "first_stage_model."))
    return AutoencoderKL.from_single_file(
        sd, config=str(CONFIG_DIR / "flux1-dev"), subfolder="vae", torch_dtype=dtype, local_files_only=True
    ).eval()


def load_flux(
    model: str | Path,
    *,
    t5: str | Path | None = None,
    clip_l: str | Path | None = None,
    vae: str | Path | None = None,
    comfyui_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.bfloat16,
    offload: bool = False,
    local_files_only: bool = True,
    progress: ProgressFn | None = None,
) -> DiffusersFlux:
    """Load FLUX.1-dev / -schnell (or any FLUX-architecture checkpoint) as a RefAM backend.

    ``model`` is a diffusers folder, a hub id in the cache, or a transformer single file (path or
    bare name under ComfyUI's ``models/diffusion_models`` / ``models/unet``); for single files,
    ``t5`` / ``clip_l`` / ``vae`` default to ComfyUI's usual file names in its model folders.
    """
    say = progress or (lambda _s: None)
    torch_dtype = parse_dtype(dtype)
    root = comfyui_root(comfyui_path)
    source = Path(str(model)).expanduser()

    if _is_diffusers_folder(source) or _looks_like_hub_id(str(model), source):
        from diffusers import AutoencoderKL, FluxTransformer2DModel
        from transformers import CLIPTextModel, T5EncoderModel

        repo = str(source) if source.exists() else str(model)
        if source.exists():
            check_diffusers_folder(source, FLUX_PARTS)
        opts = {"local_files_only": local_files_only, "torch_dtype": torch_dtype}
        say(f"loading transformer from {repo}")
        transformer = _from_pretrained(FluxTransformer2DModel, repo, "transformer", **opts)
        say("loading VAE")
        vae_model = _from_pretrained(AutoencoderKL, repo, "vae", **opts)
        say("loading text encoders")
        t5_model = _from_pretrained(T5EncoderModel, repo, "text_encoder_2", **opts)
        clip_model = _from_pretrained(CLIPTextModel, repo, "text_encoder", **opts)
        t5_tok, clip_tok = _load_tokenizers(repo, root, local_files_only)
        name = source.name if source.exists() else str(model)
    else:
        path = find_model_file(model, comfyui_model_dirs("diffusion_models", root), "FLUX transformer")
        # Find every file before loading any: a missing VAE should not cost a 24 GB load first.
        te_dirs = [path.parent, *comfyui_model_dirs("text_encoders", root)]
        hint = "Pass the file explicitly (t5=..., clip_l=..., vae=...) or set COMFYUI_PATH."
        t5_path = (
            find_model_file(t5, te_dirs, "T5 encoder")
            if t5
            else _first_existing(T5_NAMES, te_dirs, "T5-XXL encoder", hint)
        )
        clip_path = (
            find_model_file(clip_l, te_dirs, "CLIP-L encoder")
            if clip_l
            else _first_existing(CLIP_NAMES, te_dirs, "CLIP-L encoder", hint)
        )
        vae_dirs = [path.parent, *comfyui_model_dirs("vae", root)]
        vae_path = (
            find_model_file(vae, vae_dirs, "VAE")
            if vae
            else _first_existing(VAE_NAMES, vae_dirs, "FLUX VAE", hint)
        )
        say(f"loading transformer {path.name}")
        transformer = _load_single_file_transformer(path, torch_dtype)
        say(f"loading VAE {vae_path.name}")
        vae_model = _load_vae_file(vae_path, torch_dtype)
        say(f"loading text encoders {t5_path.name}, {clip_path.name}")
        t5_model = _load_t5_file(t5_path, torch_dtype)
        clip_model = _load_clip_file(clip_path, torch_dtype)
        t5_tok, clip_tok = _load_tokenizers(None, root, local_files_only)
        name = path.stem
    return DiffusersFlux(
        transformer=transformer,
        vae=vae_model,
        t5=t5_model,
        t5_tokenizer=t5_tok,
        clip=clip_model,
        clip_tokenizer=clip_tok,
        name=name,
        device=torch.device(device),
        dtype=torch_dtype,
        offload=offload,
    )


WHERE_WEIGHTS_GO = """Real weights: pass --model (or set REFAM_FLUX_MODEL) to one of
  - a diffusers folder of FLUX.1-dev / FLUX.1-schnell (e.g. a Hugging Face snapshot),
  - a hub id already in your Hugging Face cache (black-forest-labs/FLUX.1-dev),
  - a transformer file such as flux1-dev.safetensors, with t5xxl_fp16.safetensors + clip_l.safetensors in
    ComfyUI's models/text_encoders and ae.safetensors in models/vae (set COMFYUI_PATH or --comfyui);
and --segmenter to a SAM / SAM2 checkpoint (e.g. sam2.1_hiera_large.pt in ComfyUI's models/sam2)."""

TOY_BANNER = (
    "no FLUX weights found: using the embedded TOY model (a tiny FLUX-architecture model trained in this repo on "
    "synthetic coloured shapes; it is NOT FLUX and its results on real photos are meaningless)"
)


def load_pipeline(
    model: str | Path | None = None,
    *,
    segmenter: str | Path | None = None,
    segmenter_variant: str | None = None,
    segmenter_image_size: int | None = None,
    t5: str | Path | None = None,
    clip_l: str | Path | None = None,
    vae: str | Path | None = None,
    comfyui_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    offload: bool = False,
    options: Any | None = None,
    progress: ProgressFn | None = None,
) -> Any:
    """A ready :class:`~refam.pipeline.RefAMPipeline`: ``model``, else FLUX.1 from the Hugging Face
    cache, else the embedded toy model (announced through ``progress``, with where real weights
    go). The toy brings its own segmenter (a flood fill) and operating point (48 px, its σ)."""
    from refam.pipeline import RefAMOptions, RefAMPipeline

    say = progress or (lambda _s: None)
    opts = options or RefAMOptions()
    chosen = model or os.environ.get("REFAM_FLUX_MODEL") or cached_flux_model()
    seg = None
    if segmenter is not None:
        # The segmenter first: it is a fraction of FLUX's size, so a wrong file, variant or
        # truncated checkpoint is refused in seconds, before minutes of loading FLUX.
        from refam.segment import load_segmenter

        say(f"loading segmenter {segmenter}")
        seg = load_segmenter(
            segmenter,
            variant=segmenter_variant,
            device=device,
            search_dirs=segmenter_search_dirs(comfyui_path),
            image_size=segmenter_image_size,
        )
    if chosen:
        backend = load_flux(
            chosen, t5=t5, clip_l=clip_l, vae=vae, comfyui_path=comfyui_path, device=device, dtype=dtype,
            offload=offload, progress=progress,
        )  # fmt: skip
    else:
        from refam.toy.model import load_toy

        say(TOY_BANNER)
        for line in WHERE_WEIGHTS_GO.splitlines():
            say(line)
        backend = load_toy(device=device)
        if seg is None:
            from refam.toy.segmenter import FloodFillSegmenter

            say("segmenter: the toy world's flood fill (flat-coloured regions only)")
            seg = FloodFillSegmenter()
    if seg is None:
        say("no segmenter given: heatmaps and points only (give a SAM/SAM2 checkpoint for masks)")
    return RefAMPipeline(backend, seg, opts)


def load_mochi(
    model: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.bfloat16,
    local_files_only: bool = True,
    progress: ProgressFn | None = None,
) -> Any:
    """Mochi 1 (diffusers layout: a folder or a hub id in the cache, e.g. ``genmo/mochi-1-preview``)
    as a RefAM video backend. Nothing is downloaded."""
    from diffusers import AutoencoderKLMochi, MochiTransformer3DModel
    from transformers import T5EncoderModel, T5TokenizerFast

    from refam.backends.diffusers_mochi import DiffusersMochi

    say = progress or (lambda _s: None)
    source = Path(str(model)).expanduser()
    if not (_is_diffusers_folder(source) or _looks_like_hub_id(str(model), source)):
        raise FileNotFoundError(
            f"Mochi model {model!r} is neither a diffusers folder (model_index.json, transformer/, vae/, "
            "text_encoder/, tokenizer/) nor a hub id in the Hugging Face cache"
        )
    repo = str(source) if source.exists() else str(model)
    if source.exists():
        check_diffusers_folder(source, MOCHI_PARTS)
    torch_dtype = parse_dtype(dtype)
    opts = {"local_files_only": local_files_only}
    say(f"loading Mochi from {repo}")
    transformer = _from_pretrained(MochiTransformer3DModel, repo, "transformer", torch_dtype=torch_dtype, **opts)
    # The video VAE runs in float32: its decoder-side statistics are not bf16-safe and it is small.
    vae = _from_pretrained(AutoencoderKLMochi, repo, "vae", torch_dtype=torch.float32, **opts)
    t5 = _from_pretrained(T5EncoderModel, repo, "text_encoder", torch_dtype=torch_dtype, **opts)
    tokenizer = T5TokenizerFast.from_pretrained(repo, subfolder="tokenizer", **opts)
    return DiffusersMochi(
        transformer=transformer,
        vae=vae,
        t5=t5,
        t5_tokenizer=tokenizer,
        name=source.name if source.exists() else str(model),
        t5_max_length=getattr(transformer.config, "max_sequence_length", 256),
        device=torch.device(device),
        dtype=torch_dtype,
    )
