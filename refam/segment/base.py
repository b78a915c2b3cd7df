"""The point-prompted segmenter interface shared by the SAM and SAM2 wrappers.

Coordinates are continuous pixel coordinates of the image given to :meth:`Segmenter.set_image`:
``x`` is the column, ``y`` the row, pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)`` (the
convention of :mod:`refam.points`), so a point may lie anywhere in ``[0, W] x [0, H]``.
"""

from __future__ import annotations

import abc
import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from refam.dtypes import parse_dtype
from refam.images import MAX_PIXELS, to_rgb_uint8

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "LOW_PRECISION_DTYPES",
    "MaskPrediction",
    "Segmenter",
    "check_box",
    "check_points",
    "resolve_dtype",
    "to_rgb_uint8",
]

LOW_PRECISION_DTYPES = (torch.float16, torch.bfloat16)


@dataclass
class MaskPrediction:
    """Masks for one prompt, all at the full resolution of the image given to ``set_image``.

    ``mask``/``score`` are the candidate the model rates best (``index``, the argmax of
    ``scores``); ``masks``/``scores`` hold every candidate (3 with ``multimask=True``, else 1).
    """

    mask: np.ndarray  # [H, W] bool
    score: float
    masks: np.ndarray  # [K, H, W] bool
    scores: np.ndarray  # [K] float32, the model's predicted IoU
    index: int = 0  # which candidate ``mask`` is


def resolve_dtype(dtype: torch.dtype | str, device: torch.device | str) -> torch.dtype:
    """``dtype`` as a torch dtype, float32 on CPU.

    Half precision is for CUDA only: on CPU the SAM libraries run in float32 (bf16/fp16 there is
    slower than float32 and not what either library is tested with), so a lower precision asked
    for on CPU silently becomes float32.
    """
    dtype = parse_dtype(dtype)
    if dtype not in (torch.float32, *LOW_PRECISION_DTYPES):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    if torch.device(device).type != "cuda":
        return torch.float32
    return dtype


