"""Table 11 runs: RefAM's heatmap as a segmentation, without SAM, on ImageNet-Segmentation and
PascalVOC 2012 single class, scored by ConceptAttention's protocol (:mod:`refam.metrics.heatmap_segmentation`).

Each image is asked for its class name ("dog") with a caption: the ``--captions`` file's, else CA's
``"a {name}"``, else (``--no-caption``) the empty prompt. The heatmap on the patch grid is cut at
its mean and both are nearest-resized to 224x224, CA's rule. One record per image holds the
confusion counts and the AP, so every table number is recomputed from the records
(:func:`summarize_heatmap`), and a rerun resumes where the records stop.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from refam.eval.records import (
    Shard,
    check_limit,
    open_records,
    open_run,
    run_config,
    scored_keys,
    write_record,
)
from refam.metrics.heatmap_segmentation import (
    BinaryCounts,
    HeatmapSegmentationScores,
    ca_imagenet_ap,
    ca_imagenet_counts,
    ca_prediction,
    ca_voc_ap,
    ca_voc_counts,
    confusion_counts,
    plain_counts,
)

__all__ = [
    "CAPTION_MODES",
    "HEATMAP_DATASETS",
    "PAPER_TABLE_11",
    "ca_caption",
    "evaluate_heatmap_segmentation",
    "heatmap_results_table",
    "heatmap_run_keys",
    "score_heatmap",
    "summarize_heatmap",
]

# dataset name -> the protocol its records are scored by
HEATMAP_DATASETS: dict[str, str] = {"imagenet-seg": "imagenet", "pascal-voc": "voc"}
# ca: CA's caption "a {name}"; file: a captions file by image id; empty: the empty prompt
CAPTION_MODES = ("ca", "file", "empty")

# Table 11 of the paper: method, architecture, ImageNet-Segmentation (Acc, mIoU, mAP), PascalVOC
# single class (Acc, mIoU, mAP). The rows above RefAM's are CA's table, copied by the paper.
PAPER_TABLE_11: tuple[tuple[str, str, tuple[float, float, float], tuple[float, float, float]], ...] = (
    ("LRP (Binder et al., 2016)", "CLIP ViT", (51.09, 32.89, 55.68), (48.77, 31.44, 52.89)),
    ("Partial-LRP (Binder et al., 2016)", "CLIP ViT", (76.31, 57.94, 84.67), (71.52, 51.39, 84.86)),
    ("Rollout (Abnar & Zuidema, 2020)", "CLIP ViT", (73.54, 55.42, 84.76), (69.81, 51.26, 85.34)),
    ("ViT Attention (Dosovitskiy et al., 2021)", "CLIP ViT", (67.84, 46.37, 80.24), (68.51, 44.81, 83.63)),
    ("GradCAM (Selvaraju et al., 2017b)", "CLIP ViT", (64.44, 40.82, 71.60), (70.44, 44.90, 76.80)),
    ("TextSpan (Gandelsman et al., 2024)", "CLIP ViT", (75.21, 54.50, 81.61), (75.00, 56.24, 84.79)),
    ("TransInterp (Chefer et al., 2021)", "CLIP ViT", (79.70, 61.95, 86.03), (76.90, 57.08, 86.74)),
    ("DINO Attention (Caron et al., 2021)", "DINO ViT", (81.97, 69.44, 86.12), (80.71, 64.33, 88.90)),
    ("DAAM (Tang et al., 2023b)", "SDXL UNet", (78.47, 64.56, 88.79), (72.76, 55.95, 88.34)),
    ("DAAM (Tang et al., 2023b)", "SD2 UNet", (64.52, 47.62, 78.01), (64.28, 45.01, 83.04)),
    ("Flux Cross Attention (Helbling et al., 2025)", "Flux DiT", (74.92, 59.90, 87.23), (80.37, 54.77, 89.08)),
    ("ConceptAttention (Helbling et al., 2025)", "Flux DiT", (83.07, 71.04, 90.45), (87.85, 76.45, 90.19)),
    ("REFAM (ours)", "Flux DiT", (85.61, 71.37, 87.94), (89.14, 78.57, 90.09)),
    ("REFAM (ours) + Inversion", "Flux DiT", (87.28, 73.33, 90.21), (89.82, 80.07, 90.70)),
)
_TITLES = {"imagenet-seg": "ImageNet-Segmentation", "pascal-voc": "PascalVOC (single class)"}
_CA_COUNTS = {"imagenet": ca_imagenet_counts, "voc": ca_voc_counts}
_CA_AP = {"imagenet": ca_imagenet_ap, "voc": ca_voc_ap}


def ca_caption(name: str) -> str:
    """ConceptAttention's caption for an image of class ``name``."""
    return f"a {name}"


