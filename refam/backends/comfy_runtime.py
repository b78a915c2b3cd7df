"""ComfyUI's runtime services as RefAM needs them: devices, progress, cancel, model folders.

Only the node pack imports this (inside ComfyUI); every ``comfy`` import is local so the module
itself loads anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import ModuleType

import torch

__all__ = [
    "SEGMENTER_FOLDERS",
    "SEGMENTER_SUFFIXES",
    "block_progress",
    "checkpoint_path",
    "folder_paths",
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


def folder_paths() -> ModuleType:
    """ComfyUI's ``folder_paths`` wherever the running core keeps it: a top-level module upstream,
    ``comfy.cmd.folder_paths`` in the pip-packaged core (top-level only once its server set up the
    vanilla environment)."""
    try:
        import folder_paths as module
    except ImportError:
        from comfy.cmd import folder_paths as module
    return module


def register_model_folders() -> None:
    """``models/sams`` and ``models/sam2`` with their weight suffixes, keeping any paths that
    ``extra_model_paths.yaml`` already added (ComfyUI reads it before loading custom nodes).

    Only the mapping operations every core supports are used (``in``, ``[name]``, assignment of a
    ``(paths, suffixes)`` pair): upstream keeps a dict, the packaged core a ``FolderNames``
    object whose ``get(name, default)`` raises.
    """
    fp = folder_paths()
    registry = fp.folder_names_and_paths
    for name in SEGMENTER_FOLDERS:
        default = os.path.join(fp.models_dir, name)
        if name not in registry:
            registry[name] = ([default], set(SEGMENTER_SUFFIXES))
            continue
        paths, suffixes = registry[name]
        if default not in [str(p) for p in paths]:
            fp.add_model_folder_path(name, default)
        missing = SEGMENTER_SUFFIXES - set(suffixes)
        if missing:
            suffixes.update(missing)


def list_checkpoints(folders: Sequence[str], family: str) -> list[str]:
    """Weight files in ``folders`` that may hold a ``family`` (``"sam"`` / ``"sam2"``) model.

    A file whose name says it is the other family (``sam_vit_h_4b8939.pth`` in Load SAM2) is left
    out; a name that says nothing is listed, and the loader reads the weights to decide.
    """
    from refam.segment.detect import parse_filename

    fp = folder_paths()
    register_model_folders()
    names: list[str] = []
    for folder in folders:
        for name in fp.get_filename_list(folder):
            named = parse_filename(name)[0]
            if name not in names and named in (None, family):
                names.append(name)
    return names


def checkpoint_path(name: str, *folders: str) -> str:
    """Full path of a checkpoint listed in ``folders``; the error lists every folder searched."""
    fp = folder_paths()
    register_model_folders()
    for folder in folders:
        path = fp.get_full_path(folder, name)
        if path:
            return str(path)
    searched = [str(p) for folder in folders for p in fp.get_folder_paths(folder)]
    raise FileNotFoundError(
        f"segmenter checkpoint {name!r} not found; searched: {', '.join(searched) or '(no folders)'}. "
        f"Put SAM files (sam_vit_b_01ec64.pth ...) in models/sams and SAM2 files (sam2.1_hiera_large.pt ...) "
        f"in models/sam2, or add the folders to extra_model_paths.yaml"
    )
