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
from refam.variants import BRANCH_POOLED, GAS_RULES, NP_MODES, SCORES, SPATIAL_RULES

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
    )


def _device_and_dtype(args: argparse.Namespace):
    import torch

    from refam.loading import parse_dtype

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        # torchrun / accelerate: one GPU per local rank, not every rank on cuda:0.
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    dtype = (
        parse_dtype(args.dtype)
        if args.dtype
        else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )
    return device, dtype


def _ran_with(pipe: Any) -> dict[str, Any]:
    """The operating point and knobs a run used, as summary.json records them."""
    opts = pipe.resolved()
    return {
        "sigma": opts.sigma,
        "resolution": opts.resolution,
        "guidance": opts.guidance,
        "seed": opts.seed,
        "magnets": list(opts.magnets),
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

    from refam.visualize import draw_points, heatmap_overlay, mask_overlay

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {**meta, "results": []}
    for i, res in enumerate(results):
        stem = f"{i:02d}_{_slug(res.expression)}"
        record = res.summary()
        overlay = draw_points(heatmap_overlay(image, res.heatmap), [(p.x, p.y) for p in res.points])
        Image.fromarray(overlay).save(out / f"{stem}_heatmap.png")
        Image.fromarray((res.heatmap * 255).round().astype(np.uint8)).save(out / f"{stem}_heatmap_gray.png")
        record["heatmap_overlay"] = f"{stem}_heatmap.png"
        if res.mask is not None:
            Image.fromarray(res.mask.astype(np.uint8) * 255).save(out / f"{stem}_mask.png")
            shown = draw_points(mask_overlay(image, res.mask), [(p.x, p.y) for p in res.points])
            Image.fromarray(shown).save(out / f"{stem}_mask_overlay.png")
            record["mask"] = f"{stem}_mask.png"
        summary["results"].append(record)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def cmd_segment(args: argparse.Namespace) -> int:
    from refam.images import load_image
    from refam.pipeline import normalize_expressions

    log = StageLog(args.quiet)
    expressions = normalize_expressions(args.expressions)  # fail on empty input before loading anything
    image = load_image(args.image)
    pipe = _load_pipeline(args, log)
    results = pipe.segment(image, expressions, args.caption, progress=log)
    meta = {
        "image": str(args.image),
        "image_size": [int(image.shape[0]), int(image.shape[1])],
        "model": pipe.backend.name,
        "caption": args.caption,
        "options": _ran_with(pipe),
    }
    summary = _write_outputs(Path(args.out), image, results, meta)
    log(f"wrote {len(results)} result(s) to {args.out}")
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
        summary["results"].append(record)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def cmd_segment_video(args: argparse.Namespace) -> int:
    import tempfile

    from refam.loading import segmenter_search_dirs
    from refam.pipeline import normalize_expressions
    from refam.segment import load_sam2_video
    from refam.segment.video import open_frames
    from refam.video import segment_video, segment_video_mochi

    log = StageLog(args.quiet)
    expressions = normalize_expressions(args.expressions)
    if not args.segmenter:
        raise ValueError(
            "video propagation needs a SAM2 / SAM2.1 checkpoint: --segmenter sam2.1_hiera_large.pt "
            "(or REFAM_SEGMENTER; looked up in ComfyUI's models/sam2 and models/sams)"
        )
    prompt_frame: str | int = int(args.prompt_frame) if args.prompt_frame.isdigit() else args.prompt_frame
    with tempfile.TemporaryDirectory(prefix="refam_frames_") as scratch:
        frames = open_frames(args.source, scratch)
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
        summary = _write_video_outputs(Path(args.out), frames, results, meta)
    log(f"wrote {len(results)} mask sequence(s) to {args.out}")
    for r in summary["results"]:
        print(json.dumps({k: r[k] for k in ("expression", "prompt_frame", "masks", "warnings")}))
    return 0


VIDEO_DATASETS = ("ref-davis17", "mevis", "ref-youtube-vos")


def _eval_video(args: argparse.Namespace, log: StageLog, preset: dict[str, Any]) -> int:
    from refam.data.captions import load_captions
    from refam.data.video import ANNOTATOR_SETS, MevisDataset, RefDavisDataset, RefYoutubeVosDataset
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
        device, _dtype = _device_and_dtype(args)
        tracker = load_sam2_video(
            args.segmenter, device=device, search_dirs=segmenter_search_dirs(args.comfyui), image_size=args.sam2_image_size
        )
        args.segmenter = None
        pipe = _video_pipeline(args, log)
        prompt_frame: str | int = int(args.prompt_frame) if args.prompt_frame.isdigit() else args.prompt_frame
        # The paper captions the video sets with a language model; given a file, each video's caption
        # conditions its passes, else the empty prompt.
        captions = load_captions(args.captions) if args.captions and not args.no_caption else None
        if captions is None:
            log("no --captions file: conditioning on the empty prompt (the paper captions each video)")
        for name, (folder, dataset) in runs.items():
            counts = run(
                pipe, tracker, dataset, folder, prompt_frame=prompt_frame, candidates=args.candidates,
                points_from=args.points_from, shard=shard, limit=args.limit, progress=log,
                mochi=bool(args.video_model), captions=captions, **preset,
            )
            log(f"rank {shard.rank}, {name}: {counts['written']} new record(s)")
        _barrier(shard)
    if shard.rank == 0 and args.dataset == "ref-youtube-vos":
        print(f"submission: {zip_submission(out)} (scored by the Ref-YouTube-VOS evaluation server)")
    elif shard.rank == 0:
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
        (out / "results.json").write_text(json.dumps(summary, indent=2))
        (out / "results.md").write_text(table + "\n")
        print(table)
    return 0


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
        results_table,
        summarize,
        write_report,
    )

    log = StageLog(args.quiet)
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    if args.dataset in VIDEO_DATASETS:
        return _eval_video(args, log, PRESETS[args.preset])
    dataset = ReferDataset(
        args.data_root, args.dataset, args.split_by, images=args.images, captions=None if args.no_caption else args.captions
    )
    shard = Shard.from_env()
    out = Path(args.out)
    if not args.merge_only:
        if args.captions is None and not args.no_caption:
            log("no --captions file: conditioning on the empty prompt (the paper uses COCO captions)")
        pipe = _load_pipeline(args, log)
        counts = evaluate_refer(
            pipe,
            dataset,
            args.split,
            out,
            caption_mode="empty" if args.no_caption or args.captions is None else "file",
            overlap=args.overlap,
            shard=shard,
            limit=args.limit,
            progress=log,
            visuals=args.visuals,
            **PRESETS[args.preset],
        )
        log(f"rank {shard.rank}: {counts['written']} new record(s), {counts['skipped']} skipped (unreadable images)")
        _barrier(shard)
    if shard.rank == 0:
        summary = summarize(load_records(out))
        table = results_table(summary, args.dataset, args.split)
        (out / "results.json").write_text(json.dumps({"dataset": args.dataset, "split": args.split, "preset": args.preset, **summary}, indent=2))
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
    ev.add_argument("--preset", default="full", help="ablation preset: full, no-am, no-np, no-sb, no-am-np-sb, am-only")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"refam: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
