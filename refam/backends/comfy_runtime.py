"""ComfyUI's runtime services as RefAM needs them: devices, progress, cancel, model folders.

Only the node pack imports this (inside ComfyUI); every ``comfy`` import is local so the module
itself loads anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

__all__ = [
    "SEGMENTER_FOLDERS",
    "SEGMENTER_SUFFIXES",
    "block_progress",
    "checkpoint_path",
    "list_checkpoints",
    "offload_device",
    "register_model_folders",
    "throw_if_interrupted",
    "torch_device",
]

SEGMENTER_SUFFIXES = {".pt", ".pth", ".safetensors"}
SEGMENTER_FOLDERS = ("sams", "sam2")


def torch_device() -> torch.device:
    import comfy.model_management

    return comfy.model_management.get_torch_device()


def offload_device() -> torch.device:
    import comfy.model_management

    return comfy.model_management.unet_offload_device()


def throw_if_interrupted() -> None:
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


def block_progress(total: int) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback that drives the node's progress bar in the ComfyUI frontend."""
    import comfy.utils

    bar = comfy.utils.ProgressBar(total)

    def update(done: int, expected: int) -> None:
        bar.update_absolute(done, expected)

    return update


def register_model_folders() -> None:
    """``models/sams`` and ``models/sam2`` with their weight suffixes, keeping any paths that
    ``extra_model_paths.yaml`` already added (ComfyUI reads it before loading custom nodes)."""
    import folder_paths

    for name in SEGMENTER_FOLDERS:
        paths, suffixes = folder_paths.folder_names_and_paths.get(name, ([], set()))
        paths = list(paths)
        default = os.path.join(folder_paths.models_dir, name)
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[name] = (paths, set(suffixes) | SEGMENTER_SUFFIXES)


def list_checkpoints(*folders: str) -> list[str]:
    import folder_paths

    register_model_folders()
    names: list[str] = []
    for folder in folders:
        for name in folder_paths.get_filename_list(folder):
            if name not in names:
                names.append(name)
    return names


def checkpoint_path(name: str, *folders: str) -> str:
    """Full path of a checkpoint listed in ``folders``; the error lists every folder searched."""
    import folder_paths

    register_model_folders()
    for folder in folders:
        path = folder_paths.get_full_path(folder, name)
        if path:
            return path
    searched = [p for folder in folders for p in folder_paths.get_folder_paths(folder)]
    raise FileNotFoundError(
        f"segmenter checkpoint {name!r} not found; searched: {', '.join(searched) or '(no folders)'}. "
        f"Put SAM files (sam_vit_b_01ec64.pth ...) in models/sams and SAM2 files (sam2.1_hiera_large.pt ...) "
        f"in models/sam2, or add the folders to extra_model_paths.yaml"
    )
