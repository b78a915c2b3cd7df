"""PascalVOC 2012 single-class images, chosen as ConceptAttention chooses them for the paper's Table 11.

Layout (the official devkit): ``DATA_ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/<split>.txt``,
``JPEGImages/<id>.jpg`` and ``SegmentationClass/<id>.png`` (a palette PNG of class indices, 255 =
void). CA resizes each mask to 224x224 (nearest), reads 255 as "ignore", and keeps an image when the
labels left at that size are background and one class (``len(present) <= 2``; 930 of the 1,449 val
images); the class's short name (CA's list: "plane", "bike", "table", "pot", "monitor"...) is the
expression, and the ground truth is binary (every class index >= 1 is foreground).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from refam.data import safe_component
from refam.data.imagenet_seg import ClassImage
from refam.metrics.heatmap_segmentation import CA_SIZE, IGNORE, resize_labels

__all__ = ["PASCAL_VOC_LAYOUT", "VOC_CLASS_NAMES", "VOC_IGNORE_LABEL", "PascalVocSingleClass"]

# ConceptAttention's names for the 21 VOC labels (index = label), shorter than VOC's own.
VOC_CLASS_NAMES: tuple[str, ...] = (
    "background", "plane", "bike", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "table",
    "dog", "horse", "motorcycle", "person", "pot", "sheep", "sofa", "train", "monitor",
)  # fmt: skip
VOC_IGNORE_LABEL = 255
PASCAL_VOC_LAYOUT = (
    "expected PascalVOC 2012 as published: DATA_ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/<split>.txt, "
    "DATA_ROOT/VOCdevkit/VOC2012/JPEGImages/<id>.jpg and DATA_ROOT/VOCdevkit/VOC2012/SegmentationClass/<id>.png "
    "(DATA_ROOT is the folder holding VOCdevkit/)"
)


class PascalVocSingleClass:
    """The images of ``split`` showing one class (and background) at 224x224, in list order."""

    dataset = "pascal-voc"
    protocol = "voc"

    def __init__(self, root: str | Path, split: str = "val") -> None:
        self.root = Path(root)
        self.split = split
        self.base = self.root / "VOCdevkit" / "VOC2012"
        list_file = self.base / "ImageSets" / "Segmentation" / f"{safe_component(split, 'split', '--split')}.txt"
        for needed in (list_file, self.base / "JPEGImages", self.base / "SegmentationClass"):
            if not needed.exists():
                raise FileNotFoundError(f"{needed} not found; {PASCAL_VOC_LAYOUT}")
        self.ids = [safe_component(line.strip(), "image id", list_file) for line in list_file.read_text().splitlines() if line.strip()]
        # why images were left out, filled in by samples(): the paper's count is of what remains
        self.left_out: dict[str, int] = {"multi_class": 0, "background_only": 0}

    def labels(self, image_id: str, size: int = CA_SIZE) -> np.ndarray:
        """The class-index map at ``size`` x ``size`` (PIL nearest, as CA), with void as :data:`IGNORE`."""
        from PIL import Image

        path = self.base / "SegmentationClass" / f"{image_id}.png"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; {PASCAL_VOC_LAYOUT}")
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"{path} is a {im.mode} image, not VOC's palette PNG of class indices; {PASCAL_VOC_LAYOUT}")
            indices = np.asarray(im)
        labels = resize_labels(indices, size).astype(np.int16)
        bad = set(np.unique(labels).tolist()) - set(range(len(VOC_CLASS_NAMES))) - {VOC_IGNORE_LABEL}
        if bad:
            raise ValueError(f"{path} holds labels {sorted(bad)}; VOC labels are 0-20 and 255 (void)")
        labels[labels == VOC_IGNORE_LABEL] = IGNORE
        return labels

    def samples(self, limit: int | None = None) -> list[ClassImage]:
        """The single-class images (the first ``limit`` of them): CA keeps an image whose labels at
        224x224 are at most background and one class. An image left with background only has no class
        to name and is left out too (counted in ``left_out``)."""
        self.left_out = {"multi_class": 0, "background_only": 0}
        kept: list[ClassImage] = []
        for image_id in self.ids:
            if limit is not None and len(kept) >= limit:
                break
            present = set(np.unique(self.labels(image_id)).tolist()) - {IGNORE}
            if len(present) > 2:
                self.left_out["multi_class"] += 1
                continue
            classes = sorted(present - {0})
            if not classes:
                self.left_out["background_only"] += 1
                continue
            kept.append(ClassImage(key=image_id, image_id=image_id, name=VOC_CLASS_NAMES[classes[0]]))
        return kept

    def image_path(self, sample: ClassImage) -> Path:
        return self.base / "JPEGImages" / f"{sample.image_id}.jpg"

    def image(self, sample: ClassImage) -> np.ndarray:
        from refam.images import load_image

        return load_image(self.image_path(sample))

    def ground_truth(self, sample: ClassImage, size: int = CA_SIZE) -> np.ndarray:
        """1 for every class pixel, 0 background, :data:`IGNORE` void (CA's ``binary_class``)."""
        labels = self.labels(sample.image_id, size)
        return np.where(labels >= 1, 1, labels).astype(np.int8)

    def close(self) -> None:
        """Nothing is held open (the ImageNet loader holds its .mat file)."""
