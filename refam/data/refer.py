"""RefCOCO / RefCOCO+ / RefCOCOg from the original ``refer`` files and COCO train2014 images.

Official layout (as the ``refer`` toolkit expects it)::

    DATA_ROOT/refcoco/refs(unc).p     DATA_ROOT/refcoco/instances.json
    DATA_ROOT/refcoco+/refs(unc).p    DATA_ROOT/refcoco+/instances.json
    DATA_ROOT/refcocog/refs(umd).p    DATA_ROOT/refcocog/instances.json
    DATA_ROOT/images/mscoco/images/train2014/COCO_train2014_000000XXXXXX.jpg
    (optional) captions_train2014.json — COCO captions, the paper's caption conditioning

Sentences are the ``sent`` field lower-cased (HybridGL's protocol). The ground-truth mask is the
annotation's polygons decoded and summed as the ``refer`` toolkit does; see
:func:`refam.data.coco_masks.decode_coco_polygons` for the overlap quirk (``overlap="exactly_one"``
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

__all__ = ["DATASETS", "ReferDataset", "ReferSample", "default_split_by", "load_instances", "load_refs"]

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
        self.refs: list[dict[str, Any]] = load_refs(refs_path)
        self.images, self.annotations = load_instances(inst_path)
        self.instances_path = inst_path
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
            image = self._image(ref["image_id"])
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
        from refam.data.coco_masks import decode_coco_polygons

        ann = self.annotations.get(sample.ann_id)
        if ann is None:
            raise ValueError(
                f"annotation {sample.ann_id} (ref {sample.ref_id}) is not in {self.instances_path}; "
                "the refs file and instances.json must come from the same dataset"
            )
        return decode_coco_polygons(ann["segmentation"], sample.height, sample.width, overlap=overlap)

    def _image(self, image_id: int) -> dict[str, Any]:
        image = self.images.get(image_id)
        if image is None:
            raise ValueError(
                f"image {image_id} is not in {self.instances_path}; "
                "the refs file and instances.json must come from the same dataset"
            )
        return image

    def image_path(self, sample: ReferSample) -> Path:
        return self.image_dir / sample.file_name

    def caption(self, image_id: int) -> str:
        """The image's caption by id, else by file name, else the empty prompt."""
        by_id = self.captions.get(str(image_id))
        return by_id if by_id is not None else self.captions.get(self._image(image_id)["file_name"], "")


_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")
_SENTENCE_KEYS = ("sent_id", "sent")
_IMAGE_KEYS = ("id", "file_name", "height", "width")
_ANNOTATION_KEYS = ("id", "segmentation")
_REFS_HELP = "use the refs file shipped with the dataset (the refer toolkit's refs(<splitBy>).p)"


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what pickle encodes without globals: lists, dicts, tuples, strings, numbers.

    Every class or function a pickle names goes through ``find_class``; refusing them all means a
    data file cannot make us call ``os.system`` or any other code through ``__reduce__``.
    """

    def find_class(self, module: str, name: str) -> Any:
        raise _RefusedGlobal(module, name)


def load_refs(path: str | Path) -> list[dict[str, Any]]:
    """A ``refer`` refs pickle, read without running code, checked to be a list of ref records."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            refs = _PlainUnpickler(f).load()
    except _RefusedGlobal as exc:
        raise ValueError(
            f"refs file {path} asks to load {exc.qualified}; refer files hold only plain lists, dicts, "
            "strings and numbers — refusing to run code from a data file"
        ) from None
    except OSError as exc:
        raise ValueError(
            f"cannot read refs file {path} ({exc.strerror or exc}); check the file's permissions"
        ) from exc
    except Exception as exc:  # a damaged pickle fails in many ways (EOFError, UnpicklingError, KeyError...)
        raise ValueError(
            f"refs file {path} is not a readable pickle ({type(exc).__name__}: {exc}); "
            f"it may be truncated or corrupt: {_REFS_HELP}"
        ) from exc
    _check_refs(refs, path)
    return refs


def _check_refs(refs: object, path: Path) -> None:
    if not isinstance(refs, list):
        raise ValueError(f"refs file {path} holds a {type(refs).__name__} where a list of refs belongs; {_REFS_HELP}")
    for i, ref in enumerate(refs):
        problem = _ref_problem(ref)
        if problem:
            raise ValueError(f"refs file {path}: record {i} {problem}; {_REFS_HELP}")


def _ref_problem(ref: object) -> str | None:
    if not isinstance(ref, dict):
        return f"is not a dict (it is of type {type(ref).__name__})"
    missing = [k for k in _REF_KEYS if k not in ref]
    if missing:
        return f"lacks {', '.join(repr(k) for k in missing)}"
    if not isinstance(ref["split"], str):
        return f"has split {ref['split']!r}, not a string"
    # Ids name records and output files (OUT/visuals/<ref>_<sent>.jpg): numbers only, never paths.
    for key in ("ref_id", "ann_id", "image_id"):
        if not _is_id(ref[key]):
            return f"has {key} {ref[key]!r:.80}, not an integer"
    if not isinstance(ref["sentences"], list):
        return f"has sentences of type {type(ref['sentences']).__name__}, not a list"
    for sent in ref["sentences"]:
        if not isinstance(sent, dict) or any(k not in sent for k in _SENTENCE_KEYS):
            return f"has a sentence without {' / '.join(_SENTENCE_KEYS)}: {sent!r:.80}"
        if not isinstance(sent["sent"], str):
            return f"has a sentence text {sent['sent']!r:.80}, not a string"
        if not _is_id(sent["sent_id"]):
            return f"has sent_id {sent['sent_id']!r:.80}, not an integer"
    return None


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_instances(path: str | Path) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """``instances.json`` as (images by id, annotations by id), each record checked for the keys used."""
    path = Path(path)
    try:
        instances = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path} is not readable COCO instances JSON ({type(exc).__name__}: {exc}); "
            "use the instances.json shipped with the refer dataset"
        ) from exc
    if not isinstance(instances, dict):
        raise ValueError(f"{path} holds a JSON {type(instances).__name__}, not COCO instances (an object)")
    return (
        _records_by_id(instances, "images", _IMAGE_KEYS, path),
        _records_by_id(instances, "annotations", _ANNOTATION_KEYS, path),
    )


def _records_by_id(
    instances: dict[str, Any], field: str, keys: tuple[str, ...], path: Path
) -> dict[int, dict[str, Any]]:
    records = instances.get(field)
    if not isinstance(records, list):
        raise ValueError(f"{path} has no {field!r} list; expected COCO instances with 'images' and 'annotations'")
    for i, record in enumerate(records):
        missing = [k for k in keys if not isinstance(record, dict) or k not in record]
        if missing:
            raise ValueError(
                f"{path}: {field}[{i}] lacks {', '.join(repr(k) for k in missing)}; "
                "use the instances.json shipped with the refer dataset"
            )
    return {r["id"]: r for r in records}