def _fingerprint(value: Any) -> str | None:
    """A short digest: a run over other captions or class names is another run."""
    if not value:
        return None
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def heatmap_run_keys(dataset: Any, caption_mode: str, captions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The part of a Table 11 run's configuration known before any model loads."""
    if caption_mode not in CAPTION_MODES:
        raise ValueError(f"caption_mode {caption_mode!r}: choose one of {', '.join(CAPTION_MODES)}")
    return {
        "dataset": dataset.dataset,
        "split": getattr(dataset, "split", None),
        "protocol": "ConceptAttention heatmap segmentation (Table 11): mean threshold, 224x224, no SAM",
        "caption_mode": caption_mode,
        "captions": _fingerprint(dict(captions or {})) if caption_mode == "file" else None,
        "class_names": _fingerprint(getattr(dataset, "class_names", None)),
    }


def _caption_for(sample: Any, caption_mode: str, captions: Mapping[str, str] | None) -> str:
    if caption_mode == "empty":
        return ""
    if caption_mode == "file" and captions:
        found = captions.get(sample.image_id)
        if found is not None:
            return found
    return ca_caption(sample.name)


def score_heatmap(grid: Any, gt: Any, protocol: str) -> dict[str, Any]:
    """One image's record fields: the confusion counts of CA's mask and the AP of the heatmap.

    The mask is the grid cut at its mean for both sets. CA's VOC run takes an argmax over extra
    background concepts instead, which RefAM has none of: the paper's A.3 says "our method bypasses
    this requirement by leveraging extra stop words ... that serve as background-attention magnets",
    so the magnets already took the background's attention and the mean cut is CA's own rule for a
    map without background concepts (its ImageNet rule).

    The AP reads the heatmap as the pipeline returns it (the kept tokens' softmax mean, min-max
    normalised per image by :mod:`refam.heatmap`): CA min-max normalises for ImageNet, and for VOC
    feeds its raw concept coefficient, an unbounded dot product with no counterpart in a softmax
    map, so no further rescaling is applied."""
    if protocol not in _CA_AP:
        raise ValueError(f"protocol {protocol!r}: choose imagenet or voc")
    mask, scores = ca_prediction(grid)
    counts = confusion_counts(mask, gt)
    return {
        "tp": counts.tp,
        "tn": counts.tn,
        "fp": counts.fp,
        "fn": counts.fn,
        "ignored": counts.ignored,
        "ap": _CA_AP[protocol](scores, gt),
    }


def evaluate_heatmap_segmentation(
    pipeline: Any,
    dataset: Any,
    out: str | Path,
    *,
    caption_mode: str = "ca",
    captions: Mapping[str, str] | None = None,
    shard: Shard | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    run_info: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Score ``pipeline``'s heatmaps on ``dataset`` (an :class:`~refam.data.imagenet_seg.ImagenetSegmentation`
    or :class:`~refam.data.pascal_voc.PascalVocSingleClass`); returns this rank's counts, the
    records are in ``OUT/records.rank<R>.jsonl``. ``overrides``: method options (a preset's);
    the segmenter is never run (``heatmap_mask``), Table 11 scores the heatmap itself."""
    shard = shard or Shard()
    out = Path(out)
    samples = dataset.samples(check_limit(limit))
    mine = shard.take(samples)
    overrides = {**overrides, "heatmap_mask": True}
    written = skipped = 0
    config = run_config(pipeline, overrides, **heatmap_run_keys(dataset, caption_mode, captions), **(run_info or {}))
    with open_run(out, shard, config), open_records(out, shard.rank) as sink:
        done = scored_keys(out)
        todo = [s for s in mine if s.key not in done]
        for n, sample in enumerate(todo):
            if progress:
                progress(f"[rank {shard.rank}] image {n + 1}/{len(todo)} ({sample.image_id}): {sample.name!r}")
            try:
                image = dataset.image(sample)
            except (OSError, ValueError) as exc:
                write_record(sink, {"key": sample.key, "image_id": sample.image_id, "skipped": f"unreadable image: {exc}"})
                skipped += 1
                continue
            caption = _caption_for(sample, caption_mode, captions)
            start = time.perf_counter()
            result = pipeline.segment(image, sample.name, caption, **overrides)[0]
            seconds = time.perf_counter() - start
            fields = score_heatmap(result.heatmap_grid, dataset.ground_truth(sample), dataset.protocol)
            write_record(
                sink,
                {
                    "key": sample.key,
                    "image_id": sample.image_id,
                    "name": sample.name,
                    "caption": caption,
                    **fields,
                    "grid": list(result.heatmap_grid.shape),
                    "seconds": round(seconds, 4),
                },
            )
            written += 1
    return {"rank": shard.rank, "written": written, "skipped": skipped, "images": len(mine), "selected": len(samples)}


def _percent(scores: HeatmapSegmentationScores) -> dict[str, float]:
    iou = scores.iou
    return {
        "Acc": 100.0 * scores.pixel_accuracy,
        "mIoU": 100.0 * scores.mean_iou,
        "IoU_background": 100.0 * iou[0],
        "IoU_foreground": 100.0 * iou[1],
    }


def summarize_heatmap(records: Iterable[dict[str, Any]], protocol: str) -> dict[str, Any]:
    """Table 11's Acc, mIoU and mAP by CA's ``protocol`` (``imagenet`` or ``voc``), in percent,
    and under ``plain`` the usual two-class scores (accuracy over scored pixels, mean of
    background and foreground IoU) of the same masks."""
    if protocol not in _CA_COUNTS:
        raise ValueError(f"protocol {protocol!r}: choose imagenet or voc")
    records = list(records)
    scored = [r for r in records if "skipped" not in r]
    skipped = len(records) - len(scored)
    if not scored:
        nan = math.nan
        return {"Acc": nan, "mIoU": nan, "mAP": nan, "IoU_background": nan, "IoU_foreground": nan,
                "plain": {"Acc": nan, "mIoU": nan, "IoU_background": nan, "IoU_foreground": nan},
                "n": 0, "skipped": skipped}  # fmt: skip
    counts = [BinaryCounts(r["tp"], r["tn"], r["fp"], r["fn"], r.get("ignored", 0)) for r in scored]
    ca = HeatmapSegmentationScores.over([_CA_COUNTS[protocol](c) for c in counts], [r["ap"] for r in scored])
    plain = HeatmapSegmentationScores.over([plain_counts(c) for c in counts])
    return {**_percent(ca), "mAP": 100.0 * ca.mean_ap, "plain": _percent(plain), "n": len(scored), "skipped": skipped}


def _fits_ca_imagenet_iou(acc: float, miou: float) -> bool:
    """Whether an ImageNet row obeys CA's pooled-channel identity mIoU = Acc / (2 - Acc) (percent, as printed)."""
    return abs(100.0 * acc / (200.0 - acc) - miou) < 0.05


def heatmap_results_table(summary: Mapping[str, Any], dataset: str, label: str = "RefAM (this run)") -> str:
    """The paper's Table 11 columns for ``dataset`` with every published row, then this run's."""
    if dataset not in _TITLES:
        raise ValueError(f"dataset {dataset!r}: Table 11 has {', '.join(_TITLES)}")
    column = 0 if dataset == "imagenet-seg" else 1
    marked = dataset == "imagenet-seg"
    lines = [f"| {_TITLES[dataset]} (Table 11) | Architecture | Acc | mIoU | mAP |", "|---|---|---|---|---|"]
    for method, architecture, *sets in PAPER_TABLE_11:
        acc, miou, ap = sets[column]
        mark = "" if not marked or _fits_ca_imagenet_iou(acc, miou) else " †"
        lines.append(f"| {method} (paper){mark} | {architecture} | {acc:.2f} | {miou:.2f} | {ap:.2f} |")
    plain = summary["plain"]
    lines += [
        f"| **{label}** | | **{summary['Acc']:.2f}** | **{summary['mIoU']:.2f}** | **{summary['mAP']:.2f}** |",
        f"| {label}, plain two-class scores | | {plain['Acc']:.2f} | {plain['mIoU']:.2f} | |",
        "",
        f"{summary['n']} images scored, {summary['skipped']} skipped (unreadable). Acc, mIoU, mAP as ConceptAttention "
        "computes them (dataset-level pixel accuracy and per-class IoU, mean of per-image AP); the plain row is the "
        "accuracy over scored pixels and the mean of background and foreground IoU.",
    ]
    if marked:
        lines.append(
            "CA's ImageNet call pools the inverted channel into both IoU classes, so its mIoU is Acc/(2-Acc) "
            "(our bold row obeys it). Rows marked † do not: the CLIP-ViT rows come from Chefer et al.'s code, and "
            "how the paper's RefAM rows were computed is not stated (Acc 85.61 would give mIoU 74.84, not 71.37), so "
            "neither of our rows is known to be computed as theirs."
        )
    return "\n".join(lines)
