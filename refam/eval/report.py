"""``OUT/report.html`` of a refer run: its best and worst sentences, each with the picture the run
saved for it (heatmap + point | prediction | ground truth)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from refam.eval.records import load_records
from refam.eval.tables import summarize

__all__ = ["VISUALS", "save_visual", "visual_name", "write_report"]

VISUALS = "visuals"  # the pictures' folder inside OUT


def visual_name(key: str) -> str:
    # ':' separates a key's parts but is not allowed in Windows file names
    return f"{key.replace(':', '_')}.jpg"


def save_visual(path: Path, image: np.ndarray, result: Any, pred: np.ndarray, gt: np.ndarray) -> None:
    """One sentence's strip: heatmap with the point | predicted mask with the point | ground truth."""
    from PIL import Image

    from refam.visualize import draw_points, heatmap_overlay, mask_overlay

    point = [(result.point.x, result.point.y)]
    heat = getattr(result, "heatmap", None)
    first = heatmap_overlay(image, heat) if heat is not None else image
    panels = [
        draw_points(first, point),
        draw_points(mask_overlay(image, pred), point),
        mask_overlay(image, gt, colour=(40, 200, 80)),
    ]
    strip = Image.fromarray(np.concatenate(panels, axis=1))
    strip.thumbnail((960, 320))
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path, quality=85)


def write_report(out: str | Path, k: int = 12, title: str = "RefAM evaluation") -> Path:
    """``OUT/report.html``: the ``k`` best and ``k`` worst sentences by IoU, each with its picture
    (heatmap + point | prediction | ground truth) when ``visuals`` were saved."""
    out = Path(out)
    records = sorted((r for r in load_records(out) if "iou" in r), key=lambda r: r["iou"])
    summary = summarize(records)

    def rows(chosen: list[dict[str, Any]]) -> str:
        cells = []
        for r in chosen:
            pic = Path(VISUALS) / visual_name(r["key"])
            img = f'<img src="{pic}" width="480">' if (out / pic).is_file() else "(no picture)"
            cells.append(
                f"<tr><td>{img}</td><td>{html.escape(r['sentence'])}<br>IoU {r['iou']:.3f} · "
                f"point {'on' if r['pa'] else 'off'} the object</td></tr>"
            )
        return "\n".join(cells)

    body = f"""<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head><body>
<h1>{html.escape(title)}</h1>
<p>{summary['n']} sentences · oIoU {summary['oIoU']:.2f} · mIoU {summary['mIoU']:.2f} · PA {summary['PA']:.2f}.
Pictures: heatmap with the point | predicted mask | ground truth (green).</p>
<h2>Best {k}</h2><table>{rows(records[::-1][:k])}</table>
<h2>Worst {k}</h2><table>{rows(records[:k])}</table>
</body></html>"""
    path = out / "report.html"
    path.write_text(body)
    return path
