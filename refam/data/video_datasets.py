"""Referring video datasets in their official layouts: Ref-DAVIS17 and MeViS.

Ref-DAVIS17 (Khoreva et al.) on DAVIS-2017 unsupervised 480p::

    DAVIS_ROOT/JPEGImages/480p/<video>/00000.jpg
    DAVIS_ROOT/Annotations_unsupervised/480p/<video>/00000.png   (palette: object ids)
    DAVIS_ROOT/ImageSets/2017/val.txt
    DAVIS_ROOT/davis_text_annotations/Davis17_annot1.txt, Davis17_annot1_full_video.txt,
                                      Davis17_annot2.txt, Davis17_annot2_full_video.txt
    (each line: <video> <object id> "<expression>")

MeViS::

    MEVIS_ROOT/<split>/JPEGImages/<video>/<frame>.jpg
    MEVIS_ROOT/<split>/meta_expressions.json   {"videos": {video: {"frames": [...], "expressions":
                                                 {id: {"exp", "obj_id": [...], "anno_id": [...]}}}}}
    MEVIS_ROOT/<split>/mask_dict.json           {anno_id: [RLE or null per frame]}
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refam.data import safe_component

__all__ = ["ANNOTATOR_SETS", "MevisDataset", "RefDavisDataset", "RefYoutubeVosDataset", "VideoSample"]

ANNOTATOR_SETS = ("annot1", "annot1_full_video", "annot2", "annot2_full_video")
DAVIS_HELP = (
    "expected DAVIS-2017 (480p): JPEGImages/480p/<video>/, Annotations_unsupervised/480p/<video>/, "
    "ImageSets/2017/<split>.txt and davis_text_annotations/Davis17_<annot>.txt"
)
MEVIS_HELP = "expected MeViS: <split>/JPEGImages/<video>/, <split>/meta_expressions.json, <split>/mask_dict.json"


@dataclass(frozen=True)
class VideoSample:
    """One expression on one video, with the object ids (DAVIS) or annotation ids (MeViS) it names."""

    video: str
    expression_id: str
    expression: str
    targets: tuple[int, ...]
    frames: tuple[str, ...]  # frame file stems in order

    @property
    def key(self) -> str:
        return f"{self.video}:{self.expression_id}"


def _need(path: Path, help_text: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; {help_text}")
    return path


class RefDavisDataset:
    """Ref-DAVIS17: one annotator set of expressions over DAVIS-2017 (unsupervised masks)."""

    def __init__(self, root: str | Path, annotator: str = "annot1", split: str = "val") -> None:
        if annotator not in ANNOTATOR_SETS:
            raise ValueError(f"annotator set must be one of {ANNOTATOR_SETS}, got {annotator!r}")
        self.root = Path(root)
        self.split = split
        videos = _read_text(_need(self.root / "ImageSets" / "2017" / f"{split}.txt", DAVIS_HELP)).split()
        text = _need(self.root / "davis_text_annotations" / f"Davis17_{annotator}.txt", DAVIS_HELP)
        self.samples: list[VideoSample] = []
        counts: dict[tuple[str, int], int] = {}
        for number, line in enumerate(_read_text(text).splitlines(), start=1):
            parts = _davis_fields(line, text, number)
            if len(parts) < 3 or parts[0] not in videos:
                continue
            video = safe_component(parts[0], f"video name (line {number})", text)
            obj = _davis_object(parts[1], text, number)
            n = counts[(video, obj)] = counts.get((video, obj), 0) + 1
            frames = tuple(p.stem for p in sorted(self.frame_dir(video).glob("*.jpg")))
            self.samples.append(
                VideoSample(video, f"{obj}-{n}", " ".join(parts[2:]).lower(), (obj,), frames)
            )

    def frame_dir(self, video: str) -> Path:
        return _need(self.root / "JPEGImages" / "480p" / video, DAVIS_HELP)

    def labels(self, video: str, frames: tuple[str, ...]) -> dict[int, np.ndarray]:
        """The annotated frames' label maps (frame index -> object ids, 0 = background)."""
        from PIL import Image

        folder = self.root / "Annotations_unsupervised" / "480p" / video
        out = {}
        for t, stem in enumerate(frames):
            path = folder / f"{stem}.png"
            if path.is_file():
                out[t] = np.asarray(Image.open(path)).astype(np.int32)
        return out

    def masks(self, sample: VideoSample) -> dict[int, np.ndarray]:
        """Ground truth of the annotated frames (frame index -> the object's pixels in the palette PNG)."""
        return {t: np.isin(labels, sample.targets) for t, labels in self.labels(sample.video, sample.frames).items()}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"cannot read {path} as UTF-8 text ({type(exc).__name__}: {exc}); {DAVIS_HELP}"
        ) from exc


def _davis_fields(line: str, path: Path, number: int) -> list[str]:
    try:
        return shlex.split(line.strip()) if line.strip() else []
    except ValueError as exc:  # an unbalanced quote
        raise ValueError(
            f"line {number} of {path} is not <video> <object id> \"<expression>\" ({exc}); fix its quotes"
        ) from exc


def _davis_object(field: str, path: Path, number: int) -> int:
    try:
        return int(field)
    except ValueError:
        raise ValueError(
            f"line {number} of {path}: object id {field!r} is not a number; "
            'each line is <video> <object id> "<expression>"'
        ) from None


