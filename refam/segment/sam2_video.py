"""SAM2 video propagation with frames streamed from the CPU and a bounded memory.

``sam2``'s own ``init_state`` decodes the whole clip into one tensor, and its tracker keeps every
frame's memory features until the end, so both grow with clip length. Here frames are produced on
demand from a :class:`FrameSource` (an IMAGE batch, a folder, a video file), and tracker outputs
that SAM2 can no longer read are dropped as the propagation moves on. SAM2 only looks back
``num_maskmem x stride`` frames for memories and ``max_obj_ptrs_in_encoder`` frames for object
pointers; outputs further than that from the current frame and from every prompted frame are never
read again, so dropping them leaves every mask exactly as SAM2 would compute it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from refam.install_hints import missing_package

__all__ = [
    "ArrayFrames",
    "FolderFrames",
    "FrameSource",
    "VideoPrompt",
    "open_frames",
    "propagate",
    "propagate_all",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif"}
_EXIF_ORIENTATION = 0x0112
FrameCallback = Callable[[int, int], None]  # (frames done, frames to do); may raise to cancel


class FrameSource(Protocol):
    """Frames of one clip, all of one size, read one at a time."""

    def __len__(self) -> int: ...

    @property
    def size(self) -> tuple[int, int]: ...  # (H, W)

    def frame(self, index: int) -> np.ndarray: ...  # HxWx3 uint8


class ArrayFrames:
    """Frames already in memory: ``[T, H, W, 3]`` uint8 / float 0..1 (a ComfyUI IMAGE batch) or a list."""

    def __init__(self, frames: Any) -> None:
        from refam.images import to_rgb_uint8

        if isinstance(frames, torch.Tensor):
            frames = frames.detach().cpu()
        self._frames = frames
        self._to_rgb = to_rgb_uint8
        if len(frames) == 0:
            raise ValueError("the clip has no frames")
        sizes = {tuple(f.shape[:2]) for f in frames}
        if len(sizes) != 1:
            raise ValueError(f"all frames of a clip must have one size; got {sorted(sizes)}")
        self._size = sizes.pop()

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def frame(self, index: int) -> np.ndarray:
        return self._to_rgb(self._frames[index], name=f"frame {index}")


class FolderFrames:
    """Image files of a folder in name order (the DAVIS layout: ``00000.jpg``, ``00001.jpg`` ...)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"frame folder not found: {self.folder}")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ValueError(f"no frames ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.folder}")
        # Decoded in full, not just its header: a truncated first frame should fail here, by name.
        self._size = _read_frame(self.paths[0]).shape[:2]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    def frame(self, index: int) -> np.ndarray:
        image = _read_frame(self.paths[index])
        self._check_size(self.paths[index], image.shape[:2])
        return image

    def verify(self) -> None:
        """Every frame readable and of the clip's size, from the file headers alone: a bad frame
        late in a clip is refused before any model pass instead of after minutes of work."""
        for path in self.paths[1:]:
            self._check_size(path, _header_size(path))

    def _check_size(self, path: Path, size: tuple[int, ...]) -> None:
        if tuple(size) != self._size:
            raise ValueError(f"{path} is {size[1]}x{size[0]}, the clip is {self._size[1]}x{self._size[0]}: "
                             "all frames must have one size; resize or remove that frame")


def _read_frame(path: Path) -> np.ndarray:
    from refam.images import load_image

    try:
        return load_image(path)
    except OSError as exc:  # PIL's "image file is truncated", unreadable files
        raise ValueError(
            f"frame {path} cannot be decoded ({exc}); replace or remove the damaged file"
        ) from exc


def _header_size(path: Path) -> tuple[int, int]:
    """(H, W) as :func:`refam.images.load_image` will return it (EXIF rotation included)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            height, width = im.height, im.width
            # EXIF orientations 5-8 turn the picture by 90 degrees: load_image swaps the sides.
            turned = im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise ValueError(f"frame {path} cannot be read ({exc}); replace or remove the damaged file") from exc
    return (width, height) if turned else (height, width)


def open_frames(source: str | Path, scratch: str | Path | None = None) -> FrameSource:
    """A folder of frames, or a video file decoded once to numbered PNGs in ``scratch`` (needs PyAV)."""
    path = Path(source)
    if path.is_dir():
        return FolderFrames(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{path} is neither a folder of frames nor a video ({', '.join(sorted(VIDEO_SUFFIXES))})")
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    if scratch is None:
        raise ValueError("decoding a video needs a scratch folder for its frames")
    out = Path(scratch)
    out.mkdir(parents=True, exist_ok=True)
    if _decode_video(path, out) == 0:
        raise ValueError(f"video {path} decoded to zero frames; check the file plays, or pass a folder of frames")
    return FolderFrames(out)


def _decode_video(path: Path, out: Path) -> int:
    """Write the first video stream of ``path`` as ``out/00000.png``...; the number of frames."""
    try:
        import av
    except ImportError as exc:
        raise ValueError(
            f"cannot decode {path}: {missing_package('reading video files', 'av')}; or pass a folder of frames"
        ) from exc
    from PIL import Image

    count = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"video {path} has no video stream (audio only?); give a file with video")
            for count, frame in enumerate(container.decode(video=0), start=1):
                Image.fromarray(frame.to_ndarray(format="rgb24")).save(out / f"{count - 1:05d}.png")
    except av.FFmpegError as exc:  # every PyAV failure (bad data, truncation, unknown codec) derives from it
        raise ValueError(
            f"video {path} cannot be decoded ({exc}); it may be damaged or in an unsupported format — "
            "convert it (e.g. to H.264 .mp4) or pass a folder of frames"
        ) from exc
    return count


@dataclass(frozen=True)
class VideoPrompt:
    """Points on one frame, in that frame's pixels; label 1 = on the object, 0 = background; an
    optional box ``(x0, y0, x1, y1)`` around the object, in the same pixels."""

    frame: int
    points: tuple[tuple[float, float], ...]
    labels: tuple[int, ...] | None = None
    box: tuple[float, float, float, float] | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        pts = np.asarray(self.points, dtype=np.float32).reshape(-1, 2)
        labels = np.ones(len(pts), dtype=np.int32) if self.labels is None else np.asarray(self.labels, np.int32)
        if len(labels) != len(pts):
            raise ValueError(f"prompt on frame {self.frame}: {len(pts)} points but {len(labels)} labels")
        return pts, labels


class _SamFrames:
    """What SAM2's tracker indexes as ``inference_state["images"]``: frames made on demand."""

    def __init__(self, source: FrameSource, image_size: int) -> None:
        self.source = source
        self.image_size = image_size
        self.mean = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
        self.std = torch.tensor((0.229, 0.224, 0.225))[:, None, None]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        # Resized as sam2's own frame loader does (PIL, to a square), so results match it.
        image = Image.fromarray(self.source.frame(index)).resize((self.image_size, self.image_size))
        t = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (t - self.mean) / self.std


