"""FLUX.2 in ComfyUI against the diffusers capture on the same weights (the January-2026 core).

ComfyUI's own ``Flux`` with ``global_modulation`` (detected from the converted weights of a tiny
diffusers ``Flux2Transformer2DModel``), run through ComfyUI's sampling path; the diffusers side
runs the same noised latent at the same σ.
"""

from __future__ import annotations

import copy

import pytest
import torch

from comfy_support import comfy_flux2_from_diffusers, import_comfy, scores_agree
from refam.attention import ExpressionLayout
from tiny_models import tiny_flux2_transformer

pytestmark = [pytest.mark.comfyui, pytest.mark.comfy_model("flux2")]

SIGMA, SEED = 0.75, 9
T_CAP = 512  # ComfyUI pads FLUX.2's text to 512 (left, with zeros): a full caption is laid out alike
# float32 on both sides; fused vs separate q/k/v projections and the two RoPE implementations move
# logits by ~1e-6.
CROSS_BACKEND_ATOL = 1e-4


@pytest.fixture(scope="module")
def weights():
    import_comfy()
    return tiny_flux2_transformer(seed=3)


@pytest.fixture(scope="module")
def model(weights):
    return comfy_flux2_from_diffusers(weights)


@pytest.fixture(scope="module")
def inputs(weights):
    rng = torch.Generator().manual_seed(7)
    width = weights.config.joint_attention_dim
    positive = [[torch.randn(1, T_CAP, width, generator=rng), {"pooled_output": None}]]  # klein: no pooled text
    embeds = torch.randn(1, 13, width, generator=rng)
    latent = torch.randn(2, weights.config.in_channels, 3, 5, generator=rng)
    return positive, embeds, ExpressionLayout((6, 7)), latent


def _comfy_records(model, inputs, **capture):
    from refam.backends.comfy_capture import ComfyCapture, denoise_once
    from refam.noise import capture_noise

    positive, embeds, layout, latent = inputs
    session = ComfyCapture(model, embeds, layout, **capture)
    out = denoise_once(session.patched_model(), latent, positive, SIGMA, capture_noise(latent.shape, SEED).contiguous())
    return session, out


def test_flux2_is_recognised_with_what_it_is(model):
    from refam.architectures import comfy_architecture
    from refam.architectures.flux2 import FLUX2

    architecture, _ = comfy_architecture(model, "image")
    assert architecture is FLUX2 and architecture.label == "FLUX.2"


def test_denoiser_output_bit_identical_and_original_untouched(model, inputs):
    from refam.backends.comfy_capture import denoise_once
    from refam.noise import capture_noise

    positive, _embeds, _layout, latent = inputs
    options_before = copy.deepcopy(model.model_options)
    plain = denoise_once(model, latent, positive, SIGMA, capture_noise(latent.shape, SEED).contiguous())
    session, captured = _comfy_records(model, inputs)
    assert torch.equal(plain, captured)
    assert [r.name for r in session.records] == ["double.0", "double.1", "single.0", "single.1"]
    assert model.model_options == options_before and not model.wrappers


def test_cross_backend_agreement_with_diffusers(weights, model, inputs):
    from refam.architectures.flux2 import FLUX2
    from refam.backends.diffusers_capture import capture_attention
    from refam.noise import capture_noise

    positive, embeds, layout, latent = inputs
    session, _ = _comfy_records(model, inputs)

    noisy = (1 - SIGMA) * latent + SIGMA * capture_noise(latent.shape, SEED)
    batch, _c, h, w = latent.shape
    img_ids = torch.zeros(h * w, 4)
    img_ids[:, 1] = torch.arange(h).repeat_interleave(w)
    img_ids[:, 2] = torch.arange(w).repeat(h)
    txt_ids = torch.zeros(T_CAP, 4)
    txt_ids[:, 3] = torch.arange(T_CAP)
    with capture_attention(weights, embeds, layout, architecture=FLUX2) as theirs, torch.no_grad():
        weights(
            hidden_states=noisy.flatten(2).transpose(1, 2),
            encoder_hidden_states=positive[0][0].expand(batch, -1, -1),
            timestep=torch.full((batch,), SIGMA),
            img_ids=img_ids,
            txt_ids=txt_ids,
            return_dict=False,
        )
    worst_logit = 0.0
    for a, b in zip(session.records, theirs.records, strict=True):
        assert a.name == b.name
        scores_agree(a, b)
        worst_logit = max(worst_logit, (a.logits - b.logits).abs().max().item())
        torch.testing.assert_close(a.text_mass, b.text_mass, atol=CROSS_BACKEND_ATOL, rtol=0)
    assert worst_logit <= CROSS_BACKEND_ATOL
    print(f"\nagreement flux2: max |dlogit| = {worst_logit:.2e}")


@torch.no_grad()
def test_klein_text_path_encodes_each_expression_as_comfyui_encodes_that_prompt():
    """Expressions through a FLUX.2 klein CLIP: RefAM's tokens are the templated prompt ComfyUI's
    KleinTokenizer makes; each section encodes as that prompt does alone (causal: the shorter one's
    padding changes nothing), and as Hugging Face's Qwen3 gives layers 9, 18, 27 concatenated."""
    from comfy_support import tiny_klein_clip
    from refam.backends.comfy_text import encode_expressions, text_part
    from refam.expression.magnets import magnet_plan
    from refam.heatmap import HeatmapOptions
    from refam.pipeline import prepare_expressions

    clip, hf = tiny_klein_clip()
    part = text_part(clip)
    assert (part.key, part.pad_length) == ("qwen3_4b", None)
    texts = ["the cat on the left", "a red ball"]
    tokenized, _ = prepare_expressions(texts, part.tokenizer, None, ("_", "with", "to", "and", "pink"),
                                       HeatmapOptions(noun_phrase=False), part.template)  # fmt: skip
    embeds, layout = encode_expressions(clip, tokenized)
    assert layout.lengths == tuple(len(t.ids) for t in tokenized)
    for (start, end), expression in zip(layout.spans, tokenized, strict=True):
        tokens = clip.tokenize(expression.augmented)
        assert [int(t[0]) for t in tokens["qwen3_4b"][0][: len(expression.ids)]] == expression.ids
        alone = clip.encode_from_tokens(tokens)[:, : len(expression.ids)]
        torch.testing.assert_close(embeds[:, start:end], alone.float(), atol=1e-5, rtol=0)
        states = hf(torch.tensor([expression.ids]), output_hidden_states=True).hidden_states
        reference = torch.cat([states[i] for i in (9, 18, 27)], dim=-1)
        # ComfyUI's Qwen3 and transformers' differ by float rounding that grows with depth
        # (~1e-3 on values ~1 at layer 27 with these weights).
        torch.testing.assert_close(embeds[:, start:end], reference, atol=3e-3, rtol=0)
    # Table 5's random vectors go in as embeddings in place of their placeholder tokens.
    plan = magnet_plan("random_vectors", ("_", "with", "to", "and", "pink"), seed=4)
    vectors, _ = prepare_expressions(texts, part.tokenizer, None, plan, HeatmapOptions(noun_phrase=False), part.template)
    with_vectors, same_layout = encode_expressions(clip, vectors)
    assert same_layout == layout
    moved = (with_vectors - embeds).abs().amax(dim=-1)[0]
    first = layout.spans[0][0]
    positions = vectors[0].vector_positions
    assert moved[first : first + min(positions)].max() == 0  # causal: the expression's own tokens keep their states
    assert moved[first + min(positions)] > 0.1
