"""What the commands write: per expression the heatmap and mask PNGs of an image, the DAVIS-layout
masks and an overlay GIF of a clip, and the ``summary.json`` that lists them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .progress import StageLog

__all__ = ["DAVIS_PALETTE", "fresh_out", "slug", "write_image_outputs", "write_video_outputs"]

DAVIS_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [0] * (3 * 251)


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe stem for an expression."""
    stem = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return stem[:limit].rstrip("-") or "expression"


def fresh_out(path: str, log: StageLog) -> Path:
    """The output folder with the previous run's files (as its summary listed them) removed, so
    nothing stale sits beside the new summary; files the user put there are left alone."""
    from refam.run_folder import clear_previous_run, prepare_out

    out = prepare_out(path)
    removed = clear_previous_run(out)
    if removed:
        log(f"removed {removed} file(s) / folder(s) of the previous run in {out}")
    return out


def write_image_outputs(out: Path, image: Any, results: list[Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Per expression a heatmap overlay, a gray heatmap and, when segmented, the mask and its
    overlay; ``summary.json`` records them beside ``meta``."""
    import numpy as np
    from PIL import Image

    from refam.visualize import gray_uint8, heatmap_overlay_image, mask_overlay_image

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {**meta, "results": []}
    for i, res in enumerate(results):
        stem = f"{i:02d}_{slug(res.expression)}"
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


def write_video_outputs(out: Path, frames: Any, results: list[Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Per expression: DAVIS-layout palette PNGs (0 background, 1 object) and an overlay GIF."""
    import numpy as np
    from PIL import Image

    from refam.visualize import mask_overlay

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {**meta, "results": []}
    for i, res in enumerate(results):
        stem = f"{i:02d}_{slug(res.expression)}"
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