def _new_state(predictor: Any, source: FrameSource, device: torch.device) -> dict[str, Any]:
    """The tracker state ``SAM2VideoPredictor.init_state`` builds, over streamed frames."""
    height, width = source.size
    return {
        "images": _SamFrames(source, predictor.image_size),
        "num_frames": len(source),
        "offload_video_to_cpu": True,
        "offload_state_to_cpu": False,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


def memory_window(predictor: Any) -> int:
    """How far back (in frames) SAM2's tracker can read an earlier frame's output."""
    stride = getattr(predictor, "memory_temporal_stride_for_eval", 1)
    return max(predictor.num_maskmem * stride, predictor.max_obj_ptrs_in_encoder) + 1


def _forget_far_frames(state: dict[str, Any], current: int, prompted: Sequence[int], window: int) -> None:
    for outputs in state["output_dict_per_obj"].values():
        stale = [
            t
            for t in outputs["non_cond_frame_outputs"]
            if abs(t - current) > window and all(abs(t - p) > window for p in prompted)
        ]
        for t in stale:
            del outputs["non_cond_frame_outputs"][t]


def propagate(
    predictor: Any,
    frames: FrameSource,
    prompts: Sequence[VideoPrompt],
    *,
    forward: bool = True,
    backward: bool = True,
    on_frame: FrameCallback | None = None,
    bounded_memory: bool = True,
) -> Iterator[tuple[int, np.ndarray, float]]:
    """Track one object from point prompts through the clip with a ``SAM2VideoPredictor``.

    Yields ``(frame_index, mask HxW bool, object score logit)`` in processing order: the prompted
    frames, then forward from the first prompt, then backward from the last. ``on_frame(done,
    total)`` runs after every frame and may raise to cancel. ``bounded_memory=False`` keeps every
    tracker output, as ``sam2`` does (for comparison).
    """
    if not prompts:
        raise ValueError("give at least one prompt (a point on some frame)")
    n = len(frames)
    for p in prompts:
        if not 0 <= p.frame < n:
            raise ValueError(f"prompt frame {p.frame} is outside the clip of {n} frames")
    if not (forward or backward):
        raise ValueError("propagate forward, backward or both")
    device = next(predictor.parameters()).device
    window = memory_window(predictor)
    prompted = sorted({p.frame for p in prompts})
    todo = _frames_to_visit(n, prompted, forward, backward)
    done = 0
    with torch.inference_mode():
        state = _new_state(predictor, frames, device)
        for p in prompts:
            pts, labels = p.arrays()
            predictor.add_new_points_or_box(
                state, frame_idx=p.frame, obj_id=1, points=pts, labels=labels,
                box=None if p.box is None else np.asarray(p.box, dtype=np.float32),
            )  # fmt: skip
        passes = []
        if forward:
            passes.append((prompted[0], False))
        if backward:
            passes.append((prompted[-1], True))
        seen: set[int] = set()
        for start, reverse in passes:
            for index, _ids, logits in predictor.propagate_in_video(state, start_frame_idx=start, reverse=reverse):
                if bounded_memory:
                    _forget_far_frames(state, index, prompted, window)
                if index in seen:
                    continue
                seen.add(index)
                mask = (logits[0, 0] > 0.0).cpu().numpy()
                score = _object_score(state, index)
                done += 1
                if on_frame is not None:
                    on_frame(done, todo)
                yield index, mask, score
    del state


def _frames_to_visit(n: int, prompted: Sequence[int], forward: bool, backward: bool) -> int:
    first, last = prompted[0], prompted[-1]
    visited = set(prompted)
    if forward:
        visited.update(range(first, n))
    if backward:
        visited.update(range(0, last + 1))
    return len(visited)


def _object_score(state: dict[str, Any], index: int) -> float:
    outputs = state["output_dict_per_obj"].get(0, {})
    out = outputs.get("cond_frame_outputs", {}).get(index) or outputs.get("non_cond_frame_outputs", {}).get(index)
    score = out.get("object_score_logits") if out else None
    return float(score.flatten()[0]) if score is not None else float("nan")


def propagate_all(
    predictor: Any,
    frames: FrameSource,
    prompts: Sequence[VideoPrompt],
    **kwargs: Any,
) -> np.ndarray:
    """Every frame's mask, ``[T, H, W]`` bool in frame order (frames never reached stay empty)."""
    height, width = frames.size
    masks = np.zeros((len(frames), height, width), dtype=bool)
    for index, mask, _score in propagate(predictor, frames, prompts, **kwargs):
        masks[index] = mask
    return masks
