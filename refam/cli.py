"""``refam`` command line: segment images by referring expressions, and benchmark.

refam segment IMAGE "the cat on the left" ["another expression" ...] --out DIR
refam segment-video FRAMES_OR_MP4 "the dog" --segmenter sam2.1_hiera_large.pt --out DIR
refam bench [capture|...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from refam.operating_point import FLUX_IMAGE, MOCHI_VIDEO
from refam.variants import (
    BRANCH_POOLED,
    DEFAULT_MASK_CHOICE,
    DEFAULT_POINT_STRATEGY,
    GAS_RULES,
    MASK_CHOICES,
    NP_MODES,
    POINT_STRATEGIES,
    SCORES,
    SPATIAL_RULES,
)

__all__ = ["main"]


class StageLog:
    """One line per stage with the elapsed time, on stderr so stdout stays machine-readable."""

    def __init__(self, quiet: bool = False) -> None:
        self.start = time.perf_counter()
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[refam {time.perf_counter() - self.start:7.1f}s] {message}", file=sys.stderr, flush=True)


def _slug(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "expression"


def _add_method_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method (defaults: the paper's)")
    g.add_argument(
        "--caption", default="", help="caption conditioning the denoising pass (default: empty prompt)"
    )
    g.add_argument(
        "--magnets",
        default=None,
        help="comma-separated attention magnets (default '_,with,to,and,pink'; '' = none)",
    )
    g.add_argument(
        "--sigma",
        type=float,
        default=None,
        help=f"noise level σ (default: the model's; FLUX {FLUX_IMAGE.sigma} = timestep 750, "
        f"Mochi {MOCHI_VIDEO.sigma} = timestep 990, the toy its own)",
    )
    g.add_argument("--seed", type=int, default=0, help="noise seed")
    g.add_argument(
        "--guidance",
        type=float,
        default=None,
        help=f"FLUX.1-dev distilled guidance (default {FLUX_IMAGE.guidance}; ignored by schnell)",
    )
    g.add_argument(
        "--resolution",
        type=int,
        default=None,
        help=f"model sees ~N² pixels, aspect kept (default: the model's; FLUX {FLUX_IMAGE.resolution}, "
        f"Mochi {MOCHI_VIDEO.resolution})",
    )
    g.add_argument(
        "--blocks",
        default=None,
        help="comma-separated block indices or names (double.3, single.10) to average",
    )
    g.add_argument(
        "--skip-fraction", type=float, default=0.0, help="drop this leading fraction of blocks (paper Tab. 1)"
    )
    g.add_argument(
        "--score",
        choices=SCORES,
        default=None,
        help="what feeds the softmax over tokens (default: the model's; FLUX/Mochi: concept_attention, "
        "ConceptAttention's query vectors as the paper follows; scaled_dot: attention logits; "
        "attention_probs: the expression's attention on the image)",
    )
    g.add_argument(
        "--spatial-rule",
        choices=SPATIAL_RULES,
        default=SPATIAL_RULES[0],
        help="direction words: hybridgl (the paper uses HybridGL's preprocessing: left/right/middle, the word whose "
        "syntactic head comes first) or absolute (both axes, 'top left')",
    )
    g.add_argument(
        "--np-mode",
        choices=NP_MODES,
        default=NP_MODES[0],
        help="noun phrase: mask (keep its tokens of the expression; the paper's NP filter) or encode (encode it "
        "as its own text, as HybridGL does)",
    )
    g.add_argument(
        "--branch-pooled",
        choices=BRANCH_POOLED,
        default=BRANCH_POOLED[0],
        help="FLUX: the pooled vector modulating the expression branch: zero (ConceptAttention's) or the caption's",
    )
    g.add_argument(
        "--gas-threshold", type=float, default=10.0, help="global-attention-sink threshold (× mean mass; 10)"
    )
    g.add_argument(
        "--gas-rule",
        choices=GAS_RULES,
        default="paper",
        help="GAS reference: the mean over all tokens and blocks (paper) or over the other tokens",
    )
    g.add_argument(
        "--remove-gas", action="store_true", help="drop global attention sinks' maps (the paper reports them only)"
    )
    g.add_argument(
        "--points", type=int, default=1, help="positive points per expression given to the segmenter"
    )
    g.add_argument(
        "--point-strategy",
        choices=POINT_STRATEGIES,
        default=None,
        help=f"where the positive point goes (default {DEFAULT_POINT_STRATEGY}; spread with --points > 1): "
        "argmax (the paper's: the best "
        "patch's centre), upsampled_argmax (best pixel of the smooth heatmap), interior (deepest point of the "
        "heatmap's high region holding the maximum), centroid (that region's centroid, else interior), spread "
        "(--points points inside that region)",
    )
    g.add_argument(
        "--negative-points",
        type=int,
        default=0,
        help="negative points, one per other high region of the heatmap, strongest first (default 0, the paper's)",
    )
    g.add_argument(
        "--box",
        action="store_true",
        help="also prompt the segmenter with the bounding box of the heatmap's target region (the paper: points only)",
    )
    g.add_argument(
        "--mask-choice",
        choices=MASK_CHOICES,
        default=DEFAULT_MASK_CHOICE,
        help=f"which multimask candidate is the mask (default {DEFAULT_MASK_CHOICE}): sam_score (the paper's: the "
        "segmenter's best predicted IoU) or agreement (best IoU with the heatmap's target region)",
    )
    g.add_argument(
        "--heatmap-mask",
        action="store_true",
        help="the mask is the heatmap's target region upsampled to the image; the segmenter is not used "
        "(the paper segments with SAM)",
    )
    for flag, what in (
        ("stop-filter", "drop stop-word maps"),
        ("magnet-filter", "drop magnet maps"),
        ("eos-filter", "drop the EOS map"),
        ("np", "keep only the head noun phrase (spaCy)"),
        ("sb", "spatial bias from direction words"),
    ):
        g.add_argument(f"--no-{flag}", action="store_true", help=f"do not {what}")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument(
        "--model",
        default=os.environ.get("REFAM_FLUX_MODEL"),
        help="FLUX: diffusers folder, cached hub id, or transformer file (name under ComfyUI models/diffusion_models). "
        "Env REFAM_FLUX_MODEL. Default: FLUX.1 from the Hugging Face cache, else the embedded toy model.",
    )
    g.add_argument(
        "--t5",
        default=None,
        help="T5-XXL file for a single-file transformer (default: t5xxl_fp16.safetensors)",
    )
    g.add_argument(
        "--clip-l",
        default=None,
        help="CLIP-L file for a single-file transformer (default: clip_l.safetensors)",
    )
    g.add_argument(
        "--vae", default=None, help="FLUX VAE file for a single-file transformer (default: ae.safetensors)"
    )
    g.add_argument(
        "--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder whose models/ to search"
    )
    g.add_argument(
        "--segmenter",
        default=os.environ.get("REFAM_SEGMENTER"),
        help="SAM / SAM2 checkpoint (path or file name)",
    )
    g.add_argument(
        "--segmenter-variant", default=None, help="e.g. vit_h, sam2.1_hiera_large (default: detected)"
    )
    g.add_argument("--sam2-image-size", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: cuda if available)")
    g.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: bf16 on GPU, fp32 on CPU)")
    g.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="refuse images above this many pixels (default: refam.images.MAX_PIXELS); raise it for huge scans",
    )
    g.add_argument(
        "--offload",
        action="store_true",
        help="keep models on the CPU; move each to the device only while it runs",
    )


def _options_from_args(args: argparse.Namespace):
    from refam.expression import DEFAULT_MAGNETS
    from refam.heatmap import parse_block_spec
    from refam.pipeline import RefAMOptions

    magnets = (
        DEFAULT_MAGNETS if args.magnets is None else tuple(m for m in args.magnets.split(",") if m.strip())
    )
    blocks = parse_block_spec(args.blocks or "")
    # σ, guidance and resolution not given on the command line stay the backend's to decide.
    given = {k: getattr(args, k) for k in ("sigma", "guidance", "resolution", "score") if getattr(args, k) is not None}
    return RefAMOptions(magnets=magnets).replace(
        **given,
        seed=args.seed,
        branch_pooled=args.branch_pooled,
        points=args.points,
        point_strategy=args.point_strategy or ("spread" if args.points > 1 else DEFAULT_POINT_STRATEGY),
        negative_points=args.negative_points,
        box_prompt=args.box,
        mask_choice=args.mask_choice,
        heatmap_mask=args.heatmap_mask,
        drop_stop_words=not args.no_stop_filter,
        drop_magnets=not args.no_magnet_filter,
        drop_eos=not args.no_eos_filter,
        remove_gas=args.remove_gas,
        gas_threshold=args.gas_threshold,
        gas_rule=args.gas_rule,
        spatial_rule=args.spatial_rule,
        np_mode=args.np_mode,
        noun_phrase=not args.no_np,
        spatial_bias=not args.no_sb,
        blocks=blocks,
        skip_fraction=args.skip_fraction,
        **_pixel_limit(args),
    )


def _device_and_dtype(args: argparse.Namespace):
    import torch

    from refam.loading import parse_dtype

    device = _check_device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        # torchrun / accelerate: one GPU per local rank, not every rank on cuda:0.
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    dtype = (
        parse_dtype(args.dtype)
        if args.dtype
        else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )
    return device, dtype


def _check_device(text: str):
    """``--device`` as a device this machine has, or an error that says which ones it has."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"--device {text!r} is not a device name: use cuda, cuda:1, mps or cpu") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(
                f"--device {text}: this machine's torch ({torch.__version__}, {build}) sees no CUDA GPU; "
                "use --device cpu, or install a CUDA build of torch"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {text}: there are {torch.cuda.device_count()} CUDA GPU(s) (cuda:0 ...)")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"--device {text}: Apple MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"--device {text}: RefAM runs on cuda, mps or cpu")
    return device


