"""RefCOCO / RefCOCO+ / RefCOCOg from the original ``refer`` files and COCO train2014 images.

Official layout (as the ``refer`` toolkit expects it)::

    DATA_ROOT/refcoco/refs(unc).p     DATA_ROOT/refcoco/instances.json
    DATA_ROOT/refcoco+/refs(unc).p    DATA_ROOT/refcoco+/instances.json
    DATA_ROOT/refcocog/refs(umd).p    DATA_ROOT/refcocog/instances.json
    DATA_ROOT/images/mscoco/images/train2014/COCO_train2014_000000XXXXXX.jpg
    (optional) captions_train2014.json — COCO captions, the paper's caption conditioning

Sentences are the ``sent`` field lower-cased (HybridGL's protocol). The ground-truth mask is the
annotation's polygons decoded and summed as the ``refer`` toolkit does; see
:func:`refam.metrics.decode_coco_polygons` for the overlap quirk (``overlap="exactly_one"``
reproduces LAVT/CRIS/HybridGL's ``mask == 1``; the default keeps the union).
"""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from refam.data.captions import load_captions

__all__ = ["DATASETS", "ReferDataset", "ReferSample", "default_split_by"]

DATASETS = {"refcoco": ("unc", ("val", "testA", "testB")), "refcoco+": ("unc", ("val", "testA", "testB")), "refcocog": ("umd", ("val", "test"))}
LAYOUT_HELP = (
    "expected the refer layout: DATA_ROOT/<dataset>/refs(<splitBy>).p and instances.json "
    "(refcoco/refcoco+: splitBy unc; refcocog: umd), images in DATA_ROOT/images/mscoco/images/train2014/ "
    "(or give --images DIR)"
)


def default_split_by(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[dataset][0]


@dataclass(frozen=True)
class ReferSample:
    """One referring sentence and the object it names."""

    ref_id: int
    sent_id: int
    ann_id: int
    image_id: int
    split: str
    sentence: str
    file_name: str  # the COCO image file
    height: int
    width: int

    @property
    def key(self) -> str:
        return f"{self.ref_id}:{self.sent_id}"


class ReferDataset:
    """One ``refer`` dataset: sentences per split, COCO masks and image paths."""

    def __init__(
        self,
        data_root: str | Path,
        dataset: str = "refcoco",
        split_by: str | None = None,
        *,
        images: str | Path | None = None,
        captions: str | Path | None = None,
    ) -> None:
        self.root = Path(data_root)
        self.dataset = dataset
        # Other datasets in the refer format (an export, a new split) name their splitBy themselves.
        self.split_by = split_by or default_split_by(dataset)
        folder = self.root / dataset
        refs_path, inst_path = folder / f"refs({self.split_by}).p", folder / "instances.json"
        for path in (refs_path, inst_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found; {LAYOUT_HELP}")
        with open(refs_path, "rb") as f:
            self.refs: list[dict[str, Any]] = pickle.load(f)
        instances = json.loads(inst_path.read_text())
        self.images = {im["id"]: im for im in instances["images"]}
        self.annotations = {a["id"]: a for a in instances["annotations"]}
        self.image_dir = Path(images) if images else self.root / "images" / "mscoco" / "images" / "train2014"
        self.captions: dict[str, str] = load_captions(captions) if captions else {}

    def splits(self) -> list[str]:
        return sorted({r["split"] for r in self.refs})

    def samples(self, split: str) -> list[ReferSample]:
        if split not in self.splits():
            raise ValueError(f"{self.dataset} ({self.split_by}) has splits {self.splits()}, not {split!r}")
        out = []
        for ref in self.refs:
            if ref["split"] != split:
                continue
            image = self.images[ref["image_id"]]
            for sent in ref["sentences"]:
                out.append(
                    ReferSample(
                        ref_id=ref["ref_id"],
                        sent_id=sent["sent_id"],
                        ann_id=ref["ann_id"],
                        image_id=ref["image_id"],
                        split=split,
                        sentence=sent["sent"].lower(),
                        file_name=image["file_name"],
                        height=image["height"],
                        width=image["width"],
                    )
                )
        return out

    def by_image(self, split: str) -> dict[int, list[ReferSample]]:
        """Sentences grouped by image (one DiT pass serves all of an image's sentences), image ids sorted."""
        groups: dict[int, list[ReferSample]] = defaultdict(list)
        for s in self.samples(split):
            groups[s.image_id].append(s)
        return dict(sorted(groups.items()))

    def mask(self, sample: ReferSample, overlap: Literal["union", "exactly_one"] = "union") -> np.ndarray:
        from refam.metrics import decode_coco_polygons

        ann = self.annotations[sample.ann_id]
        return decode_coco_polygons(ann["segmentation"], sample.height, sample.width, overlap=overlap)

    def image_path(self, sample: ReferSample) -> Path:
        return self.image_dir / sample.file_name

    def caption(self, image_id: int) -> str:
        """The image's caption by id, else by file name, else the empty prompt."""
        by_id = self.captions.get(str(image_id))
        return by_id if by_id is not None else self.captions.get(self.images[image_id]["file_name"], "")
