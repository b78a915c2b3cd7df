"""ImageNet-Segmentation (Guillaumin et al. 2014): 4,276 ImageNet images with a foreground mask each,
as ConceptAttention reads them for the paper's Table 11.

Layout: ``DATA_ROOT/gtsegs_ijcv.mat``, a MATLAB v7.3 (HDF5) file read with h5py, whose ``/value/id``,
``/value/img`` and ``/value/gt`` hold one object reference per image: the WordNet synset code
(``n02085620_1234``, UTF-16 characters), the image (stored ``3 x W x H``) and a cell whose first
entry is the mask (stored ``W x H``).

The class an image is scored on is a short name ("dog" for a Malinois): ConceptAttention takes the
synset's first WordNet lemma and maps it through its hand-made ``imagenet_class_map.json``. Offline
neither may be at hand, so names resolve from, in order: the ``--class-names`` file, then
``DATA_ROOT/class_names.json``, then CA's ``DATA_ROOT/imagenet_class_map.json`` — each a JSON map
``{synset id or lemma: name}`` (CA's ``{"categories": {...}}`` form too) — with nltk's WordNet giving
the lemma when a map is keyed by lemma, and the lemma itself when no map names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refam.data import read_json
from refam.install_hints import missing_package
from refam.metrics.heatmap_segmentation import CA_SIZE, resize_labels

__all__ = [
    "CLASS_NAMES_FILES",
    "IMAGENET_SEG_LAYOUT",
    "MAT_FILE",
    "ClassImage",
    "ImagenetSegmentation",
    "load_class_names",
    "wordnet_lemma",
]

MAT_FILE = "gtsegs_ijcv.mat"
# Looked up in DATA_ROOT when no --class-names file is given, first one first.
CLASS_NAMES_FILES = ("class_names.json", "imagenet_class_map.json")
IMAGENET_SEG_LAYOUT = (
    f"expected ImageNet-Segmentation as published: DATA_ROOT/{MAT_FILE} (MATLAB v7.3, /value/id, /value/img, "
    "/value/gt), with class names in --class-names FILE or DATA_ROOT/class_names.json or ConceptAttention's "
    "DATA_ROOT/imagenet_class_map.json (a JSON map {synset id or WordNet lemma: name})"
)
_FIELDS = ("id", "img", "gt")


@dataclass(frozen=True)
class ClassImage:
    """One image of a Table 11 set with the one class it is scored on (shared by both loaders)."""

    key: str  # the record key: unique within the set
    image_id: str  # the id a captions file names it by
    name: str  # the class name: the referring expression


def load_class_names(path: str | Path) -> dict[str, str]:
    """A class-name map ``{synset id or lemma: name}`` from a JSON file (flat, or CA's ``{"categories": ...}``)."""
    path = Path(path)
    data = read_json(path, "class names file", "give a JSON map {synset id or lemma: name}")
    if isinstance(data, dict) and isinstance(data.get("categories"), dict):
        data = data["categories"]
    if not isinstance(data, dict) or not all(isinstance(v, str) and v.strip() for v in data.values()):
        raise ValueError(
            f"class names file {path} is not a map of names; give a JSON map {{synset id or lemma: name}} "
            'such as {"n02085620": "dog"} (or ConceptAttention\'s {"categories": {lemma: name}})'
        )
    return {str(k).strip(): v.strip() for k, v in data.items()}


def wordnet_lemma(synset_id: str) -> str | None:
    """The synset's first lemma with ``_`` as spaces (CA's name before its map), from nltk's WordNet;
    None when nltk or its WordNet data is not installed."""
    try:
        from nltk.corpus import wordnet
    except ImportError:
        return None
    try:
        synset = wordnet.synset_from_pos_and_offset(synset_id[0], int(synset_id[1:]))
    except LookupError:  # nltk without its wordnet corpus
        return None
    except (ValueError, IndexError) as exc:  # nltk's WordNetError is a ValueError
        raise ValueError(f"synset {synset_id!r} is not in WordNet ({exc}); give its name in --class-names") from exc
    return synset.lemmas()[0].name().replace("_", " ")


def _open_mat(path: Path) -> Any:
    try:
        import h5py
    except ImportError as err:
        raise ImportError(missing_package("ImageNet-Segmentation (gtsegs_ijcv.mat)", "h5py", "eval")) from err
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not a MATLAB v7.3 (HDF5) file ({exc}); {IMAGENET_SEG_LAYOUT}") from exc
    missing = [f"/value/{name}" for name in _FIELDS if f"value/{name}" not in handle]
    if missing:
        handle.close()
        raise ValueError(f"{path} has no {', '.join(missing)}; {IMAGENET_SEG_LAYOUT}")
    return handle


class ImagenetSegmentation:
    """The 4,276 images of ``gtsegs_ijcv.mat`` in file order, each with its class name.

    ``class_names``: the ``--class-names`` file (None: look in ``root``). ``lemma_of``: synset id to
    lemma (default nltk's WordNet); tests give their own. Every name is resolved here, so a missing
    one is reported before any model loads."""

    dataset = "imagenet-seg"
    protocol = "imagenet"
    split = None

    def __init__(
        self,
        root: str | Path,
        class_names: str | Path | None = None,
        *,
        lemma_of: Callable[[str], str | None] = wordnet_lemma,
    ) -> None:
        self.root = Path(root)
        self.path = self.root / MAT_FILE
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found; {IMAGENET_SEG_LAYOUT}")
        self.names_from = self._name_files(class_names)
        names: dict[str, str] = {}
        for path in reversed(self.names_from):  # the first file wins a key two of them give
            names.update(load_class_names(path))
        self._file = _open_mat(self.path)
        try:
            value = self._file["value"]
            self.codes = [self._text(value["id"][i, 0]) for i in range(value["id"].shape[0])]
            self.class_names = self._resolve(names, lemma_of)
        except BaseException:
            self.close()
            raise

    def _name_files(self, given: str | Path | None) -> list[Path]:
        if given is not None:
            if not Path(given).is_file():
                raise FileNotFoundError(f"--class-names {given} not found; give a JSON map {{synset id or lemma: name}}")
            return [Path(given), *(p for name in CLASS_NAMES_FILES if (p := self.root / name).is_file())]
        return [p for name in CLASS_NAMES_FILES if (p := self.root / name).is_file()]

    def _text(self, ref: Any) -> str:
        # MATLAB stores a char array as UTF-16 code units
        return "".join(chr(int(c)) for c in np.asarray(self._file[ref]).ravel()).strip()

    def _resolve(self, names: Mapping[str, str], lemma_of: Callable[[str], str | None]) -> list[str]:
        resolved: list[str] = []
        unresolved: list[str] = []
        for code in self.codes:
            synset = code.split("_")[0]
            name = names.get(code) or names.get(synset)
            if name is None:
                lemma = lemma_of(synset) if synset[:1].isalpha() and synset[1:].isdigit() else None
                name = None if lemma is None else names.get(lemma, lemma)
            if name is None:
                unresolved.append(synset)
            resolved.append(name or "")
        if unresolved:
            shown = ", ".join(sorted(set(unresolved))[:5])
            where = ", ".join(str(p) for p in self.names_from) or "no class names file"
            raise ValueError(
                f"no class name for {len(unresolved)} of {len(self.codes)} images of {self.path} (synsets {shown}...; "
                f"read {where}, and nltk's WordNet is not installed to give their lemmas). Put a JSON map "
                f"{{synset id: name}} in {self.root / CLASS_NAMES_FILES[0]} or give --class-names FILE "
                "(ConceptAttention's imagenet_class_map.json, keyed by lemma, also needs: pip install nltk; "
                "python -m nltk.downloader wordnet)"
            )
        return resolved

    def __len__(self) -> int:
        return len(self.codes)

    def samples(self, limit: int | None = None) -> list[ClassImage]:
        """The images in file order (the first ``limit`` of them), keyed by their index in the file."""
        count = len(self.codes) if limit is None else min(limit, len(self.codes))
        return [ClassImage(key=str(i), image_id=str(i), name=self.class_names[i]) for i in range(count)]

    def image(self, sample: ClassImage) -> np.ndarray:
        """The image as ``H x W x 3`` uint8 (CA's ``transpose((2, 1, 0))`` of the stored array)."""
        index = int(sample.key)
        stored = np.asarray(self._file[self._file["value/img"][index, 0]])
        if stored.ndim != 3 or stored.shape[0] != 3 or stored.dtype != np.uint8:
            raise ValueError(
                f"image {index} of {self.path} is {stored.dtype} of shape {stored.shape}, not uint8 3 x W x H; "
                f"{IMAGENET_SEG_LAYOUT}"
            )
        return np.ascontiguousarray(stored.transpose(2, 1, 0))

    def ground_truth(self, sample: ClassImage, size: int = CA_SIZE) -> np.ndarray:
        """The mask at ``size`` x ``size`` (PIL nearest, as CA resizes it): 1 foreground, 0 background."""
        index = int(sample.key)
        cell = self._file[self._file["value/gt"][index, 0]]
        stored = np.asarray(self._file[cell[0, 0]])
        if stored.ndim != 2:
            raise ValueError(f"mask {index} of {self.path} has shape {stored.shape}, not W x H; {IMAGENET_SEG_LAYOUT}")
        mask = (stored.T != 0).astype(np.uint8)
        return (resize_labels(mask, size) != 0).astype(np.int8)

    def close(self) -> None:
        handle = getattr(self, "_file", None)
        if handle is not None:
            handle.close()
            self._file = None

    def __enter__(self) -> ImagenetSegmentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