def _check_args(args: argparse.Namespace) -> None:
    """Every argument checked before any model loads or any frame is decoded, so a typo costs
    nothing: options, device, dtype, segmenter file, counts and the output folder."""
    _options_from_args(args)
    _device_and_dtype(args)
    for flag in ("limit", "candidates", "points_from", "max_pixels"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if getattr(args, "prompt_frame", None) is not None:
        _prompt_frame(args.prompt_frame)
    if args.segmenter:
        from refam.loading import segmenter_search_dirs
        from refam.segment import find_checkpoint

        find_checkpoint(args.segmenter, segmenter_search_dirs(args.comfyui))
    if not getattr(args, "merge_only", False):
        from refam.run_folder import check_out

        check_out(args.out)


def _prompt_frame(text: str) -> str | int:
    if text in ("first", "best"):
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"--prompt-frame must be first, best or a frame index (0, 1, ...), got {text!r}")


def _pixel_limit(args: argparse.Namespace) -> dict[str, int]:
    return {} if args.max_pixels is None else {"max_pixels": args.max_pixels}


def _fresh_out(path: str, log: StageLog) -> Path:
    """The output folder with the previous run's files (as its summary listed them) removed, so
    nothing stale sits beside the new summary; files the user put there are left alone."""
    from refam.run_folder import clear_previous_run, prepare_out

    out = prepare_out(path)
    removed = clear_previous_run(out)
    if removed:
        log(f"removed {removed} file(s) / folder(s) of the previous run in {out}")
    return out


