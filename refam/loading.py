"""Files on disk -> RefAM backends (FLUX, Mochi), offline. Choosing among them and adding a
segmenter is :meth:`refam.pipeline.RefAMPipeline.from_pretrained`'s job, not this module's.

Three sources:
- a diffusers folder (``model_index.json`` with ``transformer/``, ``vae/``, ``text_encoder*/``,
  ``tokenizer*/``), e.g. a ``save_pretrained`` copy or a Hugging Face snapshot;
- a hub id (``black-forest-labs/FLUX.1-dev`` / ``-schnell``) already in the Hugging Face cache;
- ComfyUI-style single files: the transformer from ``models/diffusion_models`` (or ``unet``), T5 and
  CLIP-L from ``models/text_encoders`` (or ``clip``), the VAE from ``models/vae``. Architecture
  configs ship in ``refam/configs`` (:mod:`refam.single_files`); tokenizers come from the Hugging Face cache or from the user's
  ComfyUI source tree (``comfy/text_encoders/t5_tokenizer``, ``comfy/sd1_tokenizer``).
Nothing here downloads unless the caller allows it (``local_files_only=False``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from refam.backends.diffusers_flux import DiffusersFlux
from refam.dtypes import parse_dtype
from refam.model_folders import comfyui_model_dirs, comfyui_root
from refam.single_files import load_clip_file, load_t5_file, load_transformer_file, load_vae_file
from refam.weights import CHECKPOINT_SUFFIXES, find_weights_file, safetensors_problem

__all__ = [
    "cached_flux_model",
    "check_diffusers_folder",
    "load_chroma",
    "load_flux",
    "load_flux2",
    "load_mochi",
    "load_qwen_image",
    "load_z_image",
]

T5_NAMES = ("t5xxl_fp16.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors", "t5xxl_fp8_e4m3fn.safetensors")
CLIP_NAMES = ("clip_l.safetensors",)
VAE_NAMES = ("ae.safetensors", "flux_vae.safetensors", "ae.sft")
FLUX_HUB_IDS = ("black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-schnell")
ProgressFn = Callable[[str], None]


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
    candidates = [str(source)] if source is not None else []
    for repo in [*candidates, *FLUX_HUB_IDS]:
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
        path = find_weights_file(model, comfyui_model_dirs("diffusion_models", root), "FLUX transformer")
        # Find every file before loading any: a missing VAE should not cost a 24 GB load first.
        te_dirs = [path.parent, *comfyui_model_dirs("text_encoders", root)]
        hint = "Pass the file explicitly (t5=..., clip_l=..., vae=...) or set COMFYUI_PATH."
        t5_path = (
            find_weights_file(t5, te_dirs, "T5 encoder")
            if t5
            else _first_existing(T5_NAMES, te_dirs, "T5-XXL encoder", hint)
        )
        clip_path = (
            find_weights_file(clip_l, te_dirs, "CLIP-L encoder")
            if clip_l
            else _first_existing(CLIP_NAMES, te_dirs, "CLIP-L encoder", hint)
        )
        vae_dirs = [path.parent, *comfyui_model_dirs("vae", root)]
        vae_path = (
            find_weights_file(vae, vae_dirs, "VAE")
            if vae
            else _first_existing(VAE_NAMES, vae_dirs, "FLUX VAE", hint)
        )
        say(f"loading transformer {path.name}")
        transformer = load_transformer_file(path, torch_dtype)
        say(f"loading VAE {vae_path.name}")
        vae_model = load_vae_file(vae_path, torch_dtype)
        say(f"loading text encoders {t5_path.name}, {clip_path.name}")
        t5_model = load_t5_file(t5_path, torch_dtype)
        clip_model = load_clip_file(clip_path, torch_dtype)
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


# The folder parts each loader reads (diffusers' subfolder names).
FLUX2_PARTS = CHROMA_PARTS = Z_IMAGE_PARTS = QWEN_IMAGE_PARTS = ("transformer", "vae", "text_encoder")


def _load_folder(
    model: str | Path,
    classes: dict[str, Any],
    make: Callable[..., Any],
    *,
    device: str | torch.device,
    dtype: str | torch.dtype,
    offload: bool,
    local_files_only: bool,
    progress: ProgressFn | None,
    check: Callable[[Path], None] | None = None,
) -> Any:
    """A backend from a diffusers folder or cached hub id: ``classes`` maps each subfolder
    (transformer, vae, text_encoder, tokenizer) to the class that loads it, in that order; the
    folder is checked whole (and by ``check``) before anything loads; ``make(parts, name=...)``
    builds the backend."""
    say = progress or (lambda _s: None)
    torch_dtype = parse_dtype(dtype)
    source = Path(str(model)).expanduser()
    repo = str(source) if source.exists() else str(model)
    if source.exists():
        check_diffusers_folder(source, [part for part in classes if part != "tokenizer"])
        if check is not None:
            check(source)
    parts: dict[str, Any] = {}
    for part, cls in classes.items():
        say(f"loading {part.replace('_', ' ')}" + (f" from {repo}" if part == "transformer" else ""))
        opts = {"local_files_only": local_files_only} if part == "tokenizer" else {"local_files_only": local_files_only, "torch_dtype": torch_dtype}
        parts[part] = _from_pretrained(cls, repo, part, **opts)
    return make(
        parts, name=source.name if source.exists() else str(model), device=torch.device(device), dtype=torch_dtype, offload=offload
    )


def _refuse_flux2_dev(source: Path) -> None:
    index = source / "model_index.json"
    pipeline = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "") if index.is_file() else ""
    if pipeline and "Klein" not in pipeline:
        raise ValueError(
            f"{source} is a {pipeline} (FLUX.2 dev, Mistral-Small text encoder): RefAM's diffusers backend runs "
            "FLUX.2 klein (Qwen3); run FLUX.2 dev in ComfyUI with the RefAM nodes"
        )


def load_flux2(model: str | Path, **kwargs: Any) -> Any:
    """Load FLUX.2 klein (4B / 9B) from a diffusers folder or a cached hub id: its transformer,
    FLUX.2 VAE, Qwen3 text encoder and tokenizer. FLUX.2 dev's Mistral encoder is refused by name
    (it runs in ComfyUI). Keywords as :func:`load_chroma`."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import AutoModel, AutoTokenizer

    from refam.backends.diffusers_flux2 import DiffusersFlux2

    classes = {"transformer": Flux2Transformer2DModel, "vae": AutoencoderKLFlux2, "text_encoder": AutoModel, "tokenizer": AutoTokenizer}

    def make(parts: dict[str, Any], **backend: Any) -> DiffusersFlux2:
        return DiffusersFlux2(transformer=parts["transformer"], vae=parts["vae"], text_encoder=parts["text_encoder"],
                              text_tokenizer=parts["tokenizer"], **backend)  # fmt: skip

    return _load_folder(model, classes, make, check=_refuse_flux2_dev, **_folder_options(kwargs))


