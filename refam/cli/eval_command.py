"""``refam eval DATASET``: RefCOCO/+/g, Ref-DAVIS17, MeViS and Ref-YouTube-VOS runs, and the heatmap
segmentation of Table 11 (ImageNet-Segmentation, PascalVOC single class), resumable and shardable
over processes; rank 0 merges the records into the tables."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .arguments import add_method_options, add_model_options, check_args, parse_prompt_frame
from .distributed import barrier
from .models import load_pipeline, load_tracker, load_video_pipeline, note_ignored
from .progress import StageLog

__all__ = ["VIDEO_DATASETS", "add_eval_parser", "cmd_eval"]


def add_eval_parser(sub: Any) -> None:
    ev = sub.add_parser(
        "eval",
        help="the paper's evaluations: RefCOCO / RefCOCO+ / RefCOCOg, the video sets, ImageNet-Segmentation and "
        "PascalVOC (Table 11); resumable, shardable",
    )
    ev.add_argument(
        "dataset",
        help="refcoco, refcoco+, refcocog (or another folder in the refer format), ref-davis17, mevis, ref-youtube-vos; "
        "imagenet-seg, pascal-voc (Table 11: the heatmap as a segmentation, no SAM)",
    )
    ev.add_argument(
        "--split",
        default=None,
        help="val, testA, testB (refcoco/+); val, test (refcocog); val (DAVIS); valid_u (MeViS); "
        "val (pascal-voc, the default); none for imagenet-seg",
    )
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
    ev.add_argument(
        "--data-root",
        required=True,
        help="folder holding <dataset>/refs(<splitBy>).p, instances.json, images/; for imagenet-seg the folder "
        "holding gtsegs_ijcv.mat, for pascal-voc the folder holding VOCdevkit/",
    )
    ev.add_argument(
        "--class-names",
        default=None,
        help="imagenet-seg: JSON map {synset id or WordNet lemma: class name} (default: DATA_ROOT/class_names.json, "
        "then ConceptAttention's DATA_ROOT/imagenet_class_map.json)",
    )
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
        "or, each with the paper's prompt: the ablations no-am, no-np, no-sb, no-am-np-sb, am-only (Tables 4, 6); "
        "the magnet variants am-stop-words, am-random-stop-words, am-random-vectors (Table 5, with --magnet-seed); "
        "output-space (Table 8); inversion (Table 7)",
    )
    ev.add_argument("--limit", type=int, default=None, help="only the first N images (smoke runs)")
    ev.add_argument("--merge-only", action="store_true", help="merge the ranks' records and print the table")
    ev.add_argument("--visuals", action="store_true", help="save a picture per sentence and write report.html")
    ev.add_argument("--out", required=True, help="records (JSONL per rank), results.json, results.md")
    ev.add_argument("--quiet", action="store_true")
    add_method_options(ev)
    add_model_options(ev)
    ev.set_defaults(func=cmd_eval)


VIDEO_DATASETS = ("ref-davis17", "mevis", "ref-youtube-vos")


def _heatmap_dataset(args: argparse.Namespace) -> Any:
    """The Table 11 set ``args`` name, its files checked (and ImageNet's class names resolved) now."""
    if args.dataset == "imagenet-seg":
        from refam.data.imagenet_seg import ImagenetSegmentation

        if args.split is not None:
            raise ValueError("--split: imagenet-seg is one set of 4,276 images with no splits; leave --split out")
        return ImagenetSegmentation(args.data_root, args.class_names)
    from refam.data.pascal_voc import PascalVocSingleClass

    if args.class_names is not None:
        raise ValueError("--class-names is for imagenet-seg; pascal-voc names its classes by ConceptAttention's fixed list")
    return PascalVocSingleClass(args.data_root, args.split or "val")


def _eval_heatmap(args: argparse.Namespace, log: StageLog, preset: dict[str, Any]) -> int:
    """Table 11: the heatmap cut at its mean, scored by ConceptAttention's protocol (no SAM)."""
    from refam.data.captions import load_captions
    from refam.eval import (
        HEATMAP_DATASETS,
        Shard,
        evaluate_heatmap_segmentation,
        heatmap_results_table,
        heatmap_run_keys,
        load_records,
        summarize_heatmap,
    )

    shard = Shard.from_env()
    out = Path(args.out)
    if not args.merge_only:
        dataset = _heatmap_dataset(args)
        try:
            captions = load_captions(args.captions) if args.captions and not args.no_caption else None
            caption_mode = "empty" if args.no_caption else "file" if captions is not None else "ca"
            _check_resume(out, {**heatmap_run_keys(dataset, caption_mode, captions), **_run_info(args)})
            if caption_mode == "ca":
                log('no --captions file: each image is captioned "a <class name>", as ConceptAttention does')
            if args.segmenter or args.visuals:
                log("note: --segmenter and --visuals are not used: Table 11 scores the heatmap itself, without SAM")
            pipe = load_pipeline(args, log, with_segmenter=False)
            note_ignored(args, pipe, log)
            counts = evaluate_heatmap_segmentation(
                pipe, dataset, out, caption_mode=caption_mode, captions=captions, shard=shard, limit=args.limit,
                progress=log, run_info=_run_info(args), **preset,
            )  # fmt: skip
        finally:
            dataset.close()
        log(f"rank {shard.rank}: {counts['written']} new record(s), {counts['skipped']} skipped (unreadable images)")
        left_out = getattr(dataset, "left_out", None)
        if left_out:
            log(f"{counts['selected']} single-class image(s) selected; left out: {left_out['multi_class']} with several "
                f"classes, {left_out['background_only']} with background only (the paper scores 930 of val)")
        barrier(shard)
    if shard.rank == 0:
        _need_results(out, any(out.glob("records.rank*.jsonl")))
        summary = summarize_heatmap(load_records(out), HEATMAP_DATASETS[args.dataset])
        config = _stored_config(out)
        preset_name = (config or {}).get("preset", args.preset)
        table = heatmap_results_table(summary, args.dataset, label=f"RefAM (this run, preset {preset_name})")
        split = (config or {}).get("split", args.split)
        (out / "results.json").write_text(
            json.dumps({"dataset": args.dataset, "split": split, "preset": preset_name, **summary, "configuration": config},
                       indent=2)
        )
        (out / "results.md").write_text(table + "\n")
        print(table)
    return 0


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
        prompt_frame = parse_prompt_frame(args.prompt_frame)
        # The paper captions the video sets with a language model; given a file, each video's caption
        # conditions its passes, else the empty prompt.
        captions = load_captions(args.captions) if args.captions and not args.no_caption else None
        protocol = {"prompt_frame": prompt_frame, "candidates": args.candidates, "points_from": args.points_from,
                    "mochi": bool(args.video_model)}
        for folder, dataset in runs.values():
            _check_resume(folder, {**video_run_keys(dataset, captions, **protocol), **_run_info(args)})
        tracker = load_tracker(args)
        pipe = load_video_pipeline(args, log)
        note_ignored(args, pipe, log)
        if captions is None:
            log("no --captions file: conditioning on the empty prompt (the paper captions each video)")
        for name, (folder, dataset) in runs.items():
            counts = run(
                pipe, tracker, dataset, folder, candidates=args.candidates, points_from=args.points_from, shard=shard,
                limit=args.limit, progress=log, captions=captions, run_info=_run_info(args), prompt_frame=prompt_frame,
                mochi=bool(args.video_model), **preset,
            )
            log(f"rank {shard.rank}, {name}: {counts['written']} new record(s)")
        barrier(shard)
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


def cmd_eval(args: argparse.Namespace) -> int:
    from refam.data.refer import ReferDataset
    from refam.eval import (
        HEATMAP_DATASETS,
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
    check_args(args)
    if args.dataset in HEATMAP_DATASETS:
        return _eval_heatmap(args, log, PRESETS[args.preset])
    if args.split is None:
        raise ValueError(f"--split is required for {args.dataset}: e.g. --split val")
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
        pipe = load_pipeline(args, log)
        note_ignored(args, pipe, log)
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
        barrier(shard)
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
