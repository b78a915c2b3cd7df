"""Image input: files, PIL images, arrays and tensors in the formats users have -> RGB uint8, and the
model's size.

Big images are converted a band of rows at a time, so no full-size float copy of a photo ever
exists: a 48-megapixel RGB image costs its own 144 MB plus a few MB of scratch.
"""

from __future__ import annotations

import math
import os
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["MAX_PIXELS", "MIN_SIDE", "load_image", "model_size", "to_model_pixels", "to_rgb_uint8"]

# Below this the latent grid of any FLUX-family model is a handful of patches: the image is
# upscaled to the model's size anyway, but a warning says the result will be coarse.
MIN_SIDE = 32

# 64 megapixels is above what cameras write (full-frame bodies 61 MP, phones 48-50 MP) while one
# run's full-size buffers (RGB, float heatmap, mask, overlays) stay well under 2 GB; a bigger
# file is more often a scan or a decompression bomb than a photo meant to be segmented as is.
MAX_PIXELS = 64_000_000

_CHANNELS = (1, 3, 4)
# Values per band of rows converted at once: 16 MB of float32 scratch, whatever the image size.
_BAND_VALUES = 1 << 22
_FLOAT_SLACK = 1e-3  # float images a rounding error outside [0, 1] are still [0, 1] images
_ORIENTATION = 0x0112  # EXIF tag


def _bands(height: int, row_values: int) -> Iterator[slice]:
    rows = max(1, _BAND_VALUES // max(1, row_values))
    for top in range(0, height, rows):
        yield slice(top, min(top + rows, height))


def _too_big(name: str, pixels: int, size: str, max_pixels: int) -> str:
    return (
        f"{name} is {size}{pixels} pixels ({pixels / 1e6:.3g} MP), above the limit of {max_pixels} pixels "
        f"({max_pixels / 1e6:.3g} MP); raise it with --max-pixels N (max_pixels=N in Python) if the image "
        "is meant to be this big, or downscale it"
    )


def _check_pixels(height: int, width: int, max_pixels: int | None, name: str) -> None:
    if height < 1 or width < 1:
        raise ValueError(f"{name} is empty ({width}x{height} pixels): give an image with pixels in it")
    if max_pixels is not None and height * width > max_pixels:
        raise ValueError(_too_big(name, height * width, f"{width}x{height} = ", max_pixels))


def _hwc_axes(shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    """The axis order that makes ``shape`` channels-last (the rule is in :func:`to_rgb_uint8`)."""
    if len(shape) == 2:
        return (0, 1)
    if len(shape) == 3:
        first, middle, last = shape
        if last in _CHANNELS:
            if first in _CHANNELS and middle > 4:
                warnings.warn(
                    f"{name} of shape {shape} read as channels-last ({first} rows x {middle} columns x {last} "
                    f"channels); if it is channels-first, pass it as image.transpose(1, 2, 0)",
                    stacklevel=4,
                )
            return (0, 1, 2)
        if first in _CHANNELS and last > 4:
            return (1, 2, 0)
    raise ValueError(
        f"{name} has shape {shape}, which is not an image: give HxW (gray), HxWx3 (RGB), HxWx4 (RGBA) "
        "or channels-first 3xHxW"
    )


def _is_pil_image(obj: Any) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)


def _tensor_pixels(t: torch.Tensor, name: str, max_pixels: int | None) -> np.ndarray:
    if t.is_meta:
        raise ValueError(
            f"{name} is a meta tensor (a shape with no pixel data): load real pixels into it, e.g. create it on 'cpu'"
        )
    axes = _hwc_axes(tuple(t.shape), name)
    # Checked from the shape, before a sparse tensor is made dense or anything is copied.
    _check_pixels(t.shape[axes[0]], t.shape[axes[1]], max_pixels, name)
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    t = t.cpu()
    if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.float()  # numpy has no bfloat16 / float8
    arr = t.numpy()
    return arr if axes == tuple(range(arr.ndim)) else arr.transpose(axes)


def _pixels_of(image: Any, name: str, max_pixels: int | None) -> np.ndarray:
    """Any accepted input -> an HxW or channels-last array within the pixel limit."""
    if image is None:
        raise ValueError(f"{name} is None: give an image file path, a PIL image, or an HxWx3 array")
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, max_pixels=max_pixels)
    if _is_pil_image(image):
        _check_pixels(image.height, image.width, max_pixels, name)
        return _pil_pixels(image, name)
    if isinstance(image, torch.Tensor):
        return _tensor_pixels(image, name, max_pixels)
    arr = np.asarray(image)
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.number):
        raise ValueError(
            f"{name} is a {type(image).__name__}, not an image: give an image file path, a PIL image, or an HxWx3 array"
        )
    axes = _hwc_axes(arr.shape, name)
    if axes != tuple(range(arr.ndim)):
        arr = arr.transpose(axes)
    _check_pixels(arr.shape[0], arr.shape[1], max_pixels, name)
    return arr


