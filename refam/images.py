"""Image input: files and arrays in the formats users have -> RGB uint8, and the model's size."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MIN_SIDE", "load_image", "model_size", "to_model_pixels", "to_rgb_uint8"]

# Below this the latent grid of any FLUX-family model is a handful of patches: the image is
# upscaled to the model's size anyway, but a warning says the result will be coarse.
MIN_SIDE = 32


def to_rgb_uint8(image: np.ndarray | torch.Tensor, name: str = "image") -> np.ndarray:
    """``HxW``, ``HxWx1``, ``HxWx3`` or ``HxWx4`` in uint8, uint16, bool or float 0..1 -> ``HxWx3`` uint8.

    RGBA is composited over white (transparent cut-outs are usually meant on a light page);
    16-bit is scaled, not clipped.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{name} must be HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA); got an array of shape {arr.shape}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        f = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        f = arr.astype(np.float32) / 65535.0
    elif arr.dtype == bool:
        f = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        f = arr.astype(np.float32)
        if not np.isfinite(f).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        if f.min() < -1e-3 or f.max() > 1.0 + 1e-3:
            raise ValueError(f"{name} is float but not in [0, 1] (min {f.min():.3g}, max {f.max():.3g})")
    else:
        raise ValueError(
            f"{name} has unsupported dtype {arr.dtype}; expected uint8, uint16, bool or float 0..1"
        )
    if f.shape[-1] == 1:
        f = np.repeat(f, 3, axis=-1)
    elif f.shape[-1] == 4:
        alpha = f[..., 3:4]
        f = f[..., :3] * alpha + (1.0 - alpha)
    return np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (gray, palette, RGBA, 16-bit PNG included)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.uint32)
                # PIL reads 16-bit PNGs as mode "I"; their range is 0..65535.
                return to_rgb_uint8((arr.clip(0, 65535)).astype(np.uint16), name=str(path))
            if im.mode not in ("RGB", "RGBA", "L"):
                im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
            return to_rgb_uint8(np.asarray(im), name=str(path))
    except UnidentifiedImageError as exc:
        raise ValueError(f"{path} is not an image PIL can read") from exc


def model_size(original: tuple[int, int], resolution: int | None, multiple: int) -> tuple[int, int]:
    """The (H, W) the model sees: aspect ratio kept, area ~ ``resolution``², both sides a multiple
    of ``multiple`` (VAE factor x patch size). ``resolution=None`` keeps the original area."""
    height, width = original
    scale = 1.0 if resolution is None else resolution / math.sqrt(height * width)

    def side(n: int) -> int:
        return max(multiple, int(round(n * scale / multiple)) * multiple)

    return side(height), side(width)


def to_model_pixels(images: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W, 3]`` uint8 -> ``[B, 3, h, w]`` float in [-1, 1] at the model's size (stretched)."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    return t.mul_(2.0).sub_(1.0)
