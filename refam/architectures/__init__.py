"""The diffusion transformers RefAM runs on, one module each, and how a model finds its own.

Adding one: write ``refam/architectures/<name>.py`` with an :class:`Architecture` subclass (see
``flux.py``) and list its instance in :data:`ARCHITECTURES`. The capture sessions, the pipeline,
the nodes and the CLI take it from there.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from refam.architectures.base import Architecture, ComfyBlock, TextEncoder
from refam.architectures.chroma import CHROMA
from refam.architectures.flux import FLUX1
from refam.architectures.flux2 import FLUX2
from refam.architectures.mochi import MOCHI
from refam.architectures.qwen_image import QWEN_IMAGE
from refam.architectures.z_image import Z_IMAGE

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ComfyBlock",
    "TextEncoder",
    "by_name",
    "comfy_architecture",
    "diffusers_architecture",
]

ARCHITECTURES: tuple[Architecture, ...] = (FLUX1, FLUX2, CHROMA, QWEN_IMAGE, Z_IMAGE, MOCHI)

# Diffusion models a user may hand a capture node, by ComfyUI class name, that no module here reads
# (tried after the modules: NextDiT is Z-Image's class too): RefAM names them instead of failing on
# a missing layer.
PLANNED = {
    "ChromaRadiance": "Chroma Radiance",
    "NextDiT": "Lumina 2",
    "HunyuanVideo": "HunyuanVideo / HunyuanImage",
    "WanModel": "Wan",
}

_LOADERS = {
    "image": "FLUX.1 dev/schnell/Kontext, FLUX.2 dev/klein, Chroma, Qwen-Image / Qwen-Image-Edit or Z-Image "
    "(UNETLoader / CheckpointLoaderSimple)",
    "video": "Mochi (mochi_preview, UNETLoader)",
}


def by_name(name: str) -> Architecture:
    for arch in ARCHITECTURES:
        if arch.name == name:
            return arch
    raise ValueError(f"unknown architecture {name!r}; known: {', '.join(a.name for a in ARCHITECTURES)}")


def diffusers_architecture(transformer: nn.Module, modality: str | None = None) -> Architecture:
    """The architecture of a diffusers transformer (of ``modality`` when given), or a TypeError naming it."""
    for arch in ARCHITECTURES:
        if (modality is None or arch.modality == modality) and arch.diffusers_matches(transformer):
            return arch
    wanted = [a.label for a in ARCHITECTURES if modality is None or a.modality == modality]
    raise TypeError(
        f"RefAM's diffusers capture runs on {' / '.join(wanted)} transformers; got {type(transformer).__name__}"
    )


def comfy_architecture(model: Any, modality: str | None = None) -> tuple[Architecture, nn.Module]:
    """The architecture and diffusion model inside a ComfyUI MODEL, checked before any work runs:
    a TypeError names what else was found, a NotImplementedError a model whose support is planned."""
    inner = getattr(getattr(model, "model", None), "diffusion_model", None)
    found = type(inner).__name__ if inner is not None else type(model).__name__
    for arch in ARCHITECTURES:
        if (modality is None or arch.modality == modality) and inner is not None and arch.comfy_matches(inner):
            arch.comfy_check(inner)
            return arch, inner
    if found in PLANNED:
        raise NotImplementedError(
            f"RefAM does not support {PLANNED[found]} yet (support is planned); it runs on "
            + " and ".join(_LOADERS[m] for m in _modalities(modality))
            + " MODELs"
        )
    raise TypeError(
        "RefAM needs a "
        + " or ".join(_LOADERS[m] for m in _modalities(modality))
        + f" MODEL; got {found}"
    )


def _modalities(modality: str | None) -> list[str]:
    return [modality] if modality is not None else list(_LOADERS)
