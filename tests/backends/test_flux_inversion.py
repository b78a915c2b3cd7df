"""The diffusers FLUX backend's other feature modes on the trained toy model: RF-inversion with the
branch on denoising steps, and one pass per σ — against single passes run here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refam.architectures.flux import pack_latents
from refam.backends.diffusers_flux import Branch, FluxInputs
from refam.features import FeatureOptions, PassAverage
from refam.flow import denoising_sigmas
from refam.images import to_model_pixels
from refam.noise import capture_noise
from refam.toy import scenes


@pytest.fixture(scope="module")
def toy():
    from refam.options import RefAMOptions
    from refam.pipeline import RefAMPipeline
    from refam.toy.model import load_toy, weights_for

    backend = load_toy(weights_for("v1"))  # renders v1 scenes
    pipe = RefAMPipeline(backend, options=RefAMOptions())
    ex = scenes.make_eval_set(scenes.EVAL_SEED, 1, kinds=("colour_shape",))[0]
    image = scenes.render(ex.scene)[None]
    expressions, _ = pipe.tokenize([ex.referral.text, "the pink one"])
    prompt_embeds, pooled = backend.encode_caption(scenes.caption(ex.scene, np.random.default_rng(0)))
    expr_embeds, layout = backend.encode_expressions(expressions)
    return backend, image, expressions, prompt_embeds, pooled, expr_embeds, layout


def _setup(toy, seed=3):
    backend, image, _, prompt_embeds, pooled, expr_embeds, layout = toy
    unpacked = backend.encode_images(to_model_pixels(image, (48, 48))).float()
    grid = (unpacked.shape[2] // 2, unpacked.shape[3] // 2)
    flux = FluxInputs(backend, prompt_embeds, pooled, grid, 1, None)
    return pack_latents(unpacked), pack_latents(capture_noise(unpacked.shape, seed)), flux, Branch(expr_embeds, layout, None)


def _maps(blocks, layout):
    """Each block's attention maps as the heatmap reads them (softmax over each expression's tokens)."""
    return [
        torch.cat([b.scores[k][..., s:e].softmax(-1) for s, e in layout.spans], -1)
        for b in blocks
        for k in sorted(b.scores)
    ]


def test_trajectory_is_bit_identical_with_and_without_the_capture(toy):
    backend, layout = toy[0], toy[6]
    clean, noise, flux, branch = _setup(toy)
    features = FeatureOptions(mode="inversion", inversion_steps=6, gamma=0.5, eta=0.9, eta_stop=0.4)
    plain = backend.invert_and_denoise(clean, noise, denoising_sigmas(6), features, flux)
    average = PassAverage(layout)
    captured = backend.invert_and_denoise(clean, noise, denoising_sigmas(6), features, flux, branch=branch, average=average)
    assert torch.equal(plain, captured)
    assert average.passes == 6 and len(average.blocks()) == backend.num_blocks


@pytest.mark.parametrize("step", [0, 3])
def test_collected_maps_equal_a_single_pass_on_that_steps_latent(toy, step):
    backend, layout = toy[0], toy[6]
    clean, noise, flux, branch = _setup(toy)
    schedule = denoising_sigmas(5)
    features = FeatureOptions(mode="inversion", inversion_steps=5, gamma=0.3, collect_steps=(step,))
    seen = {}

    def remember(stage, i, x):
        seen[(stage, i)] = x.clone()

    average = PassAverage(layout)
    backend.invert_and_denoise(clean, noise, schedule, features, flux, branch=branch, average=average, on_step=remember)
    latent = seen[("inversion", 4)] if step == 0 else seen[("denoising", step - 1)]
    single = backend.capture_latent(latent, float(schedule[step]), flux, branch)
    for a, b in zip(_maps(average.blocks(), layout), _maps(single, layout), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_several_sigmas_average_single_passes(toy):
    backend, image, expressions, prompt_embeds, pooled, expr_embeds, layout = toy
    kwargs = dict(seed=3, resolution=48)
    singles = [
        backend.capture_encoded(image, expressions, prompt_embeds, pooled, expr_embeds, layout, sigma=s, **kwargs)
        for s in (0.3, 0.8)
    ]
    both = backend.capture_encoded(
        image, expressions, prompt_embeds, pooled, expr_embeds, layout,
        features=FeatureOptions(sigmas=(0.3, 0.8)), **kwargs,
    )  # fmt: skip
    by_hand = [(a + b) / 2 for a, b in zip(_maps(singles[0].blocks, layout), _maps(singles[1].blocks, layout), strict=True)]
    for got, want in zip(_maps(both.blocks, layout), by_hand, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    for block, a, b in zip(both.blocks, singles[0].blocks, singles[1].blocks, strict=True):
        torch.testing.assert_close(block.text_mass, (a.text_mass + b.text_mass) / 2)
    assert both.meta["features"] == {"mode": "single", "sigmas": [0.3, 0.8], "step_aggregation": "maps"}
    # ConceptAttention's order: scores averaged, one softmax after.
    scores = backend.capture_encoded(
        image, expressions, prompt_embeds, pooled, expr_embeds, layout,
        features=FeatureOptions(sigmas=(0.3, 0.8), step_aggregation="scores"), **kwargs,
    )  # fmt: skip
    for block, a, b in zip(scores.blocks, singles[0].blocks, singles[1].blocks, strict=True):
        torch.testing.assert_close(block.logits, (a.logits + b.logits) / 2)


def test_inversion_mode_through_the_pipeline(toy):
    from refam.pipeline import RefAMPipeline

    backend, image = toy[0], toy[1]
    pipe = RefAMPipeline(backend)
    features = {"features": "inversion", "inversion_steps": 4, "collect_steps": (1, 2)}
    result = pipe.segment(image[0], "the red one", "scene", **features)[0]
    assert result.heatmap_grid.shape == (12, 12) and np.isfinite(result.heatmap_grid).all()
    captured = pipe.capture(image, pipe.tokenize("the red one")[0], "scene", pipe.options.replace(**features))
    assert captured.meta["features"]["mode"] == "inversion"
    assert captured.meta["features"]["collect_steps"] == [1, 2]
    assert captured.meta["features"]["collected_sigmas"] == [0.75, 0.5]