def _note_ignored(args: argparse.Namespace, pipe: Any, log: StageLog) -> None:
    """Say so when an option given on the command line has no effect on the loaded model."""
    native = getattr(pipe.backend, "native_size", None)
    if native is not None and args.resolution is not None:
        log(f"note: --resolution {args.resolution} is ignored: {pipe.backend.name} runs only at its native "
            f"{native[1]}x{native[0]} px")


def _ran_with(pipe: Any) -> dict[str, Any]:
    """The operating point and knobs a run used, as summary.json records them."""
    opts = pipe.resolved()
    return {
        "sigma": opts.sigma,
        "resolution": opts.resolution,
        "guidance": opts.guidance,
        "seed": opts.seed,
        "magnets": list(opts.magnets),
        "points": opts.points,
        "point_strategy": opts.point_strategy,
        "negative_points": opts.negative_points,
        "box_prompt": opts.box_prompt,
        "mask_choice": opts.mask_choice,
        "heatmap_mask": opts.heatmap_mask,
    }


def _load_pipeline(args: argparse.Namespace, log: StageLog):
    from refam.loading import load_pipeline

    device, dtype = _device_and_dtype(args)
    options = _options_from_args(args)
    return load_pipeline(
        args.model,
        segmenter=args.segmenter,
        segmenter_variant=args.segmenter_variant,
        segmenter_image_size=args.sam2_image_size,
        t5=args.t5,
        clip_l=args.clip_l,
        vae=args.vae,
        comfyui_path=args.comfyui,
        device=device,
        dtype=dtype,
        offload=args.offload,
        options=options,
        progress=log,
    )


