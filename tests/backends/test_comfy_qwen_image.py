"""Qwen-Image in ComfyUI against the diffusers capture on the same weights, and its text path.

ComfyUI's own ``QwenImageTransformer2DModel`` (detected from the weights of a tiny diffusers
``QwenImageTransformer2DModel``, whose key layout ComfyUI loads as is), run through ComfyUI's
sampling path on a 5-D latent; the diffusers side runs the same noised latent at the same σ.
The capture tests need the January-2026 core: the October-2025 core's Qwen-Image hands its
attention q/k/v as ``[B, T, H·Dh]`` (no ``skip_reshape``), a layout the ComfyUI capture does not
read. The text path runs on both cores.
"""

from __future__ import annotations

import copy

import pytest
import torch

from comfy_support import comfy_qwen_image_from_diffusers, import_comfy, scores_agree
from refam.attention import ExpressionLayout
from tiny_models import tiny_qwen_image_transformer

pytestmark = pytest.mark.comfyui
needs_capture = pytest.mark.comfy_model("qwen_image")

SIGMA, SEED = 0.75, 9
T_CAP = 6
LATENT = (2, 16, 1, 8, 12)  # [B, C, T, h, w]: a 4 x 6 token grid (even sides: both hosts centre it alike)
# float32 on both sides; the complex (diffusers) and 2x2 (ComfyUI) RoPE move logits by ~1e-6.
CROSS_BACKEND_ATOL = 1e-4
MAGNETS = ("_", "with", "to", "and", "pink")


@pytest.fixture(scope="module")
def weights():
    import_comfy()
    return tiny_qwen_image_transformer(seed=3)


@pytest.fixture(scope="module")
def model(weights):
    return comfy_qwen_image_from_diffusers(weights)


@pytest.fixture(scope="module")
def inputs(weights):
    rng = torch.Generator().manual_seed(7)
    width = weights.config.joint_attention_dim
    positive = [[torch.randn(1, T_CAP, width, generator=rng), {"pooled_output": None}]]  # no pooled text
    embeds = torch.randn(1, 13, width, generator=rng)
    latent = torch.randn(*LATENT, generator=rng)
    return positive, embeds, ExpressionLayout((6, 7)), latent


def _comfy_records(model, inputs, **capture):
    from refam.backends.comfy_capture import ComfyCapture, denoise_once
    from refam.noise import capture_noise

    positive, embeds, layout, latent = inputs
    session = ComfyCapture(model, embeds, layout, **capture)
    out = denoise_once(session.patched_model(), latent, positive, SIGMA, capture_noise(latent.shape, SEED).contiguous())
    return session, out


@needs_capture
def test_qwen_image_is_recognised_with_what_it_is(model):
    from refam.architectures import comfy_architecture
    from refam.architectures.qwen_image import QWEN_IMAGE

    architecture, diffusion_model = comfy_architecture(model, "image")
    assert architecture is QWEN_IMAGE and architecture.label == "Qwen-Image"
    assert [b.patch_key for b in architecture.comfy_blocks(diffusion_model)] == [("double_block", 0), ("double_block", 1)]
    with pytest.raises(TypeError, match="Mochi"):
        comfy_architecture(model, "video")


@needs_capture
def test_qwen_image_layered_is_named_before_any_work():
    from refam.architectures import comfy_architecture

    layered = comfy_qwen_image_from_diffusers(tiny_qwen_image_transformer(seed=3, use_additional_t_cond=True))
    with pytest.raises(NotImplementedError, match="Qwen-Image-Layered"):
        comfy_architecture(layered, "image")


@needs_capture
def test_denoiser_output_bit_identical_and_original_untouched(model, inputs):
    from refam.backends.comfy_capture import denoise_once
    from refam.noise import capture_noise

    positive, _embeds, _layout, latent = inputs
    options_before = copy.deepcopy(model.model_options)
    plain = denoise_once(model, latent, positive, SIGMA, capture_noise(latent.shape, SEED).contiguous())
    session, captured = _comfy_records(model, inputs)
    assert plain.shape == latent.shape
    assert torch.equal(plain, captured)
    assert [r.name for r in session.records] == ["double.0", "double.1"]
    assert session.records[0].logits.shape == (2, 24, 13)
    assert model.model_options == options_before and not model.wrappers


