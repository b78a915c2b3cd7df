"""Where a ComfyUI installation keeps its model files (``models/<folder>``), so users can name a
checkpoint by file name instead of by path."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["COMFY_FOLDERS", "comfyui_model_dirs", "comfyui_root", "segmenter_search_dirs"]

# kind -> ComfyUI's folder names for it, current name first (``unet`` and ``clip`` are the old ones)
COMFY_FOLDERS = {
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
    "sams": ("sams",),
    "sam2": ("sam2",),
}


def comfyui_root(explicit: str | Path | None = None) -> Path | None:
    """The ComfyUI checkout: ``explicit``, else ``COMFYUI_PATH``, else None."""
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
