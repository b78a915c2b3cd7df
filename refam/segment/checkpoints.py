"""Checkpoint name or path -> ready :class:`~refam.segment.base.Segmenter` (SAM or SAM2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from refam.segment.base import Segmenter, resolve_dtype
from refam.segment.detect import identify_model, shapes_of
from refam.weights import find_weights_file, load_state_dict_file

__all__ = ["find_checkpoint", "load_segmenter"]

_WHERE_TO_GET = (
    "Download an official checkpoint (e.g. sam_vit_h_4b8939.pth from "
    "github.com/facebookresearch/segment-anything, sam2.1_hiera_large.pt from "
    "github.com/facebookresearch/sam2)"
)


def find_checkpoint(checkpoint: str | Path, search_dirs: Sequence[str | Path] = ()) -> Path:
    """The file ``checkpoint`` names: an existing path as given, else ``search_dir / checkpoint``
    for each directory in order (a name without suffix also tries ``.safetensors``, ``.pt``,
    ``.pth``...). ``FileNotFoundError`` lists every path tried."""
    return find_weights_file(
        checkpoint,
        search_dirs,
        "SAM/SAM2 checkpoint",
        f"(In ComfyUI: models/sams or models/sam2.) {_WHERE_TO_GET}.",
    )


def load_segmenter(
    checkpoint: str | Path,
    *,
    family: str = "auto",
    variant: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
    search_dirs: Sequence[str | Path] = (),
    image_size: int | None = None,
) -> Segmenter:
    """Load a SAM (ViT-B/L/H) or SAM2/2.1 (Hiera t/s/b+/l) checkpoint as a :class:`Segmenter`.

    ``checkpoint``: a path, or a file name looked up in ``search_dirs`` (see
    :func:`find_checkpoint`). ``.pt``/``.pth`` are read with ``torch.load(weights_only=True)``
    (official SAM2 files nest the weights under ``"model"``), ``.safetensors`` with safetensors;
    ``module.``/``model.`` key prefixes are stripped.

    ``family`` (``"auto"``, ``"sam"``, ``"sam2"``) and ``variant`` (``"vit_h"``,
    ``"sam2.1_hiera_l"``, ``"hiera_b+"``...) are read off the weights' shapes, falling back to the
    file name; give them only for checkpoints neither identifies.

    ``dtype``: float32 by default; bfloat16/float16 halve the weights and run under autocast on
    CUDA. On CPU the model stays float32 whatever is asked (the libraries are not made for half
    precision there).

    ``image_size``: SAM2's input resolution (default 1024, the config's) — a knob for tests and
    low-memory runs, since SAM2 weights do not depend on it. SAM weights fix their size (1024
    for the released ones), so for SAM it must be ``None`` or that size.
    """
    path, state_dict, spec = _read_checkpoint(checkpoint, search_dirs, family, variant)
    dtype = resolve_dtype(dtype, device)
    if spec.family == "sam":
        from refam.segment.sam import SAM_IMAGE_SIZE, SamSegmenter, build_sam_module

        size = spec.image_size or SAM_IMAGE_SIZE
        if image_size is not None and image_size != size:
            raise ValueError(
                f"image_size={image_size}: SAM weights fix their input size ({path.name} is {size}); "
                "a smaller size is only available for SAM2"
            )
        model = build_sam_module(spec.variant, state_dict, image_size=size, device=device, dtype=dtype)
        return SamSegmenter(model, name=spec.name, dtype=dtype)

    from refam.segment.sam2_image import Sam2Segmenter
    from refam.segment.sam2_model import build_sam2_module

    model = build_sam2_module(spec.variant, state_dict, image_size=image_size, device=device, dtype=dtype)
    return Sam2Segmenter(model, name=spec.name, dtype=dtype)


def _read_checkpoint(
    checkpoint: str | Path, search_dirs: Sequence[str | Path], family: str, variant: str | None
) -> tuple[Path, dict[str, torch.Tensor], Any]:
    path = find_checkpoint(checkpoint, search_dirs)
    state_dict = load_state_dict_file(path)
    spec = identify_model(shapes_of(state_dict), filename=path.name, family=family, variant=variant)
    return path, state_dict, spec


def load_sam2_video(
    checkpoint: str | Path,
    *,
    variant: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
    search_dirs: Sequence[str | Path] = (),
    image_size: int | None = None,
) -> Any:
    """A SAM2 / SAM2.1 checkpoint as ``sam2``'s ``SAM2VideoPredictor`` (for :mod:`refam.segment.sam2_video`).

    The same files as :func:`load_segmenter` (weights shared by image and video use); SAM (v1)
    checkpoints cannot track and are refused by name.
    """
    path, state_dict, spec = _read_checkpoint(checkpoint, search_dirs, "auto", variant)
    if spec.family != "sam2":
        raise ValueError(f"{path.name} is a {spec.name} (SAM) checkpoint; video propagation needs SAM2 / SAM2.1")
    from refam.segment.sam2_model import SAM2_VIDEO_MODEL_OVERRIDES, build_sam2_module

    return build_sam2_module(
        spec.variant,
        state_dict,
        image_size=image_size,
        model_overrides=SAM2_VIDEO_MODEL_OVERRIDES,
        device=device,
        dtype=resolve_dtype(dtype, device),
    )
