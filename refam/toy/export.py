"""The toy world in the ``refer`` format (images + refs + instances + captions), so ``refam eval``
can be checked end to end against the toy benchmark on exactly the same inputs."""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from refam.toy import scenes

__all__ = ["export_refer"]


def export_refer(
    root: str | Path, examples: Sequence[scenes.ToyExample], *, dataset: str = "toyref", size: tuple[int, int] = (48, 48)
) -> Path:
    """Write ``root/<dataset>/refs(toy).p``, ``instances.json``, ``root/images/...`` PNGs (lossless) and
    ``root/captions.json`` (each scene's own caption, as :func:`refam.toy.evaluate.evaluate` uses).
    Every example is one image with one sentence, all in split ``val``."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    root = Path(root)
    image_dir = root / "images" / "mscoco" / "images" / "train2014"
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / dataset).mkdir(parents=True, exist_ok=True)
    height, width = size
    images, annotations, refs, captions = [], [], [], []
    for i, ex in enumerate(examples):
        image_id, ann_id = i + 1, 1000 + i
        name = f"toy_{image_id:06d}.png"
        Image.fromarray(scenes.render(ex.scene, height, width)).save(image_dir / name)
        target = scenes.masks(ex.scene, height, width)[ex.referral.target]
        rle = mask_utils.encode(np.asfortranarray(target.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        annotations.append({"id": ann_id, "image_id": image_id, "segmentation": rle, "iscrowd": 0, "category_id": 1})
        sentence = {"sent_id": 5000 + i, "sent": ex.referral.text, "raw": ex.referral.text, "tokens": ex.referral.text.split()}
        refs.append(
            {
                "ref_id": 9000 + i,
                "ann_id": ann_id,
                "image_id": image_id,
                "split": "val",
                "sentences": [sentence],
                "sent_ids": [sentence["sent_id"]],
                "file_name": name,
                "category_id": 1,
                "kind": ex.referral.kind,
            }
        )
        captions.append({"image_id": image_id, "caption": scenes.caption(ex.scene, np.random.default_rng(i))})
    with open(root / dataset / "refs(toy).p", "wb") as f:
        pickle.dump(refs, f)
    (root / dataset / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    (root / "captions.json").write_text(json.dumps({"annotations": captions}))
    return root