def check_points(
    points_xy: Sequence[tuple[float, float]] | np.ndarray,
    labels: Sequence[int] | np.ndarray | None,
    image_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(points [N, 2] float32, labels [N] int32)``; labels default to all positive.

    A single ``(x, y)`` pair counts as one point.
    """
    try:
        pts = np.asarray(points_xy, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"points_xy must be (x, y) pairs of numbers, got {points_xy!r}") from exc
    if pts.size == 0:
        raise ValueError("at least one point is needed to prompt the segmenter, got none")
    if pts.ndim == 1 and pts.shape[0] == 2:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points_xy must have shape [N, 2] as (x, y) pairs, got shape {pts.shape}")
    height, width = image_hw
    for i, (x, y) in enumerate(pts):
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"point {i} (x={x}, y={y}) is not finite")
        if not (0.0 <= x <= width and 0.0 <= y <= height):
            raise ValueError(
                f"point {i} (x={x:g}, y={y:g}) lies outside the {width}x{height} image; "
                f"points are (x, y) pixel coordinates with 0 <= x <= {width} and 0 <= y <= {height}"
            )
    if labels is None:
        lbl = np.ones(len(pts), dtype=np.int32)
    else:
        lbl = np.asarray(labels).reshape(-1)
        if lbl.shape[0] != pts.shape[0]:
            raise ValueError(f"got {pts.shape[0]} points but {lbl.shape[0]} labels")
        bad = [(i, v) for i, v in enumerate(lbl.tolist()) if v not in (0, 1)]
        if bad:
            raise ValueError(
                f"labels must be 1 (positive) or 0 (negative); label {bad[0][0]} is {bad[0][1]!r}"
            )
        lbl = lbl.astype(np.int32)
    return pts.astype(np.float32), lbl


def check_box(box: Sequence[float] | np.ndarray | None, image_hw: tuple[int, int]) -> np.ndarray | None:
    """A validated box ``[4]`` float32 ``(x0, y0, x1, y1)`` in pixels, or None."""
    if box is None:
        return None
    try:
        arr = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1) in pixels, got {box!r}") from exc
    if arr.shape != (4,) or not np.isfinite(arr).all():
        raise ValueError(f"box must be 4 finite numbers (x0, y0, x1, y1) in pixels, got {box!r}")
    height, width = image_hw
    x0, y0, x1, y1 = arr.tolist()
    if not (0.0 <= x0 < x1 <= width and 0.0 <= y0 < y1 <= height):
        raise ValueError(
            f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is not a box inside the {width}x{height} image; "
            f"give x0 < x1 <= {width} and y0 < y1 <= {height}, all >= 0"
        )
    return arr.astype(np.float32)


class Segmenter(abc.ABC):
    """A promptable segmenter: embed an image once, then turn point prompts into masks.

    Subclasses wrap one library's predictor; they implement ``_encode``, ``_decode``,
    ``_forget_image`` and ``module``.
    """

    family: str = ""

    def __init__(self, name: str, dtype: torch.dtype = torch.float32) -> None:
        self._name = name
        self._dtype = dtype
        self._image_hw: tuple[int, int] | None = None

    # -- what subclasses provide ---------------------------------------------------------------

    @property
    @abc.abstractmethod
    def module(self) -> torch.nn.Module:
        """The wrapped ``nn.Module`` (for memory management; prefer :meth:`to` for moving)."""

    @abc.abstractmethod
    def _encode(self, image: np.ndarray) -> None:
        """Embed an ``HxWx3`` uint8 RGB image."""

    @abc.abstractmethod
    def _decode(
        self, points: np.ndarray, labels: np.ndarray, multimask: bool, box: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(masks [K, H, W], scores [K])`` for validated points (and box) on the embedded image."""

    @abc.abstractmethod
    def _forget_image(self) -> None:
        """Drop the cached image embedding."""

    # -- public API ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """E.g. ``"sam_vit_h"`` or ``"sam2.1_hiera_l"``."""
        return self._name

    @property
    def device(self) -> torch.device:
        weight = next(self.module.parameters(), None)
        return weight.device if weight is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: float32, or bf16/fp16 (autocast) when on CUDA."""
        return self._dtype if self.device.type == "cuda" else torch.float32

    @property
    def image_hw(self) -> tuple[int, int] | None:
        """``(H, W)`` of the embedded image, ``None`` before :meth:`set_image`."""
        return self._image_hw

    def to(self, device: torch.device | str, dtype: torch.dtype | str | None = None) -> Self:
        """Move the model (e.g. offload to CPU between uses); returns ``self``.

        Moving drops the cached image embedding: call :meth:`set_image` again afterwards.
        Without ``dtype`` the weights keep theirs, so a bf16 model offloaded to CPU comes back to
        CUDA as bf16 (predicting while on CPU upcasts it to float32 first, see
        :func:`resolve_dtype`).
        """
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            # "cuda" and the model's "cuda:0" are the same place: no move, keep the embedding.
            device = torch.device("cuda", torch.cuda.current_device())
        target_dtype = None if dtype is None else resolve_dtype(dtype, device)
        if target_dtype is not None:
            self._dtype = target_dtype
        if device != self.device or target_dtype is not None:
            self.reset_image()
            self.module.to(device=device, dtype=target_dtype)
        return self

    def reset_image(self) -> None:
        """Forget the embedded image (frees its memory)."""
        self._forget_image()
        self._image_hw = None

    def set_image(self, image: np.ndarray, *, max_pixels: int | None = MAX_PIXELS) -> None:
        """Embed an image for the following :meth:`predict` calls.

        ``HxWx3`` uint8 RGB; also ``HxW`` gray, ``HxWx1``, ``HxWx4`` RGBA, uint16, bool and
        float in 0..1 (see :func:`to_rgb_uint8`, which also states ``max_pixels``).
        """
        rgb = to_rgb_uint8(image, max_pixels=max_pixels)
        self.reset_image()
        with self._inference():
            self._encode(rgb)
        self._image_hw = (int(rgb.shape[0]), int(rgb.shape[1]))

    def predict(
        self,
        points_xy: Sequence[tuple[float, float]] | np.ndarray,
        labels: Sequence[int] | None = None,
        multimask: bool = True,
        box: Sequence[float] | np.ndarray | None = None,
    ) -> MaskPrediction:
        """Masks for point prompts on the image given to :meth:`set_image`.

        ``points_xy`` are ``(x, y)`` pixel coordinates, ``labels`` 1 = positive, 0 = negative
        (default: all positive). ``box`` (optional) is ``(x0, y0, x1, y1)`` in pixels around the
        object. ``multimask=True`` asks for 3 candidates, which suits one ambiguous click; the
        best-scoring one is ``.mask``.
        """
        if self._image_hw is None:
            raise RuntimeError(f"{self.name}: call set_image(image) before predict(points)")
        points, lbl = check_points(points_xy, labels, self._image_hw)
        checked_box = check_box(box, self._image_hw)
        with self._inference():
            masks, scores = self._decode(points, lbl, multimask, checked_box)
        masks = np.asarray(masks) > 0.5 if masks.dtype != np.bool_ else np.asarray(masks)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if masks.ndim != 3 or masks.shape[1:] != self._image_hw or masks.shape[0] != scores.shape[0]:
            raise RuntimeError(
                f"{self.name} returned masks of shape {masks.shape} and {scores.shape[0]} scores "
                f"for a {self._image_hw} image"
            )
        best = int(np.argmax(scores))
        return MaskPrediction(mask=masks[best], score=float(scores[best]), masks=masks, scores=scores, index=best)

    def segment(
        self,
        image: np.ndarray,
        points_xy: Sequence[tuple[float, float]] | np.ndarray,
        labels: Sequence[int] | None = None,
        multimask: bool = True,
        box: Sequence[float] | np.ndarray | None = None,
    ) -> MaskPrediction:
        """:meth:`set_image` then :meth:`predict`."""
        self.set_image(image)
        return self.predict(points_xy, labels, multimask=multimask, box=box)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device}, dtype={self.dtype})"

    # -- helpers ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _inference(self) -> Iterator[Any]:
        device = self.device
        weight = next(self.module.parameters(), None)
        if device.type != "cuda" and weight is not None and weight.dtype != torch.float32:
            # Half-precision weights offloaded to CPU: see resolve_dtype for why CPU is float32.
            self.module.float()
        with torch.no_grad():
            if device.type == "cuda" and self._dtype in LOW_PRECISION_DTYPES:
                # The predictors feed float32 images/prompts; autocast reconciles them with
                # half-precision weights (SAM2's own demos run under bf16 autocast too).
                with torch.autocast("cuda", dtype=self._dtype):
                    yield
            else:
                yield