def _diffusers_records(weights, model, inputs, reference=None):
    """The diffusers capture on the latent ComfyUI noises (and a reference image's, unnoised, after
    it, as both hosts append edit references), at the same σ."""
    from refam.architectures.flux import pack_latents
    from refam.architectures.qwen_image import QWEN_IMAGE
    from refam.backends.diffusers_capture import capture_attention
    from refam.noise import capture_noise

    positive, embeds, layout, latent = inputs
    # ComfyUI normalises latents (Wan 2.1's per-channel statistics) before noising them.
    process_in = model.model.latent_format.process_in
    noisy = (1 - SIGMA) * process_in(latent) + SIGMA * capture_noise(latent.shape, SEED)
    batch, _c, _t, h, w = latent.shape
    hidden, shapes = pack_latents(noisy[:, :, 0]), [(1, h // 2, w // 2)]
    if reference is not None:
        hidden = torch.cat([hidden, pack_latents(process_in(reference)[:, :, 0]).expand(batch, -1, -1)], dim=1)
        shapes.append((1, reference.shape[-2] // 2, reference.shape[-1] // 2))
    with capture_attention(weights, embeds, layout, architecture=QWEN_IMAGE) as theirs, torch.no_grad():
        weights(
            hidden_states=hidden,
            encoder_hidden_states=positive[0][0].expand(batch, -1, -1),
            timestep=torch.full((batch,), SIGMA),
            img_shapes=[shapes] * batch,
            return_dict=False,
        )
    return theirs.records


def _worst_logit(ours, theirs) -> float:
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        assert a.name == b.name
        scores_agree(a, b)
        worst = max(worst, (a.logits - b.logits).abs().max().item())
        torch.testing.assert_close(a.text_mass, b.text_mass, atol=CROSS_BACKEND_ATOL, rtol=0)
    return worst


@needs_capture
def test_cross_backend_agreement_with_diffusers(weights, model, inputs):
    session, _ = _comfy_records(model, inputs)
    worst_logit = _worst_logit(session.records, _diffusers_records(weights, model, inputs))
    assert worst_logit <= CROSS_BACKEND_ATOL
    print(f"\nagreement qwen-image: max |dlogit| = {worst_logit:.2e}")


@needs_capture
@pytest.mark.parametrize("edit_2511", [False, True])
def test_an_edit_models_reference_image_is_skipped_alike_on_both_hosts(inputs, edit_2511):
    """Qwen-Image-Edit: a reference latent (ComfyUI's ReferenceLatent conditioning) follows the
    target on both hosts; the maps cover the target only. Edit-2511 modulates the reference at
    timestep 0 (ComfyUI: ``index_timestep_zero``, diffusers: ``zero_cond_t``), which doubles the
    block's conditioning batch; the text stream takes the real timestep's half."""
    weights = tiny_qwen_image_transformer(seed=3, zero_cond_t=edit_2511)
    model = comfy_qwen_image_from_diffusers(weights)
    assert model.model.diffusion_model.default_ref_method == ("index_timestep_zero" if edit_2511 else "index")
    positive, embeds, layout, latent = inputs
    reference = torch.randn(1, *LATENT[1:], generator=torch.Generator().manual_seed(11))
    with_reference = [[positive[0][0], {**positive[0][1], "reference_latents": [reference]}]]
    session, _ = _comfy_records(model, (with_reference, embeds, layout, latent))
    assert session.records[0].logits.shape == (2, 24, 13)
    assert _worst_logit(session.records, _diffusers_records(weights, model, inputs, reference)) <= CROSS_BACKEND_ATOL


@torch.no_grad()
def test_qwen_image_text_path_encodes_each_expression_as_comfyui_encodes_that_prompt():
    """Expressions through a Qwen-Image CLIP: RefAM's tokens are what ComfyUI's QwenImageTokenizer
    makes of the prompt, less the 34 template tokens its text model crops; each expression's rows
    are what ComfyUI's own caption path gives for that prompt, and Hugging Face's Qwen2.5-VL last
    hidden state of the whole templated prompt from token 34 on (diffusers' pipeline)."""
    from comfy_support import tiny_qwen_image_clip
    from refam.architectures.qwen_image import QWEN_IMAGE_PROMPT, QWEN_IMAGE_TEMPLATE
    from refam.backends.comfy_text import encode_caption, encode_expressions, text_part
    from refam.expression import TokenRole
    from refam.expression.magnets import magnet_plan
    from refam.heatmap import HeatmapOptions
    from refam.pipeline import prepare_expressions

    import_comfy()
    clip, hf = tiny_qwen_image_clip()
    part = text_part(clip)
    assert (part.key, part.pad_length, part.template) == ("qwen25_7b", None, QWEN_IMAGE_TEMPLATE)
    assert part.encoder_prefix == QWEN_IMAGE_PROMPT[0]
    prefix = part.tokenizer(part.encoder_prefix, add_special_tokens=False)["input_ids"]
    assert len(prefix) == 34
    texts = ["the cat on the left", "a red ball"]
    tokenized, _ = prepare_expressions(texts, part.tokenizer, None, MAGNETS, HeatmapOptions(noun_phrase=False), part.template)
    embeds, layout = encode_expressions(clip, tokenized)
    assert layout.lengths == tuple(len(t.ids) for t in tokenized)
    for (start, end), expression in zip(layout.spans, tokenized, strict=True):
        assert expression.roles[-5:] == [TokenRole.EOS] * 5 and TokenRole.EOS not in expression.roles[:-5]
        tokens = clip.tokenize(expression.augmented)
        assert [int(t[0]) for t in tokens["qwen25_7b"][0]] == prefix + expression.ids
        caption = encode_caption(clip, expression.augmented, guidance=None)[0][0]
        assert caption.shape[1] == len(expression.ids)  # ComfyUI cropped its template's 34 tokens
        torch.testing.assert_close(embeds[:, start:end], caption.float(), atol=1e-5, rtol=0)
        reference = hf(torch.tensor([prefix + expression.ids])).last_hidden_state[:, len(prefix) :]
        # ComfyUI runs its text encoder in float16 on the CPU, transformers in float32: rounding of
        # ~1e-3 on final-norm outputs up to ~4 (one token off, or no system turn, moves them by 2 to 4).
        torch.testing.assert_close(embeds[:, start:end], reference, atol=5e-3, rtol=0)
    # Table 5's random vectors go in as embeddings in place of their placeholder tokens.
    plan = magnet_plan("random_vectors", MAGNETS, seed=4)
    vectors, _ = prepare_expressions(texts, part.tokenizer, None, plan, HeatmapOptions(noun_phrase=False), part.template)
    with_vectors, same_layout = encode_expressions(clip, vectors)
    assert same_layout == layout
    moved = (with_vectors - embeds).abs().amax(dim=-1)[0]
    first = layout.spans[0][0]
    positions = vectors[0].vector_positions
    assert moved[first : first + min(positions)].max() == 0  # causal: the expression's own tokens keep their states
    assert moved[first + min(positions)] > 0.1