def _write_outputs(out: Path, image: Any, results: list[Any], meta: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    from refam.visualize import gray_uint8, heatmap_overlay_image, mask_overlay_image

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {**meta, "results": []}
    for i, res in enumerate(results):
        stem = f"{i:02d}_{_slug(res.expression)}"
        record = res.summary()
        summary.setdefault("files", []).extend(
            f"{stem}_{kind}.png" for kind in ("heatmap", "heatmap_gray", "mask", "mask_overlay")[: 2 if res.mask is None else 4]
        )
        # Positive points only: a negative one drawn the same way would read as a click on the object.
        points = [(p.x, p.y) for p in res.positives()]
        # Drawn a band of rows at a time: a full-size float copy of a 48 MP image is 0.5 GB.
        heatmap_overlay_image(image, res.heatmap, points).save(out / f"{stem}_heatmap.png")
        Image.fromarray(gray_uint8(res.heatmap)).save(out / f"{stem}_heatmap_gray.png")
        record["heatmap_overlay"] = f"{stem}_heatmap.png"
        if res.mask is not None:
            Image.fromarray(res.mask.astype(np.uint8) * 255).save(out / f"{stem}_mask.png")
            mask_overlay_image(image, res.mask, points).save(out / f"{stem}_mask_overlay.png")
            record["mask"] = f"{stem}_mask.png"
        summary["results"].append(record)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def cmd_segment(args: argparse.Namespace) -> int:
    from refam.images import load_image
    from refam.pipeline import normalize_expressions

    log = StageLog(args.quiet)
    expressions = normalize_expressions(args.expressions)  # fail on empty input before loading anything
    _check_args(args)
    image = load_image(args.image, **_pixel_limit(args))
    pipe = _load_pipeline(args, log)
    _note_ignored(args, pipe, log)
    results = pipe.segment(image, expressions, args.caption, progress=log)
    meta = {
        "image": str(args.image),
        "image_size": [int(image.shape[0]), int(image.shape[1])],
        "model": pipe.backend.name,
        "caption": args.caption,
        "options": _ran_with(pipe),
    }
    out = _fresh_out(args.out, log)
    summary = _write_outputs(out, image, results, meta)
    log(f"wrote {len(results)} result(s) to {out}")
    for r in summary["results"]:
        print(json.dumps({k: r[k] for k in ("expression", "point", "mask_area", "warnings")}))
    return 0


DAVIS_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [0] * (3 * 251)


def _video_pipeline(args: argparse.Namespace, log: StageLog):
    """Mochi for ``--video-model`` (the paper's video path), else the image pipeline (FLUX on frames)."""
    if not getattr(args, "video_model", None):
        return _load_pipeline(args, log)
    from refam.loading import load_mochi
    from refam.pipeline import RefAMPipeline

    device, dtype = _device_and_dtype(args)
    backend = load_mochi(args.video_model, device=device, dtype=dtype, progress=log)
    return RefAMPipeline(backend, None, _options_from_args(args))


def _write_video_outputs(out: Path, frames: Any, results: list[Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Per expression: DAVIS-layout palette PNGs (0 background, 1 object) and an overlay GIF."""
    import numpy as np
    from PIL import Image

    from refam.visualize import mask_overlay

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {**meta, "results": []}
    for i, res in enumerate(results):
        stem = f"{i:02d}_{_slug(res.expression)}"
        folder = out / stem
        folder.mkdir(exist_ok=True)
        thumbs = []
        for t, mask in enumerate(res.masks):
            png = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.astype(np.uint8).tobytes())
            png.putpalette(DAVIS_PALETTE)
            png.save(folder / f"{t:05d}.png")
            shown = Image.fromarray(mask_overlay(frames.frame(t), mask))
            shown.thumbnail((480, 480))
            thumbs.append(shown)
        thumbs[0].save(out / f"{stem}_overlay.gif", save_all=True, append_images=thumbs[1:], duration=80, loop=0)
        record = res.summary()
        record.update(masks=f"{stem}/", overlay=f"{stem}_overlay.gif")
        summary.setdefault("files", []).extend([stem, f"{stem}_overlay.gif"])
        summary["results"].append(record)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def cmd_segment_video(args: argparse.Namespace) -> int:
    import shutil

    from refam.loading import segmenter_search_dirs
    from refam.pipeline import normalize_expressions
    from refam.run_folder import prepare_out
    from refam.segment import load_sam2_video
    from refam.segment.sam2_video import open_frames
    from refam.video import segment_video, segment_video_mochi

    log = StageLog(args.quiet)
    expressions = normalize_expressions(args.expressions)
    if not args.segmenter:
        raise ValueError(
            "video propagation needs a SAM2 / SAM2.1 checkpoint: --segmenter sam2.1_hiera_large.pt "
            "(or REFAM_SEGMENTER; looked up in ComfyUI's models/sam2 and models/sams)"
        )
    _check_args(args)
    prompt_frame = _prompt_frame(args.prompt_frame)
    # A decoded video's frames live in the output folder, not the system temp: a run killed
    # mid-way leaves them where the next run into the same folder finds and removes them.
    scratch = prepare_out(args.out) / FRAMES_SCRATCH
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        frames = open_frames(args.source, scratch)
        check_frames(frames, prompt_frame)
        log(f"{len(frames)} frames of {frames.size[1]}x{frames.size[0]}")
        device, _dtype = _device_and_dtype(args)
        predictor = load_sam2_video(
            args.segmenter,
            variant=args.segmenter_variant,
            device=device,
            search_dirs=segmenter_search_dirs(args.comfyui),
            image_size=args.sam2_image_size,
        )
        args.segmenter = None  # the image segmenter is not needed: SAM2 tracks instead
        pipe = _video_pipeline(args, log)
        _note_ignored(args, pipe, log)
        last = {"t": 0.0}

        def on_frame(done: int, total: int) -> None:
            now = time.perf_counter()
            if done == total or now - last["t"] > 2.0:
                last["t"] = now
                log(f"tracked {done}/{total} frames")

        run = segment_video_mochi if args.video_model else segment_video
        extra = {} if args.video_model else {"candidates": args.candidates}
        results = run(
            pipe,
            predictor,
            frames,
            expressions,
            args.caption,
            prompt_frame=prompt_frame,
            points_from=args.points_from,
            on_frame=on_frame,
            progress=log,
            **extra,
        )
        meta = {
            "source": str(args.source),
            "frames": len(frames),
            "frame_size": list(frames.size),
            "model": pipe.backend.name,
            "caption": args.caption,
            "prompt_frame": prompt_frame,
            "options": _ran_with(pipe),
        }
        out = _fresh_out(args.out, log)
        summary = _write_video_outputs(out, frames, results, meta)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"wrote {len(results)} mask sequence(s) to {out}")
    for r in summary["results"]:
        print(json.dumps({k: r[k] for k in ("expression", "prompt_frame", "masks", "warnings")}))
    return 0


FRAMES_SCRATCH = ".refam_frames"


def check_frames(frames: Any, prompt_frame: str | int) -> None:
    """A clip's frames all one size and the prompt frame inside the clip, before any DiT pass."""
    verify = getattr(frames, "verify", None)
    if callable(verify):
        verify()
    if isinstance(prompt_frame, int) and prompt_frame >= len(frames):
        raise ValueError(f"--prompt-frame {prompt_frame}: the clip has {len(frames)} frames (0 to {len(frames) - 1})")


VIDEO_DATASETS = ("ref-davis17", "mevis", "ref-youtube-vos")


def _eval_video(args: argparse.Namespace, log: StageLog, preset: dict[str, Any]) -> int:
    from refam.data.captions import load_captions
    from refam.data.video_datasets import ANNOTATOR_SETS, MevisDataset, RefDavisDataset, RefYoutubeVosDataset
    from refam.eval import (
        Shard,
        davis_results_table,
        evaluate_ref_davis,
        evaluate_video,
        load_records,
        mean_over_sets,
        predict_ytvos,
        summarize_video,
        video_results_table,
        video_run_keys,
        zip_submission,
    )
    from refam.loading import segmenter_search_dirs
    from refam.segment import load_sam2_video

    out = Path(args.out)
    if args.dataset == "ref-davis17":
        # The literature's Ref-DAVIS17: each annotator set scored on its own, then their mean.
        sets = list(ANNOTATOR_SETS) if args.annotator == "all" else [args.annotator]
        runs = {name: (out / name if len(sets) > 1 else out, RefDavisDataset(args.data_root, name, args.split)) for name in sets}
        run = evaluate_ref_davis
    else:
        dataset = (
            MevisDataset(args.data_root, args.split)
            if args.dataset == "mevis"
            else RefYoutubeVosDataset(args.data_root, args.split)
        )
        runs = {args.dataset: (out, dataset)}
        run = predict_ytvos if args.dataset == "ref-youtube-vos" else evaluate_video
    shard = Shard.from_env()
    if not args.merge_only:
        if not args.segmenter:
            raise ValueError("video evaluation needs a SAM2 checkpoint: --segmenter sam2.1_hiera_large.pt")
        prompt_frame = _prompt_frame(args.prompt_frame)
        # The paper captions the video sets with a language model; given a file, each video's caption
        # conditions its passes, else the empty prompt.
        captions = load_captions(args.captions) if args.captions and not args.no_caption else None
        protocol = {"prompt_frame": prompt_frame, "candidates": args.candidates, "points_from": args.points_from,
                    "mochi": bool(args.video_model)}
        for folder, dataset in runs.values():
            _check_resume(folder, {**video_run_keys(dataset, captions, **protocol), **_run_info(args)})
        device, _dtype = _device_and_dtype(args)
        tracker = load_sam2_video(
            args.segmenter, device=device, search_dirs=segmenter_search_dirs(args.comfyui), image_size=args.sam2_image_size
        )
        args.segmenter = None
        pipe = _video_pipeline(args, log)
        _note_ignored(args, pipe, log)
        if captions is None:
            log("no --captions file: conditioning on the empty prompt (the paper captions each video)")
        for name, (folder, dataset) in runs.items():
            counts = run(
                pipe, tracker, dataset, folder, candidates=args.candidates, points_from=args.points_from, shard=shard,
                limit=args.limit, progress=log, captions=captions, run_info=_run_info(args), prompt_frame=prompt_frame,
                mochi=bool(args.video_model), **preset,
            )
            log(f"rank {shard.rank}, {name}: {counts['written']} new record(s)")
        _barrier(shard)
    if shard.rank == 0 and args.dataset == "ref-youtube-vos":
        _need_results(out, (out / "Annotations").is_dir())
        print(f"submission: {zip_submission(out)} (scored by the Ref-YouTube-VOS evaluation server)")
    elif shard.rank == 0:
        for folder, _ in runs.values():
            _need_results(folder, any(folder.glob("records.rank*.jsonl")))
        per_set = {name: summarize_video(load_records(folder)) for name, (folder, _) in runs.items()}
        only = next(iter(per_set.values()))
        if args.dataset == "ref-davis17":
            table = davis_results_table(per_set)
        else:
            table = video_results_table(only, args.dataset)
        summary: dict[str, Any] = {"dataset": args.dataset, "split": args.split}
        if len(per_set) > 1:
            summary.update(annotator_sets=per_set, mean=mean_over_sets(per_set))
        else:
            summary.update(only)
        summary["configuration"] = {name: _stored_config(folder) for name, (folder, _) in runs.items()}
        (out / "results.json").write_text(json.dumps(summary, indent=2))
        (out / "results.md").write_text(table + "\n")
        print(table)
    return 0


def _run_info(args: argparse.Namespace) -> dict[str, Any]:
    """What names an eval run beyond its options: the ablation preset."""
    return {"preset": args.preset}


def _check_resume(out: Path, known: dict[str, Any]) -> None:
    """Refuse, before any model loads, to resume into a folder of another configuration (what is
    known now; the options as the model resolves them are checked again once it has loaded)."""
    from refam.run_folder import check_config

    if out.is_dir():
        check_config(out, known, partial=True)


def _need_results(out: Path, present: bool) -> None:
    if not present:
        raise ValueError(f"--merge-only: {out} holds no records of a run; run the evaluation without --merge-only first")


def _stored_config(out: Path) -> dict[str, Any] | None:
    from refam.run_folder import CONFIG_FILE

    path = out / CONFIG_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _barrier(shard: Any) -> None:
    """Every rank must have finished before rank 0 reads all records."""
    if shard.world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        dist.barrier()
        dist.destroy_process_group()


def cmd_eval(args: argparse.Namespace) -> int:
    from refam.data.refer import ReferDataset
    from refam.eval import (
        PRESETS,
        Shard,
        evaluate_refer,
        load_records,
        refer_run_keys,
        results_table,
        summarize,
        write_report,
    )

    log = StageLog(args.quiet)
    if args.preset not in PRESETS:
        raise ValueError(f"unknown --preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    _check_args(args)
    if args.dataset in VIDEO_DATASETS:
        return _eval_video(args, log, PRESETS[args.preset])
    dataset = ReferDataset(
        args.data_root, args.dataset, args.split_by, images=args.images, captions=None if args.no_caption else args.captions
    )
    if args.split not in dataset.splits():
        raise ValueError(f"--split {args.split!r}: {args.dataset} ({dataset.split_by}) has splits {', '.join(dataset.splits())}")
    shard = Shard.from_env()
    out = Path(args.out)
    if not args.merge_only:
        caption_mode = "empty" if args.no_caption or args.captions is None else "file"
        _check_resume(out, {**refer_run_keys(dataset, args.split, args.overlap, caption_mode), **_run_info(args)})
        if caption_mode == "empty" and not args.no_caption:
            log("no --captions file: conditioning on the empty prompt (the paper uses COCO captions)")
        pipe = _load_pipeline(args, log)
        _note_ignored(args, pipe, log)
        counts = evaluate_refer(
            pipe,
            dataset,
            args.split,
            out,
            caption_mode=caption_mode,
            overlap=args.overlap,
            shard=shard,
            limit=args.limit,
            progress=log,
            visuals=args.visuals,
            run_info=_run_info(args),
            **PRESETS[args.preset],
        )
        log(f"rank {shard.rank}: {counts['written']} new record(s), {counts['skipped']} skipped (unreadable images)")
        _barrier(shard)
    if shard.rank == 0:
        _need_results(out, any(out.glob("records.rank*.jsonl")))
        summary = summarize(load_records(out))
        table = results_table(summary, args.dataset, args.split)
        config = _stored_config(out)
        (out / "results.json").write_text(
            json.dumps(
                {"dataset": args.dataset, "split": args.split, "preset": (config or {}).get("preset", args.preset),
                 **summary, "configuration": config},
                indent=2,
            )
        )
        (out / "results.md").write_text(table + "\n")
        if (out / "visuals").is_dir():
            log(f"report: {write_report(out, title=f'RefAM on {args.dataset} {args.split}')}")
        print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refam", description="RefAM zero-shot referring segmentation")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment one image by one or more referring expressions")
    seg.add_argument("image", help="image file (PNG/JPEG/...; gray, RGBA and 16-bit accepted)")
    seg.add_argument("expressions", nargs="+", help="referring expression(s), e.g. 'the cat on the left'")
    seg.add_argument("--out", default="refam_out", help="output folder (default: ./refam_out)")
    seg.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_method_options(seg)
    _add_model_options(seg)
    seg.set_defaults(func=cmd_segment)

    vid = sub.add_parser(
        "segment-video", help="segment a clip: RefAM point on a prompt frame, SAM2 tracks it through the clip"
    )
    vid.add_argument("source", help="folder of frames (DAVIS layout: 00000.jpg ...) or a video file (mp4, ...)")
    vid.add_argument("expressions", nargs="+", help="referring expression(s)")
    vid.add_argument("--out", default="refam_video_out", help="output folder (default: ./refam_video_out)")
    vid.add_argument(
        "--prompt-frame",
        default="first",
        help="'first' (the paper), 'best' (the frame whose heatmap is most peaked) or a frame index",
    )
    vid.add_argument("--candidates", type=int, default=8, help="frames scored with --prompt-frame best")
    vid.add_argument(
        "--video-model",
        default=os.environ.get("REFAM_MOCHI_MODEL"),
        help="Mochi (diffusers folder or cached hub id, env REFAM_MOCHI_MODEL): one Mochi pass over the clip "
        "(the paper's video path; σ 0.01, 480 px unless given) instead of FLUX on candidate frames",
    )
    vid.add_argument("--points-from", type=int, default=1, help="positive points from the N most evident frames")
    vid.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_method_options(vid)
    _add_model_options(vid)
    vid.set_defaults(func=cmd_segment_video)

    ev = sub.add_parser("eval", help="evaluate on RefCOCO / RefCOCO+ / RefCOCOg (refer format); resumable, shardable")
    ev.add_argument(
        "dataset", help="refcoco, refcoco+, refcocog (or another folder in the refer format), ref-davis17, mevis"
    )
    ev.add_argument("--split", required=True, help="val, testA, testB (refcoco/+); val, test (refcocog); val (DAVIS); valid_u (MeViS)")
    ev.add_argument(
        "--annotator",
        default="all",
        help="Ref-DAVIS17 expression set: all (the four sets, each scored, then their mean: the literature's figure), "
        "annot1, annot1_full_video, annot2 or annot2_full_video",
    )
    ev.add_argument("--prompt-frame", default="first", help="video: first (paper), best or a frame index")
    ev.add_argument("--candidates", type=int, default=8, help="video: candidate frames for --prompt-frame best")
    ev.add_argument("--points-from", type=int, default=1, help="video: points from the N most evident frames")
    ev.add_argument(
        "--video-model",
        default=os.environ.get("REFAM_MOCHI_MODEL"),
        help="video: Mochi (diffusers folder / cached hub id) instead of FLUX on frames — the paper's video path",
    )
    ev.add_argument("--data-root", required=True, help="folder holding <dataset>/refs(<splitBy>).p, instances.json, images/")
    ev.add_argument("--split-by", default=None, help="refer splitBy (default: unc for refcoco/+, umd for refcocog)")
    ev.add_argument("--images", default=None, help="COCO train2014 images (default: DATA_ROOT/images/mscoco/images/train2014)")
    ev.add_argument(
        "--captions",
        default=None,
        help="captions conditioning the passes (the paper's): COCO captions_train2014.json, or a JSON map "
        "{id: caption} by image id, image file name or video name",
    )
    ev.add_argument("--no-caption", action="store_true", help="condition on the empty prompt")
    ev.add_argument("--overlap", default="union", choices=("union", "exactly_one"), help="GT from overlapping polygons")
    ev.add_argument(
        "--preset", default="full",
        help="full (the library's defaults), paper (also the paper's argmax prompt: Table 2 as published), "
        "or an ablation: no-am, no-np, no-sb, no-am-np-sb, am-only",
    )
    ev.add_argument("--limit", type=int, default=None, help="only the first N images (smoke runs)")
    ev.add_argument("--merge-only", action="store_true", help="merge the ranks' records and print the table")
    ev.add_argument("--visuals", action="store_true", help="save a picture per sentence and write report.html")
    ev.add_argument("--out", required=True, help="records (JSONL per rank), results.json, results.md")
    ev.add_argument("--quiet", action="store_true")
    _add_method_options(ev)
    _add_model_options(ev)
    ev.set_defaults(func=cmd_eval)

    bench = sub.add_parser(
        "bench", help="benchmarks that print numbers (capture overhead, amortisation, memory)"
    )
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for python -m refam.bench")
    bench.set_defaults(func=lambda a: __import__("refam.bench", fromlist=["main"]).main(a.rest))
    return parser


# Failures that are the input's, not the program's: answered in one line, no traceback.
# ImportError: the pack's own missing-package errors say what to install (refam.install_hints).
USER_ERRORS = (
    ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, NotImplementedError, ImportError,
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"refam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("refam: interrupted (finished records are kept; rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
