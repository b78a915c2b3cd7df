"""Captions that condition the denoising pass, read from a file.

The paper conditions on COCO's own captions for RefCOCO/+/g and on captions a language model
wrote for the video sets (§4). Either form works:

* COCO's ``captions_*.json`` (``{"annotations": [{"image_id", "caption"}, ...]}``): the first
  caption of each image, as a fixed choice;
* a plain JSON map ``{id: caption}``, the id being an image id, an image file name or a video name.
"""

from __future__ import annotations

from pathlib import Path

from refam.data import read_json

__all__ = ["CAPTIONS_HELP", "load_captions"]

CAPTIONS_HELP = (
    "a captions file is COCO's captions_train2014.json or a JSON map {id: caption} "
    "(id: an image id, an image file name or a video name)"
)


def load_captions(path: str | Path) -> dict[str, str]:
    """Captions by id (as text) from ``path``; a clear error for anything else."""
    path = Path(path)
    data = read_json(path, "captions file", CAPTIONS_HELP)
    captions: dict[str, str] = {}
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        for entry in data["annotations"]:
            if isinstance(entry, dict) and "image_id" in entry and isinstance(entry.get("caption"), str):
                captions.setdefault(str(entry["image_id"]), entry["caption"].strip())
        return captions
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return {str(k): v.strip() for k, v in data.items()}
    raise ValueError(f"captions file {path} holds neither COCO captions nor an {{id: caption}} map; {CAPTIONS_HELP}")