class MevisDataset:
    """MeViS (one split): expressions may name several objects; their masks are unioned."""

    def __init__(self, root: str | Path, split: str = "valid_u") -> None:
        self.root = Path(root) / split
        meta_path = _need(self.root / "meta_expressions.json", MEVIS_HELP)
        self.mask_dict: dict[str, list[Any]] | None = None
        self.samples = _meta_samples(meta_path, MEVIS_HELP, _anno_ids)

    def frame_dir(self, video: str) -> Path:
        return _need(self.root / "JPEGImages" / video, MEVIS_HELP)

    def masks(self, sample: VideoSample) -> dict[int, np.ndarray]:
        """Every frame's ground truth: the union of the expression's objects (empty where absent)."""
        from pycocotools import mask as mask_utils

        if self.mask_dict is None:
            self.mask_dict = _read_json(_need(self.root / "mask_dict.json", MEVIS_HELP), MEVIS_HELP)
        size = _frame_size(self.frame_dir(sample.video))
        tracks = {}
        for anno in sample.targets:
            track = self.mask_dict.get(str(anno))
            if not isinstance(track, list) or len(track) < len(sample.frames):
                raise ValueError(
                    f"{self.root / 'mask_dict.json'} has no mask track of {len(sample.frames)} frames for annotation "
                    f"{anno} (expression {sample.key}); the annotation files do not belong together"
                )
            tracks[anno] = track
        out = {}
        for t in range(len(sample.frames)):
            m = np.zeros(size, dtype=bool)
            for anno in sample.targets:
                rle = tracks[anno][t]
                if rle is not None:
                    m |= mask_utils.decode(rle).astype(bool)
            out[t] = m
        return out


def _frame_size(folder: Path) -> tuple[int, int]:
    from PIL import Image

    first = next(iter(sorted(folder.glob("*.jpg"))), None)
    if first is None:
        raise FileNotFoundError(f"no frames (*.jpg) in {folder}")
    with Image.open(first) as im:
        return im.height, im.width


_META_ENTRY = '"frames": [frame names] and "expressions": {id: {"exp": text, ...}}'


def _read_json(path: Path, help_text: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not readable JSON ({type(exc).__name__}: {exc}); {help_text}") from exc


def _anno_ids(expression: dict[str, Any]) -> tuple[int, ...]:
    ids = expression["anno_id"]
    if not isinstance(ids, list):
        raise TypeError(f"anno_id is {ids!r}, not a list")
    return tuple(int(a) for a in ids)


def _meta_samples(
    path: Path, help_text: str, targets: Callable[[dict[str, Any]], tuple[int, ...]]
) -> list[VideoSample]:
    """Every expression of a ``meta_expressions.json`` (MeViS / Ref-YouTube-VOS), videos sorted by
    name and expressions by number. Names become output paths, so each must be one path component."""
    meta = _read_json(path, help_text)
    videos = meta.get("videos") if isinstance(meta, dict) else None
    if not isinstance(videos, dict):
        raise ValueError(f"{path} has no \"videos\" object; {help_text}")
    samples = []
    for video, entry in sorted(videos.items()):
        safe_component(video, "video name", path)
        try:
            frames, expressions = _parse_video(entry, targets)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(
                f"{path}: video {video!r} has a malformed entry ({detail}); each video needs "
                f"{_META_ENTRY}; {help_text}"
            ) from exc
        for frame in frames:
            safe_component(frame, f"frame name of video {video!r}", path)
        for eid, text, named in expressions:
            safe_component(eid, f"expression id of video {video!r}", path)
            samples.append(VideoSample(video, eid, text, named, frames))
    return samples


def _parse_video(
    entry: Any, targets: Callable[[dict[str, Any]], tuple[int, ...]]
) -> tuple[tuple[str, ...], list[tuple[str, str, tuple[int, ...]]]]:
    """(frames, [(expression id, lower-cased text, targets)]) of one video's meta entry."""
    frames = entry["frames"]
    if not isinstance(frames, list):
        raise TypeError(f"frames is a {type(frames).__name__}, not a list")
    ordered = sorted(entry["expressions"].items(), key=lambda kv: _natural(kv[0]))
    return tuple(frames), [(eid, e["exp"].lower(), targets(e)) for eid, e in ordered]


def _natural(key: str) -> tuple[int, str]:
    digits = re.match(r"\d+", key)
    return (int(digits.group()) if digits else 1 << 30, key)


YTVOS_HELP = (
    "expected Ref-YouTube-VOS: <split>/JPEGImages/<video>/<frame>.jpg and "
    "meta_expressions/<split>/meta_expressions.json"
)


class RefYoutubeVosDataset:
    """Ref-YouTube-VOS (valid / test): expressions and frames; no masks (scored by the official server)."""

    def __init__(self, root: str | Path, split: str = "valid") -> None:
        self.root = Path(root)
        self.split = split
        meta_path = _need(self.root / "meta_expressions" / split / "meta_expressions.json", YTVOS_HELP)
        self.samples = _meta_samples(meta_path, YTVOS_HELP, lambda _e: ())

    def frame_dir(self, video: str) -> Path:
        return _need(self.root / self.split / "JPEGImages" / video, YTVOS_HELP)
