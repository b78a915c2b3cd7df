"""refam.segment: SAM / SAM2 wrappers, checkpoint loading and model detection (CPU, random weights)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from refam.segment import (
    MaskPrediction,
    Sam2Segmenter,
    SamSegmenter,
    build_sam2_module,
    build_sam_module,
    find_checkpoint,
    identify_model,
    load_segmenter,
    load_state_dict_file,
    parse_filename,
    parse_variant,
    shapes_of,
    strip_prefixes,
    to_rgb_uint8,
)

pytest.importorskip("segment_anything")
pytest.importorskip("sam2")

# Model input sizes of the random models, to keep CPU encodes well under a second: SAM's 224 is
# one 14x14 attention window (256 would pad to four), SAM2 needs a multiple of 32.
SAM_SMALL = 224
SMALL = 256


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # On shared 2-core runners a second OpenMP thread waiting for a busy core makes every encode
    # several times slower (measured 0.5 s -> 2.5 s); one thread is steady.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cats(two_cats_path) -> np.ndarray:
    return np.asarray(Image.open(two_cats_path).convert("RGB"))


@pytest.fixture(scope="module")
def sam_model():
    torch.manual_seed(0)
    return build_sam_module("vit_b", image_size=SAM_SMALL)


@pytest.fixture(scope="module")
def sam2_model():
    torch.manual_seed(0)
    return build_sam2_module("sam2.1_hiera_t", image_size=SMALL)


@pytest.fixture(scope="module")
def sam2_v20_model():
    torch.manual_seed(1)
    return build_sam2_module("sam2_hiera_t", image_size=SMALL)


@pytest.fixture(scope="module")
def sam_seg(sam_model) -> SamSegmenter:
    return SamSegmenter.from_model(sam_model)


@pytest.fixture(scope="module")
def sam2_seg(sam2_model) -> Sam2Segmenter:
    return Sam2Segmenter.from_model(sam2_model)


def _check_prediction(pred: MaskPrediction, hw: tuple[int, int], k: int) -> None:
    assert pred.mask.dtype == np.bool_ and pred.mask.shape == hw
    assert pred.masks.dtype == np.bool_ and pred.masks.shape == (k, *hw)
    assert pred.scores.shape == (k,)
    best = int(np.argmax(pred.scores))
    assert pred.score == pytest.approx(float(pred.scores[best]))
    assert np.array_equal(pred.mask, pred.masks[best])


# -- import hygiene ------------------------------------------------------------------------------


def test_lazy_imports_and_a_foreign_global_hydra(tmp_path):
    """``import refam.segment`` loads no SAM library. And inside ComfyUI another package may own
    Hydra's global instance, which breaks ``sam2.build_sam.build_sam2``; ``build_sam2_module``
    does not use it. One interpreter for both: its start-up is most of the cost."""
    code = (
        "import sys, refam.segment\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('segment_anything', 'sam2', 'hydra', 'omegaconf')]\n"
        "assert not bad, bad\n"
        "from hydra import initialize_config_dir\n"
        f"initialize_config_dir(config_dir={str(tmp_path)!r}, version_base='1.2')\n"
        "model = refam.segment.build_sam2_module('sam2.1_hiera_t', image_size=256)\n"
        "assert refam.segment.Sam2Segmenter.from_model(model).name == 'sam2.1_hiera_t'\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cwd = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, cwd=cwd, env=env)


# -- predictions on the COCO image ---------------------------------------------------------------


@pytest.mark.parametrize("which", ["sam_seg", "sam2_seg"])
def test_points_give_full_resolution_masks(request, cats, which):
    seg = request.getfixturevalue(which)
    pred = seg.segment(cats, [(180.0, 220.0)])
    _check_prediction(pred, (480, 640), 3)
    assert seg.image_hw == (480, 640)
    assert seg.device == torch.device("cpu") and seg.dtype == torch.float32

    both = seg.predict(np.array([[180.0, 220.0], [470.0, 100.0]]), labels=[1, 0])
    _check_prediction(both, (480, 640), 3)
    single = seg.predict([(180.0, 220.0), (470.0, 100.0)], labels=np.array([1, 0]), multimask=False)
    _check_prediction(single, (480, 640), 1)
    # One (x, y) pair is one point; the image's far edges are inside it.
    _check_prediction(seg.predict((640.0, 480.0)), (480, 640), 3)


def test_box_and_negative_points_reach_sam_and_sam2(cats, sam_seg, sam2_seg, monkeypatch):
    """RefAM's box and negative points arrive at each library's predictor in its own convention
    (SAM: resized to the model input with apply_boxes_torch; SAM2: pixels, normalised inside)."""
    box = (100.0, 150.0, 300.0, 400.0)
    seen = {}
    for seg, method in ((sam_seg, "predict_torch"), (sam2_seg, "predict")):
        if seg.image_hw != (480, 640):
            seg.set_image(cats)
        predictor = seg._predictor
        original = getattr(predictor, method)

        def spy(*args, _original=original, _family=seg.family, **kwargs):
            seen.setdefault(_family, kwargs)  # the first call: the one with the box
            return _original(*args, **kwargs)

        monkeypatch.setattr(predictor, method, spy)
        pred = seg.predict([(180.0, 220.0), (470.0, 100.0)], labels=[1, 0], box=box)
        _check_prediction(pred, (480, 640), 3)
        assert pred.index == int(np.argmax(pred.scores))
        plain = seg.predict([(180.0, 220.0), (470.0, 100.0)], labels=[1, 0])
        assert not np.array_equal(pred.masks, plain.masks)  # the box changed the answer
    scale = SAM_SMALL / 640  # SAM resizes the long side to its input size
    assert seen["sam"]["boxes"].cpu().numpy() == pytest.approx(np.array([box]) * scale)
    assert np.asarray(seen["sam2"]["box"]) == pytest.approx(np.array(box))
    assert np.asarray(seen["sam2"]["point_labels"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="not a box inside the 640x480 image"):
        sam2_seg.predict([(180.0, 220.0)], box=(0, 0, 700, 10))


def test_names(sam_seg, sam2_seg):
    assert sam_seg.name == "sam_vit_b" and sam_seg.family == "sam" and sam_seg.image_size == SAM_SMALL
    assert sam2_seg.name == "sam2.1_hiera_t" and sam2_seg.family == "sam2" and sam2_seg.image_size == SMALL


def test_image_formats_convert_to_the_same_rgb(sam2_seg, cats):
    reference = sam2_seg.segment(cats, [(180.0, 220.0)])
    alpha = np.full((*cats.shape[:2], 1), 255, np.uint8)
    rgba16 = np.concatenate([cats, alpha], axis=-1).astype(np.uint16) * 257
    assert np.array_equal(sam2_seg.segment(rgba16, [(180.0, 220.0)]).masks, reference.masks)
    for image in (cats.astype(np.float32) / 255.0, cats.astype(np.float64) / 255.0):
        assert np.array_equal(to_rgb_uint8(image), cats)
    gray = cats.mean(axis=-1).astype(np.uint8)
    _check_prediction(sam2_seg.segment(gray, [(180.0, 220.0)]), (480, 640), 3)
    assert np.array_equal(to_rgb_uint8(gray[..., None]), to_rgb_uint8(gray))


def test_sam_accepts_gray(sam_seg, cats):
    _check_prediction(sam_seg.segment(cats[:100, :50, 0], [(10.0, 10.0)]), (100, 50), 3)


@pytest.mark.parametrize(
    "image, words",
    [
        (np.zeros((4, 5, 6, 3), np.uint8), "shape (4, 5, 6, 3)"),
        (np.zeros((8, 8, 2), np.uint8), "shape (8, 8, 2)"),
        (np.full((8, 8, 3), 2.0, np.float32), "[0, 1]"),
        (np.zeros((8, 8, 3), np.complex64), "complex64"),
    ],
)
def test_bad_images_raise(sam2_seg, image, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        sam2_seg.set_image(image)


@pytest.mark.parametrize(
    "points, labels, words",
    [
        ([(10.0, 10.0), (float("nan"), 3.0)], None, "point 1 .*not finite"),
        ([(10.0, 10.0), (5.0, float("inf"))], None, "point 1 .*not finite"),
        ([(641.0, 10.0)], None, r"point 0 \(x=641, y=10\) lies outside the 640x480 image"),
        ([(10.0, -0.5)], None, "point 0 .*outside"),
        ([], None, "at least one point"),
        ([(1.0, 2.0, 3.0)], None, r"shape \[N, 2\]"),
        ([(1.0, 2.0), (3.0, 4.0)], [1], "2 points but 1 labels"),
        ([(1.0, 2.0)], [2], "label 0 is 2"),
        ("somewhere", None, "points_xy"),
    ],
)
def test_bad_points_raise(sam2_seg, cats, points, labels, words):
    if sam2_seg.image_hw != (480, 640):
        sam2_seg.set_image(cats)
    with pytest.raises(ValueError, match=words):
        sam2_seg.predict(points, labels)


def test_predict_before_set_image_raises(sam2_model):
    seg = Sam2Segmenter.from_model(sam2_model)
    with pytest.raises(RuntimeError, match="set_image"):
        seg.predict([(1.0, 1.0)])


def test_offloaded_half_precision_weights_run_in_float32(sam2_v20_model, cats):
    seg = Sam2Segmenter.from_model(sam2_v20_model)
    # A bf16 model offloaded to CPU is upcast before predicting there, not run in bf16.
    seg.module.to(torch.bfloat16)
    _check_prediction(seg.segment(cats, [(100.0, 100.0)]), (480, 640), 3)
    assert next(seg.module.parameters()).dtype == torch.float32
    assert seg.to("cpu", dtype="bf16").dtype == torch.float32
    assert seg.image_hw is None  # to() with a dtype drops the embedding
    seg.set_image(cats[:10, :10])
    seg.reset_image()
    assert seg.image_hw is None


def test_official_sam2_builder_works_twice_and_is_wrapped(cats):
    """sam2's own hydra-based builder, called twice in one process, gives wrappable models."""
    from sam2.build_sam import build_sam2

    for config in ("configs/sam2.1/sam2.1_hiera_t.yaml", "configs/sam2/sam2_hiera_t.yaml"):
        model = build_sam2(
            config, ckpt_path=None, device="cpu", hydra_overrides_extra=[f"++model.image_size={SMALL}"]
        )
        seg = Sam2Segmenter.from_model(model)
        assert seg.name == config.rsplit("/", 1)[-1].removesuffix(".yaml")
    _check_prediction(seg.segment(cats, [(300.0, 200.0)]), (480, 640), 3)


