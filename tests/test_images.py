"""Image inputs users actually have (odd files, PIL modes, layouts, tensors, huge sizes) and the
memory-lean conversions and pictures: each must give the pixels the user means, or a clear error."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import refam.images as images_module
import refam.visualize as visualize_module
from refam.heatmap import MAX_BLOCK_INDEX, parse_block_spec
from refam.images import MAX_PIXELS, load_image, to_model_pixels, to_rgb_uint8
from refam.pipeline import as_image_batch
from refam.visualize import (
    colorize,
    draw_points,
    gray_uint8,
    heatmap_overlay,
    heatmap_overlay_image,
    mask_overlay,
    mask_overlay_image,
)


@pytest.fixture
def small_bands(monkeypatch):
    """Bands of a few rows, so small test images cross many band borders."""
    monkeypatch.setattr(images_module, "_BAND_VALUES", 37)
    monkeypatch.setattr(visualize_module, "_BAND_PIXELS", 23)


def _scene(h: int = 20, w: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- files -------------------------------------------------------------------------------------


def test_truncated_png_is_a_clear_error_naming_the_file(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(_scene(200, 200)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        load_image(path)
    assert str(path) in str(err.value)


def test_float_tiff_in_unit_range_keeps_its_brightness(tmp_path):
    values = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "f.tiff")
    rgb = load_image(tmp_path / "f.tiff")
    assert rgb.shape == (2, 2, 3)
    assert rgb[..., 0].tolist() == [[0, 64], [128, 255]]  # not "nearly black"


@pytest.mark.parametrize(("top", "depth"), [(255.0, "8-bit"), (65535.0, "16-bit")])
def test_float_tiff_in_integer_ranges_is_scaled_with_a_warning(tmp_path, top, depth):
    values = np.array([[0.0, top / 2], [top / 4, top]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "f.tiff")
    with pytest.warns(UserWarning, match=depth):
        rgb = load_image(tmp_path / "f.tiff")
    assert rgb[..., 1].tolist() == [[0, 128], [64, 255]]


@pytest.mark.parametrize("bad", [-0.5, np.nan, 1e6])
def test_float_tiff_outside_readable_ranges_is_refused(tmp_path, bad):
    values = np.array([[0.0, 0.5], [bad, 1.0]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "f.tiff")
    with pytest.raises(ValueError, match="cannot be read as brightness"):
        load_image(tmp_path / "f.tiff")


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.array([[0, 128 * 257, 65535]], dtype=np.uint16)).save(tmp_path / "deep.png")
    assert load_image(tmp_path / "deep.png")[0, :, 2].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    stored = np.full((20, 40, 3), 255, np.uint8)
    stored[:10, :10] = (255, 0, 0)  # red block top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = load_image(tmp_path / "phone.jpg")
    assert shown.shape == (40, 20, 3)
    # Clockwise: the stored top-left corner is now top-right.
    assert np.abs(shown[2, 17].astype(int) - (255, 0, 0)).max() < 20
    assert np.abs(shown[2, 2].astype(int) - (255, 255, 255)).max() < 20


def test_size_is_checked_from_the_header_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(_scene(100, 100)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # would fail if decoded
    with pytest.raises(ValueError, match="--max-pixels") as err:
        load_image(path, max_pixels=5000)
    message = str(err.value)
    assert str(path) in message and "100x100" in message and "5000" in message


def test_pil_decompression_bomb_gets_the_same_message(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.fromarray(_scene(100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above 2000 pixels
    with pytest.raises(ValueError, match="--max-pixels") as err:
        load_image(path, max_pixels=1500)
    assert str(path) in str(err.value) and "is 10000 pixels" in str(err.value) and "limit of 1500" in str(err.value)
    # A caller who raised the limit past PIL's own gets the image, and PIL's setting back.
    assert load_image(path, max_pixels=None).shape == (100, 100, 3)
    assert load_image(path, max_pixels=20_000).shape == (100, 100, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_default_pixel_limit_is_stated_and_applies_to_arrays():
    assert MAX_PIXELS == 64_000_000
    big = np.broadcast_to(np.uint8(0), (100, 100, 3))
    with pytest.raises(ValueError, match="max-pixels"):
        to_rgb_uint8(big, max_pixels=5000)
    with pytest.raises(ValueError, match="image 1 is 100x100"):
        as_image_batch([big[:10, :10], big], max_pixels=5000)
    assert to_rgb_uint8(big, max_pixels=None).shape == (100, 100, 3)


# -- PIL images, paths, None -------------------------------------------------------------------


def _palette_image() -> Image.Image:
    im = Image.new("P", (4, 2))
    im.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * (3 * 253))
    im.putdata([0, 1, 2, 1, 1, 1, 0, 0])
    return im


def test_palette_pil_image_uses_its_colours_not_its_indices():
    rgb = to_rgb_uint8(_palette_image())
    assert rgb[0, :3].tolist() == [[255, 0, 0], [0, 0, 255], [0, 255, 0]]
    batch, _ = as_image_batch([_palette_image()])  # what RefAMPipeline.segment(pil_image, ...) does
    assert np.array_equal(batch[0], rgb)


def test_palette_transparency_is_composited_over_white():
    im = _palette_image()
    im.info["transparency"] = 1  # palette entry 1 fully transparent
    rgb = to_rgb_uint8(im)
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[0, 1].tolist() == [255, 255, 255]


def test_paths_are_loaded_and_none_is_a_clear_error(tmp_path):
    scene = _scene()
    Image.fromarray(scene).save(tmp_path / "scene.png")
    for given in (str(tmp_path / "scene.png"), tmp_path / "scene.png"):
        batch, _ = as_image_batch(given)
        assert np.array_equal(batch[0], scene)
    with pytest.raises(ValueError, match=r"^image is None: give an image file path, a PIL image, or an HxWx3 array"):
        as_image_batch(None)
    with pytest.raises(ValueError, match="is a object, not an image"):
        to_rgb_uint8(object())
    with pytest.raises(FileNotFoundError, match="not found"):
        as_image_batch(str(tmp_path / "missing.png"))


# -- layouts -------------------------------------------------------------------------------------


def test_channels_first_arrays_are_transposed():
    scene = _scene()
    assert np.array_equal(to_rgb_uint8(scene.transpose(2, 0, 1)), scene)
    gray = scene[..., 0]
    assert np.array_equal(to_rgb_uint8(gray[None]), to_rgb_uint8(gray))


def test_ambiguous_layout_is_channels_last_with_a_warning():
    strip = _scene(3, 50)  # a 3-row RGB strip: its shape also reads as 3 channels x 50 x 3
    with pytest.warns(UserWarning, match="channels-last"):
        rgb = to_rgb_uint8(strip)
    assert rgb.shape == (3, 50, 3) and np.array_equal(rgb, strip)
    # Tiny images where both readings are tiny: HWC without a fuss; no channel count: refused.
    assert to_rgb_uint8(_scene(4, 4)).shape == (4, 4, 3)
    with pytest.raises(ValueError, match="HxWx3"):
        to_rgb_uint8(np.zeros((4, 4, 2), np.uint8))


# -- tensors -------------------------------------------------------------------------------------


def test_bfloat16_sparse_and_meta_tensors():
    scene = _scene()
    bf16 = torch.from_numpy(scene).to(torch.bfloat16) / 255  # 0..1, values bf16 can round a little
    assert np.abs(to_rgb_uint8(bf16).astype(int) - scene).max() <= 1
    sparse = torch.from_numpy(scene).to_sparse()
    assert np.array_equal(to_rgb_uint8(sparse), scene)
    with pytest.raises(ValueError, match="meta tensor"):
        to_rgb_uint8(torch.empty(20, 30, 3, device="meta"))


def test_comfy_image_batch_converts_per_image():
    scene = _scene()
    comfy = torch.from_numpy(np.stack([scene, scene[::-1]])).float() / 255  # [B, H, W, 3] float
    batch, _ = as_image_batch(comfy)
    assert batch.shape == (2, 20, 30, 3) and np.array_equal(batch[1], scene[::-1])


# -- conversions stay exact in bands -------------------------------------------------------------


def _float_rgb_reference(arr: np.ndarray) -> np.ndarray:
    """The one-shot float32 formula to_rgb_uint8 has always used."""
    f = arr.astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0 if arr.dtype == np.uint8 else 1.0)
    if f.shape[-1] == 4:
        f = f[..., :3] * f[..., 3:4] + (1.0 - f[..., 3:4])
    return np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)


def test_uint8_rgba_integer_compositing_equals_the_float_formula():
    c, a = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    rgba = np.stack([c, c, c, a], axis=-1)  # every (colour, alpha) pair
    assert np.array_equal(to_rgb_uint8(rgba), _float_rgb_reference(rgba))


def test_banded_conversions_equal_the_float_formula(small_bands):
    rng = np.random.default_rng(1)
    rgba16 = rng.integers(0, 65536, (9, 7, 4)).astype(np.uint16)
    rgba_float = rng.random((9, 7, 4))
    for arr in (rgba16, rgba16[..., :3], rgba_float, rgba_float[..., :3].astype(np.float16)):
        assert np.array_equal(to_rgb_uint8(arr), _float_rgb_reference(arr))
    gray = rng.random((9, 7))
    assert np.array_equal(to_rgb_uint8(gray), _float_rgb_reference(np.repeat(gray[..., None], 3, -1)))


def test_uint8_rgb_is_not_copied():
    scene = _scene()
    assert to_rgb_uint8(scene) is scene
    batch, _ = as_image_batch(scene)
    assert np.shares_memory(batch, scene)


def test_model_pixels_keep_antialiased_bicubic_quality():
    # A smooth picture shrunk 5x: PIL's uint8 bicubic is the float antialiased resize, rounded.
    y, x = np.mgrid[0:200, 0:300]
    scene = np.stack([x * 255 / 299, y * 255 / 199, (x + y) % 256], axis=-1).astype(np.uint8)[None]
    got = to_model_pixels(scene, (40, 60))
    t = torch.from_numpy(scene).permute(0, 3, 1, 2).float() / 255
    reference = F.interpolate(t, size=(40, 60), mode="bicubic", antialias=True).clamp(0, 1) * 2 - 1
    assert got.shape == (1, 3, 40, 60) and got.dtype == torch.float32
    assert (got - reference).abs().max() <= 2.5 / 255 * 2  # at most ~2 levels of 255


# -- pictures ------------------------------------------------------------------------------------

_ANCHORS = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]]


def _colorize_reference(values: np.ndarray) -> np.ndarray:
    anchors = np.array(_ANCHORS, dtype=np.float32)
    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0, 1) * 7
    lo = np.floor(v).astype(int)
    t = (v - lo)[..., None]
    return (anchors[lo] * (1 - t) + anchors[np.minimum(lo + 1, 7)] * t).round().astype(np.uint8)


def test_pictures_equal_the_float_formulas(small_bands):
    scene = _scene()
    rng = np.random.default_rng(2)
    heat = rng.random((20, 30)).astype(np.float32)
    heat[0, :3] = (0.0, 1.0, np.nan)
    mask = rng.random((20, 30)) > 0.5
    assert np.array_equal(colorize(heat), _colorize_reference(heat))
    blend = scene.astype(np.float32) * (1 - 0.55) + _colorize_reference(heat).astype(np.float32) * 0.55
    assert np.array_equal(heatmap_overlay(scene, heat), blend.round().astype(np.uint8))
    tinted = scene.astype(np.float32)
    tinted[mask] = tinted[mask] * 0.5 + np.array([30, 144, 255], np.float32) * 0.5
    assert np.array_equal(mask_overlay(scene, mask), tinted.round().astype(np.uint8))
    assert np.array_equal(gray_uint8(heat[1:]), (heat[1:] * 255).round().astype(np.uint8))


def _draw_points_reference(image: np.ndarray, points: list[tuple[float, float]]) -> np.ndarray:
    """Markers drawn on the whole image in PIL, as draw_points always did."""
    from PIL import ImageDraw

    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    r = max(4, round(min(image.shape[:2]) / 40))
    for i, (x, y) in enumerate(points):
        if i == 0:
            star = []
            for k in range(10):
                ang = -np.pi / 2 + k * np.pi / 5
                rad = r * 1.6 if k % 2 == 0 else r * 0.7
                star.append((x + rad * np.cos(ang), y + rad * np.sin(ang)))
            draw.polygon(star, fill=(0, 255, 128), outline=(255, 255, 255))
        else:
            draw.ellipse([x - r, y - r, x + r, y + r], outline=(0, 255, 128), width=max(1, r // 3))
    return np.asarray(pil)


def test_points_drawn_in_patches_equal_points_drawn_on_the_whole_image(small_bands):
    scene = _scene(300, 410)
    points = [(205.37, 150.61), (2.5, 3.2), (409.9, 299.4), (180.0, 140.0), (-3.0, 120.5), (150.49, 0.51)]
    expected = _draw_points_reference(scene, points)
    assert np.array_equal(draw_points(scene, points), expected)
    heat = np.random.default_rng(3).random((300, 410)).astype(np.float32)
    mask = heat > 0.7
    assert np.array_equal(
        np.asarray(heatmap_overlay_image(scene, heat, points)), _draw_points_reference(heatmap_overlay(scene, heat), points)
    )
    assert np.array_equal(
        np.asarray(mask_overlay_image(scene, mask, points)), _draw_points_reference(mask_overlay(scene, mask), points)
    )


# -- the toy flood fill, in bands ----------------------------------------------------------------


def test_flood_fill_in_bands_finds_regions_that_wind_across_bands(monkeypatch):
    from scipy import ndimage

    import refam.toy.segmenter as toy_segmenter

    monkeypatch.setattr(toy_segmenter, "_BAND_ROWS", 3)
    image = np.full((12, 9, 3), 200, np.uint8)
    image[1:11, 1] = image[10, 1:8] = image[1:11, 7] = (220, 30, 30)  # a U, joined only at the bottom
    image[5, 4] = (220, 30, 30)  # same colour, not connected
    seg = toy_segmenter.FloodFillSegmenter()
    seg.set_image(image)
    got = seg.predict([(1.5, 1.5)]).mask
    same = np.all(image == (220, 30, 30), axis=-1)
    labels, _ = ndimage.label(same)
    assert np.array_equal(got, labels == labels[1, 1]) and got[1, 7] and not got[5, 4]
    both = seg.predict([(1.5, 1.5), (4.5, 5.5)], labels=[1, 0]).mask  # a negative click elsewhere
    assert np.array_equal(both, got)


# -- block specs -------------------------------------------------------------------------------


def test_huge_block_ranges_are_refused_before_expanding():
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"'0-999999999'.*above {MAX_BLOCK_INDEX}"):
        parse_block_spec("0-999999999")
    assert time.perf_counter() - start < 0.5
    with pytest.raises(ValueError, match=f"above {MAX_BLOCK_INDEX}"):
        parse_block_spec("3," + "9" * 5000)  # no int() of 5000 digits either
    assert parse_block_spec("0-2, single.4, 1023") == (0, 1, 2, "single.4", 1023)


# -- the memory benchmark ------------------------------------------------------------------------


def test_bench_memory_size_is_checked():
    from refam.bench.memory import parse_size as _parse_size

    assert _parse_size("8000x6000") == (8000, 6000)
    for bad in ("8000", "0x10", "axb", "99999x99999"):
        with pytest.raises(ValueError, match="--size"):
            _parse_size(bad)


@pytest.mark.slow
def test_bench_memory_measures_the_segment_path_in_a_child(capsys):
    from refam.bench import main

    assert main(["memory", "--size", "120x90"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert "target of 1536 MB" in out and result["image"] == "120x90"
    # The child's own peak (torch and the toy model alone are hundreds of MB), stage by stage.
    assert result["peak_rss_mb"] > 200
    assert list(result["peak_mb_after"]) == ["start", "load_image", "load_model", "segment", "write_outputs"]
