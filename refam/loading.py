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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from refam.backends.diffusers_flux_model import DiffusersFlux

__all__ = [
    "CONFIG_DIR",
    "comfyui_model_dirs",
    "find_model_file",
    "load_flux",
    "parse_dtype",
]

CONFIG_DIR = Path(__file__).parent / "configs"
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt")
COMFY_FOLDERS = {
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
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


def find_model_file(name: str | Path, dirs: Sequence[Path], what: str) -> Path:
    """A path as given, or a bare file name looked up in ``dirs`` (recursively, like ComfyUI)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    searched = [str(path)]
    for d in dirs:
        candidate = d / name
        searched.append(str(candidate))
        if candidate.is_file():
            return candidate
        if d.is_dir():
            hits = sorted(p for p in d.rglob(Path(name).name) if p.is_file())
            if hits:
                return hits[0]
    raise FileNotFoundError(
        f"{what} {str(name)!r} not found. Searched:\n  "
        + "\n  ".join(searched)
        + "\nPut the file in one of these folders or pass its full path."
    )


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


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix in (".safetensors", ".sft"):
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    return obj.get("state_dict", obj) if isinstance(obj, dict) else obj


def _strip_prefixes(sd: dict[str, torch.Tensor], prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in sd.items()}
    return sd


def _is_diffusers_folder(path: Path) -> bool:
    return path.is_dir() and (
        (path / "model_index.json").is_file() or (path / "transformer" / "config.json").is_file()
    )


def _load_tokenizers(source: Path | str | None, root: Path | None, local_files_only: bool) -> tuple[Any, Any]:
    """T5 and CLIP tokenizers: from a diffusers folder/hub id, else the HF cache, else ComfyUI's tree."""
    from transformers import AutoTokenizer, CLIPTokenizer

    tried: list[str] = []
    candidates: list[tuple[str, dict[str, Any]]] = []
    if source is not None:
        candidates.append((str(source), {}))
    candidates += [(hub, {}) for hub in FLUX_HUB_IDS]
    for repo, _ in candidates:
        try:
            t5 = AutoTokenizer.from_pretrained(
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
            return AutoTokenizer.from_pretrained(str(t5_dir)), CLIPTokenizer.from_pretrained(str(clip_dir))
        tried.append(f"{t5_dir} + {clip_dir}: missing")
    raise FileNotFoundError(
        "FLUX tokenizers not found offline. Tried:\n  "
        + "\n  ".join(tried)
        + "\nSet COMFYUI_PATH to your ComfyUI checkout (it ships both tokenizers) or put a FLUX.1 snapshot in the"
        " Hugging Face cache."
    )


def _flux_variant(sd: dict[str, torch.Tensor]) -> str:
    return "flux1-dev" if any(k.endswith("guidance_in.in_layer.weight") for k in sd) else "flux1-schnell"


def _load_single_file_transformer(path: Path, dtype: torch.dtype) -> Any:
    from diffusers import FluxTransformer2DModel

    sd = _strip_prefixes(_load_state_dict(path), ("model.diffusion_model.", "diffusion_model."))
    if not any(k.startswith("double_blocks.") for k in sd) and not any(
        k.startswith("transformer_blocks.") for k in sd
    ):
        raise ValueError(
            f"{path} does not look like a FLUX transformer (no double_blocks.* / transformer_blocks.* keys)"
        )
    if any(k.startswith("transformer_blocks.") for k in sd):
        # Already in diffusers layout (e.g. a saved diffusion_pytorch_model.safetensors).
        variant = "flux1-dev" if any("guidance_embedder" in k for k in sd) else "flux1-schnell"
        model = FluxTransformer2DModel.from_config(
            json.loads((CONFIG_DIR / variant / "transformer" / "config.json").read_text())
        )
        model.load_state_dict(sd)
        return model.to(dtype)
    variant = _flux_variant(sd)
    return FluxTransformer2DModel.from_single_file(
        sd,
        config=str(CONFIG_DIR / variant),
        subfolder="transformer",
        torch_dtype=dtype,
        local_files_only=True,
    )


def _load_t5_file(path: Path, dtype: torch.dtype) -> Any:
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config.from_dict(
        json.loads((CONFIG_DIR / "text_encoders" / "t5-v1_1-xxl-encoder.json").read_text())
    )
    with torch.device("meta"):
        model = T5EncoderModel(cfg)
    sd = _strip_prefixes(_load_state_dict(path), ("text_encoders.t5xxl.transformer.", "t5xxl.transformer."))
    sd = {k: v for k, v in sd.items() if not k.endswith("scale_weight") and not k.endswith("scaled_fp8")}
    if "shared.weight" not in sd and "encoder.embed_tokens.weight" in sd:
        sd["shared.weight"] = sd["encoder.embed_tokens.weight"]
    sd.setdefault("encoder.embed_tokens.weight", sd["shared.weight"])
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return model


def _load_clip_file(path: Path, dtype: torch.dtype) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig.from_dict(
        json.loads((CONFIG_DIR / "text_encoders" / "clip-vit-large-patch14-text.json").read_text())
    )
    with torch.device("meta"):
        model = CLIPTextModel(cfg)
    sd = _strip_prefixes(_load_state_dict(path), ("text_encoders.clip_l.transformer.", "clip_l.transformer."))
    sd = {k: v.to(dtype) for k, v in sd.items() if not k.startswith("text_projection")}
    if "text_model.embeddings.position_ids" not in sd:
        sd["text_model.embeddings.position_ids"] = torch.arange(cfg.max_position_embeddings)[None]
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    missing = [k for k in missing if "position_ids" not in k]
    if missing:
        raise ValueError(f"{path} is not a CLIP-L text encoder: missing {missing[:5]}")
    return model


def _load_vae_file(path: Path, variant: str, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKL

    sd = _strip_prefixes(_load_state_dict(path), ("vae.", "first_stage_model."))
    return AutoencoderKL.from_single_file(
        sd, config=str(CONFIG_DIR / variant), subfolder="vae", torch_dtype=dtype, local_files_only=True
    )


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

    if _is_diffusers_folder(source) or (
        not source.exists() and str(model).count("/") == 1 and not source.suffix
    ):
        from diffusers import AutoencoderKL, FluxTransformer2DModel
        from transformers import CLIPTextModel, T5EncoderModel

        repo = str(source) if source.exists() else str(model)
        opts = {"local_files_only": local_files_only}
        say(f"loading transformer from {repo}")
        transformer = FluxTransformer2DModel.from_pretrained(
            repo, subfolder="transformer", torch_dtype=torch_dtype, **opts
        )
        say("loading VAE")
        vae_model = AutoencoderKL.from_pretrained(repo, subfolder="vae", torch_dtype=torch_dtype, **opts)
        say("loading text encoders")
        t5_model = T5EncoderModel.from_pretrained(
            repo, subfolder="text_encoder_2", torch_dtype=torch_dtype, **opts
        )
        clip_model = CLIPTextModel.from_pretrained(
            repo, subfolder="text_encoder", torch_dtype=torch_dtype, **opts
        )
        t5_tok, clip_tok = _load_tokenizers(repo, root, local_files_only)
        name = source.name if source.exists() else str(model)
    else:
        path = find_model_file(model, comfyui_model_dirs("diffusion_models", root), "FLUX transformer")
        say(f"loading transformer {path.name}")
        transformer = _load_single_file_transformer(path, torch_dtype)
        variant = "flux1-dev" if transformer.config.guidance_embeds else "flux1-schnell"
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
        say(f"loading VAE {vae_path.name}")
        vae_model = _load_vae_file(vae_path, variant, torch_dtype)
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