@pytest.mark.slow  # a ViT-B encode at 1024 takes 15-40 s on 2 CPU cores
def test_sam_registry_model_at_1024(cats, tmp_path):
    """The released architecture (1024 input) as ``sam_model_registry`` builds it, wrapped and
    as a checkpoint."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    model = sam_model_registry["vit_b"](checkpoint=None)
    seg = SamSegmenter.from_model(model)
    assert seg.name == "sam_vit_b" and seg.image_size == 1024
    _check_prediction(seg.segment(cats, [(180.0, 220.0)]), (480, 640), 3)

    torch.save(model.state_dict(), tmp_path / "sam_vit_b_01ec64.pth")
    loaded = load_segmenter("sam_vit_b_01ec64.pth", search_dirs=[tmp_path])
    assert loaded.name == "sam_vit_b" and loaded.image_size == 1024


# -- checkpoints ---------------------------------------------------------------------------------


def test_missing_checkpoint_lists_searched_paths(tmp_path):
    dirs = [tmp_path / "models" / "sams", tmp_path / "models" / "sam2"]
    with pytest.raises(FileNotFoundError) as info:
        load_segmenter("sam2.1_hiera_large.pt", search_dirs=dirs)
    message = str(info.value)
    for d in dirs:
        assert str(d / "sam2.1_hiera_large.pt") in message
    assert "Put the file into one of" in message and str(dirs[0]) in message


def test_find_checkpoint_in_search_dirs(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (second / "sam_vit_b_01ec64.pth").write_bytes(b"")
    assert find_checkpoint("sam_vit_b_01ec64.pth", [first, second]) == second / "sam_vit_b_01ec64.pth"
    assert find_checkpoint("sam_vit_b_01ec64", [first, second]) == second / "sam_vit_b_01ec64.pth"
    assert find_checkpoint(second / "sam_vit_b_01ec64.pth") == second / "sam_vit_b_01ec64.pth"


def test_load_sam_pth_and_prefixed_safetensors(tmp_path, sam_model, cats):
    from safetensors.torch import save_file

    sd = sam_model.state_dict()
    torch.save(sd, tmp_path / "my_sam.pth")
    seg = load_segmenter("my_sam.pth", search_dirs=[tmp_path], dtype=torch.bfloat16)
    assert isinstance(seg, SamSegmenter) and seg.name == "sam_vit_b" and seg.image_size == SAM_SMALL
    # No half precision on CPU.
    assert seg.dtype == torch.float32 and next(seg.module.parameters()).dtype == torch.float32
    key = "mask_decoder.iou_token.weight"
    assert torch.equal(seg.module.state_dict()[key], sd[key])
    _check_prediction(seg.segment(cats, [(180.0, 220.0)]), (480, 640), 3)

    save_file({f"module.{k}": v.contiguous() for k, v in sd.items()}, str(tmp_path / "wrapped.safetensors"))
    loaded = load_state_dict_file(tmp_path / "wrapped.safetensors")
    assert set(loaded) == set(sd) and torch.equal(loaded[key], sd[key])
    assert identify_model(shapes_of(loaded)).name == "sam_vit_b"

    with pytest.raises(ValueError, match="only available for SAM2"):
        load_segmenter(tmp_path / "my_sam.pth", image_size=1024)


def test_load_sam2_pt_and_safetensors(tmp_path, sam2_model, sam2_v20_model, cats):
    from safetensors.torch import save_file

    sd = sam2_model.state_dict()
    torch.save({"model": sd, "epoch": 3}, tmp_path / "checkpoint.pt")
    seg = load_segmenter(tmp_path / "checkpoint.pt", image_size=SMALL)
    assert isinstance(seg, Sam2Segmenter) and seg.name == "sam2.1_hiera_t" and seg.image_size == SMALL
    key = "sam_mask_decoder.iou_token.weight"
    assert torch.equal(seg.module.state_dict()[key], sd[key])
    _check_prediction(seg.segment(cats, [(180.0, 220.0)]), (480, 640), 3)

    # SAM2 weights do not depend on the input size: the same file loads at the config's 1024.
    assert load_segmenter(tmp_path / "checkpoint.pt").image_size == 1024

    v20 = {k: v.contiguous() for k, v in sam2_v20_model.state_dict().items()}
    save_file(v20, str(tmp_path / "anything.safetensors"))
    seg = load_segmenter("anything.safetensors", search_dirs=[tmp_path], image_size=SMALL)
    assert seg.name == "sam2_hiera_t"
    _check_prediction(seg.segment(cats[:, :320], [(100.0, 100.0)], multimask=False), (480, 320), 1)


def test_checkpoint_errors(tmp_path, sam2_model):
    (tmp_path / "weights.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported checkpoint type"):
        load_segmenter(tmp_path / "weights.onnx")
    torch.save({"net.0.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="could not recognise a SAM or SAM2"):
        load_segmenter(tmp_path / "other.pth")
    torch.save({"model": sam2_model.state_dict()}, tmp_path / "sam2.pt")
    with pytest.raises(ValueError, match="family='sam' but the weights"):
        load_segmenter(tmp_path / "sam2.pt", family="sam")
    with pytest.raises(ValueError, match=r"variant='sam2.1_hiera_l' but the weights .* are sam2.1_hiera_t"):
        load_segmenter(tmp_path / "sam2.pt", variant="sam2.1_hiera_l")
    with pytest.raises(ValueError, match="image_size must be a multiple of 32"):
        load_segmenter(tmp_path / "sam2.pt", image_size=250)


def test_state_dict_cleaning(tmp_path):
    t = torch.zeros(1)
    assert strip_prefixes({"module.model.a": t, "module.model.b": t}) == {"a": t, "b": t}
    assert set(strip_prefixes({"model.a": t, "b": t})) == {"model.a", "b"}
    torch.save({"state_dict": {"model.x": t}, "step": 1}, tmp_path / "lightning.ckpt")
    assert set(load_state_dict_file(tmp_path / "lightning.ckpt")) == {"x"}


# -- family / variant detection ------------------------------------------------------------------


def _sam_signature(dim: int, depth: int, grid: int = 64) -> dict[str, tuple[int, ...]]:
    shapes = {f"image_encoder.blocks.{i}.attn.qkv.weight": (3 * dim, dim) for i in range(depth)}
    shapes["image_encoder.patch_embed.proj.weight"] = (dim, 3, 16, 16)
    shapes["image_encoder.pos_embed"] = (1, grid, grid, dim)
    shapes["mask_decoder.iou_token.weight"] = (1, 256)
    return shapes


def _sam2_signature(dim: int, depth: int, v21: bool) -> dict[str, tuple[int, ...]]:
    shapes = {f"image_encoder.trunk.blocks.{i}.norm1.weight": (dim,) for i in range(depth)}
    shapes["image_encoder.trunk.patch_embed.proj.weight"] = (dim, 3, 7, 7)
    shapes["sam_mask_decoder.iou_token.weight"] = (1, 256)
    if v21:
        shapes["no_obj_embed_spatial"] = (1, 64)
        shapes["obj_ptr_tpos_proj.weight"] = (64, 256)
    return shapes


@pytest.mark.parametrize(
    "shapes, name",
    [
        (_sam_signature(768, 12), "sam_vit_b"),
        (_sam_signature(1024, 24), "sam_vit_l"),
        (_sam_signature(1280, 32), "sam_vit_h"),
        (_sam2_signature(96, 12, False), "sam2_hiera_t"),
        (_sam2_signature(96, 16, True), "sam2.1_hiera_s"),
        (_sam2_signature(112, 24, True), "sam2.1_hiera_b+"),
        (_sam2_signature(144, 48, False), "sam2_hiera_l"),
        (_sam2_signature(144, 48, True), "sam2.1_hiera_l"),
    ],
)
def test_detect_from_signature(shapes, name):
    spec = identify_model(shapes, filename="renamed.pth")
    assert spec.name == name
    assert spec.image_size == (1024 if spec.family == "sam" else None)


def test_detect_from_real_state_dicts(sam_model, sam2_model, sam2_v20_model):
    sam = identify_model(shapes_of(sam_model.state_dict()))
    assert (sam.family, sam.variant, sam.image_size) == ("sam", "vit_b", SAM_SMALL)
    assert identify_model(shapes_of(sam2_model.state_dict())).variant == "sam2.1_hiera_t"
    assert identify_model(shapes_of(sam2_v20_model.state_dict())).variant == "sam2_hiera_t"


def test_a_variant_of_the_other_family_names_the_weights_not_the_spelling(sam_model, sam2_model):
    with pytest.raises(ValueError, match=r"names a SAM2 model, but the weights in sam_vit_b\.pth are SAM \(vit_b\)"):
        identify_model(shapes_of(sam_model.state_dict()), filename="sam_vit_b.pth", variant="sam2.1_hiera_large")
    with pytest.raises(ValueError, match=r"names a SAM model, but the weights are SAM2 \(sam2.1_hiera_t\).*leave the variant out"):
        identify_model(shapes_of(sam2_model.state_dict()), variant="vit_h")


@pytest.mark.parametrize(
    "filename, expected",
    [
        ("sam_vit_h_4b8939.pth", ("sam", "vit_h")),
        ("sam_vit_l_0b3195.pth", ("sam", "vit_l")),
        ("sam_vit_b_01ec64.pth", ("sam", "vit_b")),
        ("sam2_hiera_tiny.pt", ("sam2", "sam2_hiera_t")),
        ("sam2.1_hiera_large.pt", ("sam2", "sam2.1_hiera_l")),
        ("sam2.1_hiera_base_plus-fp16.safetensors", ("sam2", "sam2.1_hiera_b+")),
        ("sam2_hiera_small.safetensors", ("sam2", "sam2_hiera_s")),
        ("SAM2.1-Hiera-Small.pt", ("sam2", "sam2.1_hiera_s")),
        ("my_sam2_finetune.pt", ("sam2", None)),
        ("weights.pth", (None, None)),
    ],
)
def test_parse_filename(filename, expected):
    assert parse_filename(filename) == expected


def test_filename_decides_when_shapes_do_not():
    # A pruned trunk no config matches: the weights say SAM2.1, the name says which.
    shapes = _sam2_signature(96, 10, True)
    assert identify_model(shapes, filename="sam2.1_hiera_tiny.pt").variant == "sam2.1_hiera_t"
    with pytest.raises(ValueError, match="pass variant="):
        identify_model(shapes, filename="custom.pt")
    assert identify_model(shapes, filename="custom.pt", variant="sam2.1_hiera_t").variant == "sam2.1_hiera_t"
    # A bare size takes the version the keys show.
    assert identify_model(_sam2_signature(96, 10, False), variant="hiera_t").variant == "sam2_hiera_t"
    hf_like = {"vision_encoder.patch_embed.projection.weight": (768, 3, 16, 16), "mask_decoder.x": (1,)}
    with pytest.raises(ValueError, match="Hugging Face transformers"):
        identify_model(hf_like)


@pytest.mark.parametrize(
    "variant, family, version, expected",
    [
        ("vit_h", None, None, ("sam", "vit_h")),
        ("sam_vit_b", None, None, ("sam", "vit_b")),
        ("huge", "sam", None, ("sam", "vit_h")),
        ("sam2.1_hiera_large", None, None, ("sam2", "sam2.1_hiera_l")),
        ("sam2-hiera-b+", None, None, ("sam2", "sam2_hiera_b+")),
        ("hiera_t", None, "2.0", ("sam2", "sam2_hiera_t")),
        ("tiny", "sam2", None, ("sam2", "sam2.1_hiera_t")),
        ("base_plus", "sam2", "2.1", ("sam2", "sam2.1_hiera_b+")),
    ],
)
def test_parse_variant(variant, family, version, expected):
    assert parse_variant(variant, family, version) == expected


def test_parse_variant_rejects_ambiguous_and_unknown():
    with pytest.raises(ValueError, match="unknown SAM/SAM2 variant 'large'"):
        parse_variant("large", None)
    with pytest.raises(ValueError, match="known: vit_b"):
        parse_variant("vit_x", "sam")
