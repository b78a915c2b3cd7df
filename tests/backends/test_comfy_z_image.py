"""Z-Image in ComfyUI (NextDiT, the January-2026 core) against the diffusers capture on the same
weights: the branch rides NextDiT's post-layer patch, since its forward consults no replace patches."""

from __future__ import annotations

import copy

import pytest
import torch

from comfy_support import comfy_z_image_from_diffusers, import_comfy, scores_agree
from refam.attention import CaptureComplete, ExpressionLayout
from tiny_models import tiny_z_image_transformer

pytestmark = [pytest.mark.comfyui, pytest.mark.comfy_model("z_image")]

SIGMA, SEED = 0.75, 9
CROSS_BACKEND_ATOL = 1e-4  # float32 on both sides; fused vs separate q/k/v and two RoPE forms


@pytest.fixture(scope="module")
def weights():
    import_comfy()
    return tiny_z_image_transformer(seed=3)


@pytest.fixture(scope="module")
def model(weights):
    return comfy_z_image_from_diffusers(weights)


@pytest.fixture(scope="module")
def inputs(weights):
    rng = torch.Generator().manual_seed(7)
    positive = [[torch.randn(1, 40, weights.config.cap_feat_dim, generator=rng), {}]]
    embeds = torch.randn(1, 13, weights.config.cap_feat_dim, generator=rng)
    latent = torch.randn(2, weights.config.in_channels, 6, 8, generator=rng)
    return positive, embeds, ExpressionLayout((6, 7)), latent


def _captured(model, inputs, **capture):
    from refam.backends.comfy_capture import ComfyCapture, denoise_once
    from refam.noise import capture_noise

    positive, embeds, layout, latent = inputs
    session = ComfyCapture(model, embeds, layout, **capture)
    out = denoise_once(session.patched_model(), latent, positive, SIGMA, capture_noise(latent.shape, SEED).contiguous())
    return session, out


def test_z_image_is_recognised_and_lumina_2_is_still_named(model):
    from refam.architectures import comfy_architecture
    from refam.architectures.z_image import Z_IMAGE

    assert comfy_architecture(model, "image")[0] is Z_IMAGE
    lumina = copy.copy(model.model.diffusion_model)
    lumina.pad_tokens_multiple = None  # Lumina 2's NextDiT: no caption pad tokens

    class Patcher:
        class model:  # noqa: N801 (ComfyUI's attribute layout)
            diffusion_model = lumina

    with pytest.raises(NotImplementedError, match="Lumina 2"):
        comfy_architecture(Patcher(), "image")


def test_denoiser_output_bit_identical_and_original_untouched(model, inputs):
    from refam.backends.comfy_capture import denoise_once
    from refam.noise import capture_noise

    positive, _embeds, _layout, latent = inputs
    options_before = copy.deepcopy(model.model_options)
    plain = denoise_once(model, latent, positive, SIGMA, capture_noise(latent.shape, SEED).contiguous())
    session, captured = _captured(model, inputs)
    assert torch.equal(plain, captured)
    assert [r.name for r in session.records] == ["single.0", "single.1"]
    assert model.model_options == options_before and not model.wrappers
    with pytest.raises(CaptureComplete):  # the early stop after the last selected block
        _captured(model, inputs, blocks=[0], stop_after_last=True)


def test_cross_backend_agreement_with_diffusers(weights, model, inputs):
    from refam.architectures.z_image import Z_IMAGE
    from refam.backends.diffusers_capture import capture_attention
    from refam.noise import capture_noise

    positive, embeds, layout, latent = inputs
    session, _ = _captured(model, inputs)
    process_in = model.model.latent_format.process_in
    noisy = (1 - SIGMA) * process_in(latent) + SIGMA * capture_noise(latent.shape, SEED)
    caption = positive[0][0][0]
    with capture_attention(weights, embeds, layout, architecture=Z_IMAGE) as theirs, torch.no_grad():
        # diffusers' Z-Image takes lists and the flipped time 1 - σ
        weights([n[:, None] for n in noisy], torch.full((2,), 1 - SIGMA), [caption, caption], return_dict=False)
    worst = 0.0
    for a, b in zip(session.records, theirs.records, strict=True):
        assert a.name == b.name
        scores_agree(a, b)
        worst = max(worst, (a.logits - b.logits).abs().max().item())
        torch.testing.assert_close(a.text_mass, b.text_mass, atol=CROSS_BACKEND_ATOL, rtol=0)
    assert worst <= CROSS_BACKEND_ATOL
    print(f"\nagreement z-image: max |dlogit| = {worst:.2e}")
