"""Scores of a run's records and the markdown tables that set them beside the paper's numbers."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "PAPER",
    "PAPER_VIDEO",
    "davis_results_table",
    "mean_over_sets",
    "results_table",
    "summarize",
    "summarize_video",
    "video_results_table",
]

# Table 2 of the paper (RefAM, FLUX; mIoU / oIoU), for the side-by-side column.
PAPER = {
    ("refcoco", "val"): {"mIoU": 57.24, "oIoU": 46.91},
    ("refcoco", "testA"): {"mIoU": 59.78, "oIoU": 52.30},
    ("refcoco", "testB"): {"mIoU": 53.32, "oIoU": 43.88},
    ("refcoco+", "val"): {"mIoU": 43.59},
    ("refcoco+", "testA"): {"mIoU": 47.28},
    ("refcoco+", "testB"): {"mIoU": 38.77},
    ("refcocog", "val"): {"mIoU": 47.11},
    ("refcocog", "test"): {"mIoU": 48.35},
}

# Table 3 (video; J&F) and the point accuracy on Ref-DAVIS17.
PAPER_VIDEO = {"ref-davis17": {"J&F": 57.6, "PA": 68.9}, "mevis": {"J&F": 30.6}, "ref-youtube-vos": {"J&F": 42.7}}


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, float | int]:
    """oIoU (cumulative I / cumulative U), mIoU (mean per-sentence IoU), PA, in percent."""
    records = list(records)
    scored = [r for r in records if "skipped" not in r]
    skipped = len(records) - len(scored)
    if not scored:
        return {"oIoU": math.nan, "mIoU": math.nan, "PA": math.nan, "n": 0, "skipped": skipped}
    inter = sum(r["inter"] for r in scored)
    union = sum(r["union"] for r in scored)
    return {
        "oIoU": 100.0 * (inter / union if union else 1.0),
        "mIoU": 100.0 * float(np.mean([r["iou"] for r in scored])),
        "PA": 100.0 * float(np.mean([r["pa"] for r in scored])),
        "n": len(scored),
        "skipped": skipped,
    }


def results_table(summary: dict[str, Any], dataset: str, split: str) -> str:
    """The paper's columns with its numbers beside ours (``—`` where the paper reports none)."""
    paper = PAPER.get((dataset, split), {})

    def cell(metric: str) -> str:
        ours = summary[metric]
        ref = paper.get(metric)
        return f"{ours:.2f}" + (f" (paper {ref:.2f})" if ref is not None else "")

    rows = [
        f"| {dataset} {split} | oIoU | mIoU | PA | sentences | skipped |",
        "|---|---|---|---|---|---|",
        f"| RefAM (this run) | {cell('oIoU')} | {cell('mIoU')} | {summary['PA']:.2f} | {summary['n']} | {summary['skipped']} |",
    ]
    return "\n".join(rows)


def summarize_video(records: Iterable[dict[str, Any]]) -> dict[str, float | int]:
    """Dataset J, F, J&F: the mean of the per-expression values (percent); PA over prompts with GT."""
    records = [r for r in records if "skipped" not in r]
    if not records:
        return {"J": math.nan, "F": math.nan, "J&F": math.nan, "PA": math.nan, "n": 0}
    pa = [r["pa"] for r in records if r.get("pa") is not None]
    return {
        "J": 100.0 * float(np.mean([r["J"] for r in records])),
        "F": 100.0 * float(np.mean([r["F"] for r in records])),
        "J&F": 100.0 * float(np.mean([r["J&F"] for r in records])),
        "PA": 100.0 * float(np.mean(pa)) if pa else math.nan,
        "n": len(records),
    }


def video_results_table(summary: dict[str, Any], dataset: str) -> str:
    paper = PAPER_VIDEO.get(dataset, {})

    def cell(metric: str) -> str:
        ref = paper.get(metric)
        return f"{summary[metric]:.2f}" + (f" (paper {ref:.1f})" if ref is not None else "")

    return "\n".join(
        [
            f"| {dataset} | J | F | J&F | PA | expressions |",
            "|---|---|---|---|---|---|",
            f"| RefAM (this run) | {summary['J']:.2f} | {summary['F']:.2f} | {cell('J&F')} | {cell('PA')} | {summary['n']} |",
        ]
    )


def mean_over_sets(per_set: dict[str, dict[str, Any]]) -> dict[str, float]:
    """J, F, J&F and PA averaged over Ref-DAVIS17's annotator sets (the figure papers report)."""
    return {k: float(np.mean([s[k] for s in per_set.values()])) for k in ("J", "F", "J&F", "PA")}


def davis_results_table(per_set: dict[str, dict[str, Any]]) -> str:
    """Ref-DAVIS17 over annotator sets: one row per set and their mean (the figure papers report)."""
    paper = PAPER_VIDEO.get("ref-davis17", {})
    lines = ["| annotator set | J | F | J&F | PA | objects |", "|---|---|---|---|---|---|"]
    for name, summary in per_set.items():
        lines.append(
            f"| {name} | {summary['J']:.2f} | {summary['F']:.2f} | {summary['J&F']:.2f} | {summary['PA']:.2f} | {summary['n']} |"
        )
    if len(per_set) > 1:
        mean = mean_over_sets(per_set)
        ref = f" (paper {paper['J&F']:.1f})" if "J&F" in paper else ""
        lines.append(f"| mean of {len(per_set)} sets | {mean['J']:.2f} | {mean['F']:.2f} | {mean['J&F']:.2f}{ref} | {mean['PA']:.2f} | |")
    return "\n".join(lines)