def load_chroma(model: str | Path, **kwargs: Any) -> Any:
    """Load Chroma from a diffusers folder or a cached hub id: its transformer, FLUX VAE, T5-XXL and
    T5 tokenizer. Keywords: ``device``, ``dtype`` (bf16), ``offload``, ``local_files_only``, ``progress``."""
    from diffusers import AutoencoderKL, ChromaTransformer2DModel
    from transformers import T5EncoderModel, T5TokenizerFast

    from refam.backends.diffusers_chroma import DiffusersChroma

    classes = {"transformer": ChromaTransformer2DModel, "vae": AutoencoderKL, "text_encoder": T5EncoderModel, "tokenizer": T5TokenizerFast}

    def make(parts: dict[str, Any], **backend: Any) -> DiffusersChroma:
        return DiffusersChroma(transformer=parts["transformer"], vae=parts["vae"], t5=parts["text_encoder"],
                               t5_tokenizer=parts["tokenizer"], clip=None, clip_tokenizer=None, **backend)  # fmt: skip

    return _load_folder(model, classes, make, **_folder_options(kwargs))


def load_z_image(model: str | Path, **kwargs: Any) -> Any:
    """Load Z-Image (Turbo) from a diffusers folder or a cached hub id: its transformer, FLUX VAE,
    Qwen3-4B text encoder and tokenizer. Keywords as :func:`load_chroma`."""
    from diffusers import AutoencoderKL, ZImageTransformer2DModel
    from transformers import AutoModel, AutoTokenizer

    from refam.backends.diffusers_z_image import DiffusersZImage

    classes = {"transformer": ZImageTransformer2DModel, "vae": AutoencoderKL, "text_encoder": AutoModel, "tokenizer": AutoTokenizer}

    def make(parts: dict[str, Any], **backend: Any) -> DiffusersZImage:
        return DiffusersZImage(transformer=parts["transformer"], vae=parts["vae"], text_encoder=parts["text_encoder"],
                               text_tokenizer=parts["tokenizer"], **backend)  # fmt: skip

    return _load_folder(model, classes, make, **_folder_options(kwargs))


def load_qwen_image(model: str | Path, **kwargs: Any) -> Any:
    """Load Qwen-Image from a diffusers folder or a cached hub id: its transformer, Qwen-Image VAE,
    Qwen2.5-VL text encoder and tokenizer. Keywords as :func:`load_chroma`."""
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import AutoModel, AutoTokenizer

    from refam.backends.diffusers_qwen_image import DiffusersQwenImage

    classes = {"transformer": QwenImageTransformer2DModel, "vae": AutoencoderKLQwenImage, "text_encoder": AutoModel, "tokenizer": AutoTokenizer}

    def make(parts: dict[str, Any], **backend: Any) -> DiffusersQwenImage:
        return DiffusersQwenImage(transformer=parts["transformer"], vae=parts["vae"], text_encoder=parts["text_encoder"],
                                  text_tokenizer=parts["tokenizer"], **backend)  # fmt: skip

    return _load_folder(model, classes, make, **_folder_options(kwargs))


def _folder_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - {"device", "dtype", "offload", "local_files_only", "progress"}
    if unknown:
        raise TypeError(f"unexpected keyword(s) {', '.join(sorted(unknown))}")
    return {"device": "cpu", "dtype": torch.bfloat16, "offload": False, "local_files_only": True, "progress": None, **kwargs}


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
