"""Which backend and segmenter a pipeline is built from: the files the user named, else FLUX.1 in
the Hugging Face cache, else the embedded toy model with its flood-fill segmenter.

Called by :meth:`refam.pipeline.RefAMPipeline.from_pretrained`; it never imports the pipeline, so
the dependency runs one way (pipeline -> assembly -> loading -> backends).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["ARCHITECTURES", "TOY_BANNER", "WHERE_WEIGHTS_GO", "detect_architecture", "load_parts"]

ProgressFn = Callable[[str], None]
ARCHITECTURES = ("flux", "flux2", "chroma", "qwen_image", "z_image", "mochi")
# diffusers' transformer class name -> the architecture that loads it
_TRANSFORMER_CLASSES = {
    "MochiTransformer3DModel": "mochi",
    "FluxTransformer2DModel": "flux",
    "Flux2Transformer2DModel": "flux2",
    "ChromaTransformer2DModel": "chroma",
    "ZImageTransformer2DModel": "z_image",
    "QwenImageTransformer2DModel": "qwen_image",
}

WHERE_WEIGHTS_GO = """Real weights: pass --model (or set REFAM_FLUX_MODEL) to one of
  - a diffusers folder of FLUX.1-dev / FLUX.1-schnell or FLUX.2 klein (e.g. a Hugging Face snapshot),
  - a hub id already in your Hugging Face cache (black-forest-labs/FLUX.1-dev, black-forest-labs/FLUX.2-klein-4B),
  - a transformer file such as flux1-dev.safetensors, with t5xxl_fp16.safetensors + clip_l.safetensors in
    ComfyUI's models/text_encoders and ae.safetensors in models/vae (set COMFYUI_PATH or --comfyui);
and --segmenter to a SAM / SAM2 checkpoint (e.g. sam2.1_hiera_large.pt in ComfyUI's models/sam2)."""

TOY_BANNER = (
    "no FLUX weights found: using the embedded TOY model (a tiny FLUX-architecture model trained in this repo on "
    "synthetic coloured shapes; it is NOT FLUX and its results on real photos are meaningless)"
)


def detect_architecture(model: str | Path) -> str:
    """``"mochi"`` for a diffusers folder (or cached hub snapshot) whose transformer is Mochi's,
    else ``"flux"`` (single files, FLUX folders, anything unreadable: the FLUX loader explains)."""
    config = Path(str(model)).expanduser() / "transformer" / "config.json"
    if not config.is_file():
        config = _cached_transformer_config(str(model)) or config
    try:
        name = json.loads(config.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return "flux"
    return _TRANSFORMER_CLASSES.get(name, "flux")


def _cached_transformer_config(repo: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        hit = try_to_load_from_cache(repo, "transformer/config.json")
    except ValueError:  # not a hub id (e.g. a file path)
        return None
    return Path(hit) if isinstance(hit, str) and Path(hit).is_file() else None


def load_parts(
    model: str | Path | None = None,
    *,
    architecture: str | None = None,
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
    progress: ProgressFn | None = None,
) -> tuple[Any, Any | None]:
    """``(backend, segmenter or None)`` as :meth:`RefAMPipeline.from_pretrained` documents."""
    from refam import loading
    from refam.model_folders import segmenter_search_dirs

    if architecture is not None and architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)} (or None: detect), got {architecture!r}")
    if architecture not in (None, "flux") and not model:
        raise ValueError(f"architecture={architecture!r} needs model=: a diffusers folder or a cached hub id of that model")
    say = progress or (lambda _s: None)
    chosen = model or os.environ.get("REFAM_FLUX_MODEL") or loading.cached_flux_model()
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
    found = (architecture or detect_architecture(chosen)) if chosen else None
    if found == "mochi":
        backend = loading.load_mochi(chosen, device=device, dtype=dtype, progress=progress)
    elif found == "flux2":
        backend = loading.load_flux2(chosen, device=device, dtype=dtype, offload=offload, progress=progress)
    elif found == "chroma":
        backend = loading.load_chroma(chosen, device=device, dtype=dtype, offload=offload, progress=progress)
    elif found == "qwen_image":
        backend = loading.load_qwen_image(chosen, device=device, dtype=dtype, offload=offload, progress=progress)
    elif found == "z_image":
        backend = loading.load_z_image(chosen, device=device, dtype=dtype, offload=offload, progress=progress)
    elif chosen:
        backend = loading.load_flux(
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
            from refam.toy.segmenter import toy_segmenter

            seg = toy_segmenter(backend.world)
            say(f"segmenter: {seg.name}, the toy world's stand-in for SAM (toy scenes only)")
    if seg is None:
        say("no segmenter given: heatmaps and points only (give a SAM/SAM2 checkpoint for masks)")
    return backend, seg
