"""The models a command runs, loaded from its arguments: the RefAM pipeline and the SAM2 video
tracker, and what the loaded model makes of the options given."""

from __future__ import annotations

import argparse
from typing import Any

from .arguments import device_and_dtype, options_from_args
from .progress import StageLog

__all__ = ["load_pipeline", "load_tracker", "load_video_pipeline", "note_ignored", "ran_with"]


def load_pipeline(
    args: argparse.Namespace,
    log: StageLog,
    *,
    model: str | None = None,
    architecture: str | None = None,
    with_segmenter: bool = True,
) -> Any:
    """The pipeline of ``model`` (default ``--model``), its architecture detected unless given,
    with ``--segmenter`` when one is set and wanted."""
    from refam.pipeline import RefAMPipeline

    device, dtype = device_and_dtype(args)
    return RefAMPipeline.from_pretrained(
        model or args.model,
        architecture=architecture,
        segmenter=args.segmenter if with_segmenter else None,
        segmenter_variant=args.segmenter_variant,
        segmenter_image_size=args.sam2_image_size,
        t5=args.t5,
        clip_l=args.clip_l,
        vae=args.vae,
        comfyui_path=args.comfyui,
        device=device,
        dtype=dtype,
        offload=args.offload,
        options=options_from_args(args),
        progress=log,
    )


def load_video_pipeline(args: argparse.Namespace, log: StageLog) -> Any:
    """Mochi for ``--video-model`` (the paper's video path), else ``--model`` (FLUX on frames).
    The SAM2 tracker makes the masks, so no image segmenter is loaded."""
    if getattr(args, "video_model", None):
        return load_pipeline(args, log, model=args.video_model, architecture="mochi", with_segmenter=False)
    return load_pipeline(args, log, with_segmenter=False)


def load_tracker(args: argparse.Namespace) -> Any:
    """The SAM2 video predictor of ``--segmenter``."""
    from refam.model_folders import segmenter_search_dirs
    from refam.segment import load_sam2_video

    device, _dtype = device_and_dtype(args)
    return load_sam2_video(
        args.segmenter,
        variant=args.segmenter_variant,
        device=device,
        search_dirs=segmenter_search_dirs(args.comfyui),
        image_size=args.sam2_image_size,
    )


def note_ignored(args: argparse.Namespace, pipe: Any, log: StageLog) -> None:
    """Say so when an option given on the command line has no effect on the loaded model."""
    native = getattr(pipe.backend, "native_size", None)
    if native is not None and args.resolution is not None:
        log(f"note: --resolution {args.resolution} is ignored: {pipe.backend.name} runs only at its native "
            f"{native[1]}x{native[0]} px")


def ran_with(pipe: Any) -> dict[str, Any]:
    """The operating point and knobs a run used, as summary.json records them."""
    opts = pipe.resolved()
    return {
        "sigma": opts.sigma,
        "resolution": opts.resolution,
        "guidance": opts.guidance,
        "seed": opts.seed,
        "magnets": list(opts.magnets),
        "magnet_variant": opts.magnet_variant,
        "magnet_seed": opts.magnet_seed,
        "magnet_words": list(opts.magnet_plan().words),
        "points": opts.points,
        "point_strategy": opts.point_strategy,
        "negative_points": opts.negative_points,
        "box_prompt": opts.box_prompt,
        "mask_choice": opts.mask_choice,
        "heatmap_mask": opts.heatmap_mask,
        "features": opts.features.describe(),
        "space": opts.heatmap.space,
    }
