"""Chroma in ComfyUI against the diffusers capture on the same weights (both cores have it).

ComfyUI's own ``Chroma`` (detected from the converted weights of a tiny diffusers
``ChromaTransformer2DModel``), run through ComfyUI's sampling path; the diffusers side runs the
same noised latent at the same σ. The January-2026 core builds Chroma from FLUX's block classes
with ``modulation=False``; the October-2025 core from its own, which have no ``modulation`` at all.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from comfy_support import comfy_chroma_from_diffusers, import_comfy, scores_agree
from refam.attention import ExpressionLayout
from tiny_models import tiny_chroma_transformer

pytestmark = pytest.mark.comfyui

SIGMA, SEED = 0.75, 9
T_CAP = 11  # ComfyUI does not pad Chroma's T5: a caption is its own tokens and </s>
# float32 on both sides; fused vs separate q/k/v projections, the two RoPE implementations and
# the approximator's RMSNorm eps (ComfyUI 1e-6, torch's machine epsilon) move logits by ~1e-6.
CROSS_BACKEND_ATOL = 1e-4


@pytest.fixture(scope="module")
def weights():
    import_comfy()
    return tiny_chroma_transformer(seed=3)


@pytest.fixture(scope="module")
def model(weights):
    return comfy_chroma_from_diffusers(weights)


@pytest.fixture(scope="module")
def inputs(weights):
    rng = torch.Generator().manual_seed(7)
    width = weights.config.joint_attention_dim
    positive = [[torch.randn(1, T_CAP, width, generator=rng), {"pooled_output": None}]]  # T5 only: no pooled text
    embeds = torch.randn(1, 13, width, generator=rng)
    latent = torch.randn(2, 16, 6, 10, generator=rng)  # FLUX.1's 16 channels; a 3 x 5 token grid
    return positive, embeds, ExpressionLayout((6, 7)), latent


def _comfy_records(model, inputs, **capture):
    from refam.backends.comfy_capture import ComfyCapture, denoise_once
    from refam.noise import capture_noise

    positive, embeds, layout, latent = inputs
    session = ComfyCapture(model, embeds, layout, **capture)
    out = denoise_once(session.patched_model(), latent, positive, SIGMA, capture_noise(latent.shape, SEED).contiguous())
    return session, out


def test_chroma_is_recognised_with_what_it_is(model):
    from refam.architectures import comfy_architecture
    from refam.architectures.chroma import CHROMA

    architecture, dm = comfy_architecture(model, "image")
    assert architecture is CHROMA and architecture.label == "Chroma"
    assert dm is model.model.diffusion_model


def test_chroma_radiance_is_named_as_planned_not_read_as_chroma():
    """Chroma Radiance subclasses Chroma (pixel space, a NeRF head): not claimed by the module."""
    from comfy.ldm.chroma_radiance.model import ChromaRadiance

    from refam.architectures import comfy_architecture
    from refam.architectures.chroma import CHROMA

    radiance = torch.nn.Module.__new__(ChromaRadiance)  # the class is what is read; no weights needed
    assert not CHROMA.comfy_matches(radiance)
    with pytest.raises(NotImplementedError, match="Chroma Radiance yet"):
        comfy_architecture(SimpleNamespace(model=SimpleNamespace(diffusion_model=radiance)), "image")


@pytest.mark.parametrize("skip", ["skip_mmdit", "skip_dit"])
def test_skipped_blocks_are_refused(model, inputs, skip):
    from refam.backends.comfy_capture import ComfyCapture

    _positive, embeds, layout, _latent = inputs
    dm = model.model.diffusion_model
    setattr(dm, skip, [1])
    try:
        with pytest.raises(NotImplementedError, match="skips blocks"):
            ComfyCapture(model, embeds, layout)
    finally:
        setattr(dm, skip, [])


def test_denoiser_output_bit_identical_and_original_untouched(model, inputs):
    from refam.backends.comfy_capture import denoise_once
    from refam.noise import capture_noise

    positive, _embeds, _layout, latent = inputs
    options_before = copy.deepcopy(model.model_options)
    plain = denoise_once(model, latent, positive, SIGMA, capture_noise(latent.shape, SEED).contiguous())
    session, captured = _comfy_records(model, inputs)
    assert torch.equal(plain, captured)
    assert [r.name for r in session.records] == ["double.0", "double.1", "single.0", "single.1"]
    assert all(r.logits.shape == (2, 15, 13) for r in session.records)
    assert model.model_options == options_before and not model.wrappers


def test_cross_backend_agreement_with_diffusers(weights, model, inputs):
    """The maps of every block agree with diffusers'. ComfyUI always computes Chroma's 344
    modulation sets, so the tiny model's final layer reads other ones than diffusers' does; the
    blocks' sets are the same in both."""
    from refam.architectures.chroma import CHROMA
    from refam.architectures.flux import latent_image_ids, pack_latents
    from refam.backends.diffusers_capture import capture_attention
    from refam.noise import capture_noise

    positive, embeds, layout, latent = inputs
    session, _ = _comfy_records(model, inputs)

    clean = model.model.process_latent_in(latent)
    noisy = (1 - SIGMA) * clean + SIGMA * capture_noise(latent.shape, SEED)
    batch, _c, h, w = latent.shape
    with capture_attention(weights, embeds, layout, architecture=CHROMA) as theirs, torch.no_grad():
        weights(
            hidden_states=pack_latents(noisy),
            encoder_hidden_states=positive[0][0].expand(batch, -1, -1),
            timestep=torch.full((batch,), SIGMA),
            img_ids=latent_image_ids(h // 2, w // 2),
            txt_ids=torch.zeros(T_CAP, 3),
            return_dict=False,
        )
    worst_logit = 0.0
    for a, b in zip(session.records, theirs.records, strict=True):
        assert a.name == b.name
        scores_agree(a, b)
        worst_logit = max(worst_logit, (a.logits - b.logits).abs().max().item())
        torch.testing.assert_close(a.text_mass, b.text_mass, atol=CROSS_BACKEND_ATOL, rtol=0)
    assert worst_logit <= CROSS_BACKEND_ATOL
    print(f"\nagreement chroma: max |dlogit| = {worst_logit:.2e}")
