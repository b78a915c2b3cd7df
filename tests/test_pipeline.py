"""The pipeline on a whole tiny FLUX (transformer, VAE, T5, CLIP): one pass, isolation, inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refam.images import load_image, to_rgb_uint8
from refam.options import RefAMOptions
from refam.pipeline import RefAMPipeline
from tiny_models import tiny_flux_backend


@pytest.fixture(scope="module")
def backend(t5_tokenizer, clip_tokenizer):
    return tiny_flux_backend(t5_tokenizer, clip_tokenizer)


@pytest.fixture(scope="module")
def pipe(backend):
    return RefAMPipeline(backend, options=RefAMOptions(resolution=128))


@pytest.fixture(scope="module")
def cats(two_cats_path):
    return load_image(two_cats_path)


def _count_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls, handle


def test_several_expressions_share_one_forward_and_do_not_see_each_other(pipe, cats):
    calls, handle = _count_forwards(pipe.backend.transformer)
    try:
        together = pipe.segment(cats, ["the cat on the left", "a remote", "the couch"], "two cats")
    finally:
        handle.remove()
    assert len(calls) == 1
    alone = pipe.segment(cats, "a remote", "two cats")[0]
    # the block-diagonal mask keeps each expression to itself: same map alone or in company
    np.testing.assert_allclose(together[1].heatmap, alone.heatmap, atol=1e-5)
    assert (together[1].point.x, together[1].point.y) == (alone.point.x, alone.point.y)
    assert together[1].point.score == pytest.approx(alone.point.score, abs=1e-5)
    assert [r.expression for r in together] == ["the cat on the left", "a remote", "the couch"]


def test_results_are_at_the_original_size_and_deterministic(pipe):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (333, 517, 3), dtype=np.uint8)  # not multiples of 16, non-square
    first = pipe.segment(image, "the red ball")[0]
    again = pipe.segment(image, "the red ball")[0]
    assert first.heatmap.shape == (333, 517) and first.heatmap.dtype == np.float32
    assert first.heatmap.min() >= 0.0 and first.heatmap.max() <= 1.0
    assert 0 <= first.point.x < 517 and 0 <= first.point.y < 333
    np.testing.assert_array_equal(first.heatmap, again.heatmap)
    other_seed = pipe.segment(image, "the red ball", seed=1)[0]
    assert not np.array_equal(first.heatmap, other_seed.heatmap)


def test_batch_of_images_equals_one_by_one(pipe, cats):
    flipped = cats[:, ::-1].copy()
    batch = pipe.segment_batch(np.stack([cats, flipped]), ["the cat", "a remote"])
    assert [len(r) for r in batch] == [2, 2] and batch[1][0].image_index == 1
    single = pipe.segment(flipped, ["the cat", "a remote"])
    np.testing.assert_allclose(batch[1][1].heatmap, single[1].heatmap, atol=1e-5)


def test_token_bookkeeping_in_results(pipe, cats):
    res = pipe.segment(cats, "the cat on the left")[0]
    pieces = [t.piece for t in res.token_maps]
    assert pieces[-1] == "</s>" and "▁pink" in pieces
    kept = [t.piece for t in res.token_maps if t.kept]
    assert kept == ["▁cat"]  # NP filter: "the cat"; 'left' is outside the head noun phrase
    assert res.noun_phrase == "the cat" and (res.spatial.horizontal, res.spatial.rule) == ("left", "hybridgl")
    summary = res.summary()
    assert summary["tokens"][1] == {"piece": "▁cat", "role": "content", "kept": True, "gas": False}
    assert summary["parser"].startswith("en_core_web") and summary["spatial"]["rule"] == "hybridgl"
    # np_mode="encode": the noun phrase is what the branch reads, standing for the expression
    encoded = pipe.segment(cats, "the cat on the left", np_mode="encode")[0]
    assert encoded.expression == "the cat on the left"
    assert [t.piece for t in encoded.token_maps if t.kept] == ["▁cat"]
    assert "▁left" not in [t.piece for t in encoded.token_maps]
    no_magnets = pipe.segment(cats, "the cat on the left", magnets=())[0]
    assert "▁pink" not in [t.piece for t in no_magnets.token_maps]


def test_bad_expressions(pipe, cats):
    with pytest.raises(ValueError, match="empty"):
        pipe.segment(cats, "   ")
    with pytest.raises(ValueError, match="empty"):
        pipe.segment(cats, ["a cat", ""])
    with pytest.raises(ValueError, match="at least one"):
        pipe.segment(cats, [])
    stop_only = pipe.segment(cats, "it")[0]
    assert stop_only.warnings and any(t.kept for t in stop_only.token_maps)
    assert all(t.role.value != "magnet" for t in stop_only.token_maps if t.kept)
    long = pipe.segment(cats, " ".join(["the big fluffy cat"] * 200))[0]
    assert any("too long" in w for w in long.warnings)
    with pytest.raises(TypeError, match="unknown RefAM option"):
        pipe.segment(cats, "a cat", sigmaa=0.5)
    with pytest.raises(ValueError, match="sigma"):
        pipe.segment(cats, "a cat", sigma=0.0)


def test_image_formats(pipe, cats, tmp_path):
    from PIL import Image

    gray = cats.mean(axis=2).astype(np.uint8)
    rgba = np.concatenate([cats, np.full((*cats.shape[:2], 1), 255, np.uint8)], axis=2)
    sixteen = cats[..., 0].astype(np.uint16) * 257
    for arr in (gray, rgba, sixteen, cats.astype(np.float32) / 255.0, torch.from_numpy(cats)):
        res = pipe.segment(arr, "a cat")[0]
        assert res.heatmap.shape == (480, 640)
    Image.fromarray(sixteen).save(tmp_path / "deep.png")
    assert load_image(tmp_path / "deep.png").shape == (480, 640, 3)
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    assert load_image(tmp_path / "alpha.png").dtype == np.uint8
    tiny = pipe.segment(cats[:20, :24], "a cat")[0]
    assert tiny.heatmap.shape == (20, 24) and any("coarse" in w for w in tiny.warnings)
    with pytest.raises(ValueError, match="HxWx3"):
        to_rgb_uint8(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_rgb_uint8(np.full((4, 4, 3), 7.0, np.float32))
    with pytest.raises(ValueError, match="one size"):
        pipe.segment_batch([cats, cats[:100]], "a cat")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image(tmp_path / "missing.png")


def _transformer_folder(root, class_name):
    (root / "transformer").mkdir(parents=True)
    (root / "transformer" / "config.json").write_text(f'{{"_class_name": "{class_name}"}}')
    return root


def test_from_pretrained_picks_the_architecture_from_the_folder(tmp_path, monkeypatch):
    import refam.loading
    from refam.assembly import detect_architecture

    mochi = _transformer_folder(tmp_path / "mochi", "MochiTransformer3DModel")
    flux = _transformer_folder(tmp_path / "flux", "FluxTransformer2DModel")
    assert detect_architecture(mochi) == "mochi"
    assert detect_architecture(flux) == "flux"
    assert detect_architecture(tmp_path / "flux1-dev.safetensors") == "flux"  # single files are FLUX's
    calls = []
    monkeypatch.setattr(refam.loading, "load_mochi", lambda model, **kw: calls.append(("mochi", model)) or "m")
    monkeypatch.setattr(refam.loading, "load_flux", lambda model, **kw: calls.append(("flux", model)) or "f")
    assert RefAMPipeline.from_pretrained(mochi).backend == "m"
    assert RefAMPipeline.from_pretrained(flux).backend == "f"
    assert RefAMPipeline.from_pretrained(flux, architecture="mochi").backend == "m"  # explicit wins
    assert calls == [("mochi", mochi), ("flux", flux), ("mochi", flux)]


def test_from_pretrained_refuses_unknown_or_modelless_architectures():
    with pytest.raises(ValueError, match="architecture must be one of flux, flux2, chroma, qwen_image, z_image, mochi"):
        RefAMPipeline.from_pretrained("x", architecture="sd3")
    for architecture in ("mochi", "flux2", "chroma", "qwen_image", "z_image"):
        with pytest.raises(ValueError, match=f"architecture='{architecture}' needs model="):
            RefAMPipeline.from_pretrained(None, architecture=architecture)