def _over_white_uint8(rgba: np.ndarray) -> np.ndarray:
    """uint8 RGBA composited over white with integers: round(c·a/255 + 255 - a), which never ties
    at .5, so it equals the float formula of the other dtypes exactly."""
    h, w = rgba.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    for rows in _bands(h, w * 4):
        px = rgba[rows].astype(np.uint32)
        alpha = px[..., 3:4]
        out[rows] = (px[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return out


def _check_unit_float(arr: np.ndarray, name: str) -> None:
    # min and max propagate NaN and show inf, so no full-size boolean mask is needed.
    lo, hi = float(arr.min()), float(arr.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinite values; replace them (e.g. np.nan_to_num) first")
    if lo < -_FLOAT_SLACK or hi > 1.0 + _FLOAT_SLACK:
        raise ValueError(
            f"{name} is float but not in [0, 1] (min {lo:.3g}, max {hi:.3g}); divide by 255 (8-bit) or 65535 (16-bit) first"
        )


def _from_wide(arr: np.ndarray, name: str) -> np.ndarray:
    """uint16 or float HxWxC -> RGB uint8, band by band, with the same float32 arithmetic throughout."""
    if arr.dtype != np.uint16:
        _check_unit_float(arr, name)
    h, w, c = arr.shape
    out = np.empty((h, w, 3), np.uint8)
    for rows in _bands(h, w * c):
        f = arr[rows].astype(np.float32)
        if arr.dtype == np.uint16:
            f /= 65535.0
        if c == 4:
            alpha = f[..., 3:4]
            f = f[..., :3] * alpha + (1.0 - alpha)
        out[rows] = np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)  # 1 channel broadcasts to 3
    return out


def _rgb_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype == bool:
        arr = arr.view(np.uint8) * np.uint8(255)
    if arr.dtype == np.uint8:
        if arr.shape[-1] == 3:
            return np.ascontiguousarray(arr)
        if arr.shape[-1] == 1:
            return np.repeat(arr, 3, axis=-1)
        return _over_white_uint8(arr)
    if arr.dtype == np.uint16 or np.issubdtype(arr.dtype, np.floating):
        return _from_wide(arr, name)
    raise ValueError(
        f"{name} has unsupported dtype {arr.dtype}; convert it to uint8, uint16, bool or float in [0, 1]"
    )


def to_rgb_uint8(image: Any, name: str = "image", *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Whatever a user calls an image -> ``HxWx3`` uint8 RGB.

    Accepted: a file path (``str`` / ``Path``, read by :func:`load_image`), a PIL image (palette,
    CMYK... converted by PIL itself), or a numpy array / torch tensor (bfloat16 and sparse included)
    of ``HxW`` (gray) or ``HxWxC`` with C = 1, 3 or 4, in uint8, uint16, bool or float 0..1. RGBA is
    composited over white (transparent cut-outs are usually meant on a light page); 16-bit is
    scaled, not clipped.

    Layout rule: channels last (HWC, as ComfyUI IMAGE and PIL give). Channels first (CHW) is read
    when the first dim is 1, 3 or 4 and the last is above 4, so it cannot be a channel count. When
    both ends could be channels (``[3, H, 3]``, ``[4, H, 4]``, ``[1, W, 3]``...) the array is HWC,
    with a warning when the middle dim is above 4 (the other reading is a different picture).

    ``max_pixels`` (default :data:`MAX_PIXELS`, None: no limit) refuses bigger images. uint8 RGB
    comes back as it is, without a copy: do not modify the result in place.
    """
    return _rgb_uint8(_pixels_of(image, name, max_pixels), name)


def _pil_array(im: Any) -> np.ndarray:
    """``np.asarray(im)`` a band of rows at a time: PIL hands its pixels to numpy as one bytes
    object (joined from chunks), which would hold a big image two more times."""
    first = np.asarray(im.crop((0, 0, im.width, 1)))
    out = np.empty((im.height, *first.shape[1:]), first.dtype)
    for rows in _bands(im.height, first.size):
        out[rows] = np.asarray(im.crop((0, rows.start, im.width, rows.stop)))
    return out


def _unit_range(values: np.ndarray, mode: str, name: str) -> np.ndarray:
    """Mode F / I pixels -> float32 in [0, 1]: [0, 1] kept; what looks like an 8- or 16-bit range
    scaled, with a warning saying so; anything else refused rather than guessed."""
    lo, hi = float(values.min()), float(values.max())
    if math.isfinite(lo) and math.isfinite(hi) and lo >= 0:
        if hi <= 1.0 + _FLOAT_SLACK:
            return values.astype(np.float32, copy=False)
        for top, depth in ((255, "8-bit"), (65535, "16-bit")):
            if hi <= top:
                warnings.warn(
                    f"{name}: mode {mode} pixels from {lo:g} to {hi:g} read as {depth} brightness (divided by {top})",
                    stacklevel=4,
                )
                scaled = values.astype(np.float32)
                scaled /= top
                return scaled
    raise ValueError(
        f"{name} holds values from {lo:g} to {hi:g} (PIL mode {mode}), which cannot be read as brightness; "
        "save it as 8- or 16-bit, or as float in [0, 1]"
    )


def _pil_pixels(im: Any, name: str) -> np.ndarray:
    """A PIL image -> an array :func:`_rgb_uint8` reads; PIL converts the modes it has rules for."""
    if im.mode == "I" and im.format == "PNG":
        return _pil_array(im).clip(0, 65535).astype(np.uint16)  # older Pillow: a 16-bit gray PNG
    if im.mode in ("F", "I"):
        return _unit_range(_pil_array(im), im.mode, name)
    if im.mode.startswith("I;16"):
        return _pil_array(im).astype(np.uint16, copy=False)  # native byte order
    if im.mode not in ("RGB", "RGBA", "L"):
        # Palette indices are no grey levels: PIL maps them (a transparent entry -> RGBA, over white later).
        im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
    return _pil_array(im)


_PIL_LIMIT_LOCK = threading.Lock()


@contextmanager
def _pil_bomb_check(max_pixels: int | None) -> Iterator[None]:
    """Our pixel limit replaces PIL's for one ``Image.open``.

    PIL warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that, a process-wide
    setting; a caller who set ``max_pixels`` past it meant it, so only then is PIL's lifted,
    for the header read alone.
    """
    from PIL import Image

    with _PIL_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        lift = saved is not None and (max_pixels is None or max_pixels > 2 * saved)
        if lift:
            Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _open(path: Path, max_pixels: int | None) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with _pil_bomb_check(max_pixels):
            return Image.open(path)
    except UnidentifiedImageError as exc:
        raise ValueError(f"{path} is not an image PIL can read; give a PNG, JPEG, TIFF, WebP... file") from exc
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ValueError(_too_big(str(path), pixels, "" if found else "more than ", max_pixels or 0)) from exc


def load_image(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8, upright as its EXIF orientation says.

    Gray, palette, RGBA, 16-bit and float (mode F / I) files included. The size is checked
    against ``max_pixels`` (None: no limit) from the header, before anything is decoded.
    """
    from PIL import ImageOps

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with _open(path, max_pixels) as im:
        _check_pixels(im.height, im.width, max_pixels, str(path))
        try:
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # in place: no copy when already upright
            pixels = _pil_pixels(im, str(path))
        except (OSError, SyntaxError, EOFError) as exc:
            raise ValueError(
                f"{path} is truncated or corrupt ({exc}); re-export or re-download the file"
            ) from exc
    return _rgb_uint8(pixels, str(path))


def model_size(original: tuple[int, int], resolution: int | None, multiple: int) -> tuple[int, int]:
    """The (H, W) the model sees: aspect ratio kept, area ~ ``resolution``², both sides a multiple
    of ``multiple`` (VAE factor x patch size). ``resolution=None`` keeps the original area."""
    height, width = original
    scale = 1.0 if resolution is None else resolution / math.sqrt(height * width)

    def side(n: int) -> int:
        return max(multiple, int(round(n * scale / multiple)) * multiple)

    return side(height), side(width)


def _resize_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    # PIL's bicubic widens its kernel when shrinking (antialiased), like torch's antialias=True.
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(resized)


def to_model_pixels(images: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W, 3]`` uint8 -> ``[B, 3, h, w]`` float in [-1, 1] at the model's size (stretched).

    Each image is resized in uint8 first, so only the model-sized copy is ever float.
    """
    if tuple(images.shape[1:3]) != tuple(size):
        images = np.stack([_resize_uint8(im, size) for im in images])
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return t.mul_(2.0).sub_(1.0)
