"""ComfyUI FLUX backend against a real ComfyUI checkout (skipped without ``COMFYUI_PATH``).

The models are ComfyUI's own FLUX (``comfy.supported_models.Flux`` with a small unet_config)
carrying the weights of a tiny diffusers FLUX, so the diffusers backend can be run on the same
weights for the cross-backend comparison.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from comfy_support import (
    comfy_flux_from_diffusers,
    comfy_vae_from_diffusers,
    import_comfy,
    interrupt_exception,
    scores_agree,
    tiny_flux_clip,
    tiny_vae_for_comfy,
)
from tiny_models import tiny_flux_transformer

pytestmark = pytest.mark.comfyui

# float32 end to end; the two backends differ only in op order (fused vs separate q/k/v
# projections, RoPE arithmetic), which moves logits by ~1e-6.
CROSS_BACKEND_ATOL = 1e-4


@pytest.fixture(scope="module")
def comfy():
    import_comfy()
    import comfy.model_management

    return comfy


@pytest.fixture(scope="module")
def weights(comfy):
    transformer = tiny_flux_transformer(seed=3, guidance_embeds=True)
    vae = tiny_vae_for_comfy(seed=4)
    return transformer, vae


@pytest.fixture(scope="module")
def model(weights):
    return comfy_flux_from_diffusers(weights[0])


@pytest.fixture(scope="module")
def vae(weights):
    return comfy_vae_from_diffusers(weights[1])


@pytest.fixture(scope="module")
def inputs():
    rng = torch.Generator().manual_seed(7)
    positive = [[torch.randn(1, 11, 32, generator=rng), {"pooled_output": torch.randn(1, 32, generator=rng), "guidance": 3.5}]]
    from refam.attention import ExpressionLayout

    embeds = torch.randn(1, 13, 32, generator=rng)
    image = (np.random.default_rng(0).random((2, 75, 101, 3)) * 255).astype(np.uint8)
    return positive, embeds, ExpressionLayout((6, 7)), image


def _latent(vae, image):
    from refam.images import to_model_pixels

    pixels = to_model_pixels(image, (64, 96)).add_(1).mul_(0.5).permute(0, 2, 3, 1)
    return vae.encode(pixels).float()


def test_denoiser_output_bit_identical_and_original_untouched(model, vae, inputs):
    from refam.backends.comfy_capture import ComfyCapture, denoise_once
    from refam.noise import capture_noise

    positive, embeds, layout, image = inputs
    latent = _latent(vae, image)
    noise = capture_noise(latent.shape, 5).contiguous()
    options_before = copy.deepcopy(model.model_options)

    plain = denoise_once(model, latent, positive, 0.6, noise)
    session = ComfyCapture(model, embeds, layout)
    patched = session.patched_model()
    captured = denoise_once(patched, latent, positive, 0.6, noise)

    assert torch.equal(plain, captured)
    assert len(session.records) == 4  # every block ran its branch
    assert model.model_options == options_before
    assert "dit" not in model.model_options.get("transformer_options", {}).get("patches_replace", {})
    assert not model.wrappers


def test_existing_patch_on_same_block_is_chained(model, vae, inputs):
    from refam.backends.comfy_capture import ComfyCapture, denoise_once
    from refam.noise import capture_noise

    positive, embeds, layout, image = inputs
    latent = _latent(vae, image)
    noise = capture_noise(latent.shape, 5).contiguous()
    calls = []

    def scale_img(args, extra):
        calls.append(1)
        out = extra["original_block"](args)
        out["img"] = out["img"] * 0.5
        return out

    other = model.clone()
    other.set_model_patch_replace(scale_img, "dit", "double_block", 0)
    expected = denoise_once(other, latent, positive, 0.6, noise)
    n_plain = len(calls)
    session = ComfyCapture(other, embeds, layout)
    got = denoise_once(session.patched_model(), latent, positive, 0.6, noise)
    assert torch.equal(expected, got)
    assert len(calls) == 2 * n_plain  # the user's patch still ran under ours


def test_maps_equal_independent_recomputation(model, vae, inputs):
    """double.0 maps recomputed here from the block's weights, outside the backend's code."""
    from comfy.ldm.flux.layers import timestep_embedding

    from refam.backends.comfy_flux import capture_flux

    positive, embeds, layout, image = inputs
    captured = capture_flux(
        model, vae, image, positive, embeds, layout, [None, None], sigma=0.6, seed=5, blocks=[0], resolution=None
    )
    assert [b.name for b in captured.blocks] == ["double.0"]

    from refam.images import model_size, to_model_pixels
    from refam.noise import capture_noise

    dm = model.model.diffusion_model
    size = model_size(image.shape[1:3], None, 16)
    latent = vae.encode(to_model_pixels(image, size).add_(1).mul_(0.5).permute(0, 2, 3, 1)).float()
    fmt = model.model.latent_format
    x = 0.4 * fmt.process_in(latent) + 0.6 * capture_noise(latent.shape, 5)
    with torch.no_grad():
        b, c, h, w = x.shape
        img = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * 4)
        img = dm.img_in(img)
        t = torch.full((b,), 0.6)
        vec = dm.time_in(timestep_embedding(t, 256)) + dm.guidance_in(timestep_embedding(torch.full((b,), 3.5), 256))
        pooled = positive[0][1]["pooled_output"].expand(b, -1)
        # the image stream sees the caption's pooled vector; the branch ConceptAttention's zero one
        image_vec, branch_vec = vec + dm.vector_in(pooled), vec + dm.vector_in(torch.zeros_like(pooled))
        block = dm.double_blocks[0]
        heads = block.num_heads

        def stream_qk(x_in, stream_vec, mod_lin, qkv, qk_norm):
            shift, scale = mod_lin(torch.nn.functional.silu(stream_vec)[:, None]).chunk(6, dim=-1)[:2]
            y = torch.nn.functional.layer_norm(x_in, (x_in.shape[-1],), eps=1e-6) * (1 + scale) + shift
            q, k, _v = qkv(y).view(b, y.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)
            rms = lambda z, s: z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6) * s  # noqa: E731
            return rms(q, qk_norm.query_norm.scale), rms(k, qk_norm.key_norm.scale)

        q_img, _ = stream_qk(img, image_vec, block.img_mod.lin, block.img_attn.qkv, block.img_attn.norm)
        expr = dm.txt_in(embeds.expand(b, -1, -1))
        q_expr, k_expr = stream_qk(expr, branch_vec, block.txt_mod.lin, block.txt_attn.qkv, block.txt_attn.norm)
        # RoPE on the image queries: positions (0, row, col), FLUX's axes split.
        gh, gw = h // 2, w // 2
        ids = torch.stack(
            torch.meshgrid(torch.zeros(1), torch.arange(gh).float(), torch.arange(gw).float(), indexing="ij"), -1
        ).reshape(-1, 3)
        dims = dm.params.axes_dim
        angles = []
        for axis, d in enumerate(dims):
            omega = 1.0 / (dm.params.theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
            angles.append(ids[:, axis : axis + 1].double() * omega[None])
        ang = torch.cat(angles, -1).float()  # [N, Dh/2]
        q_pairs = q_img.float().reshape(*q_img.shape[:-1], -1, 2)
        cos, sin = ang.cos(), ang.sin()
        rotated = torch.stack(
            [q_pairs[..., 0] * cos - q_pairs[..., 1] * sin, q_pairs[..., 0] * sin + q_pairs[..., 1] * cos], -1
        ).reshape(q_img.shape)
        logits = (rotated @ k_expr.float().transpose(-1, -2) / math.sqrt(rotated.shape[-1])).mean(1)
        concept = torch.einsum("bhnd,bhld->bnl", q_img.float(), q_expr.float())  # before RoPE, heads summed
    torch.testing.assert_close(captured.blocks[0].logits, logits, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(captured.blocks[0].scores["concept_attention"], concept, atol=1e-4, rtol=1e-4)


def test_cross_backend_agreement_with_diffusers(weights, model, vae, inputs):
    from refam.backends.comfy_flux import capture_flux
    from refam.backends.diffusers_flux import DiffusersFlux

    transformer, dvae = weights
    positive, embeds, layout, image = inputs
    comfy_maps = capture_flux(
        model, vae, image, positive, embeds, layout, [None, None], sigma=0.75, seed=9, resolution=80
    )
    backend = DiffusersFlux(transformer=transformer, vae=dvae, t5=torch.nn.Identity(), t5_tokenizer=None, clip=None, clip_tokenizer=None)
    diff_maps = backend.capture_encoded(
        image,
        [None, None],
        positive[0][0],
        positive[0][1]["pooled_output"],
        embeds,
        layout,
        sigma=0.75,
        seed=9,
        guidance=3.5,
        resolution=80,
    )
    assert comfy_maps.geometry == diff_maps.geometry
    assert [b.name for b in comfy_maps.blocks] == [b.name for b in diff_maps.blocks]
    worst = 0.0
    for a, b in zip(comfy_maps.blocks, diff_maps.blocks, strict=True):
        worst = max(worst, *scores_agree(a, b))
        torch.testing.assert_close(a.text_mass, b.text_mass, atol=CROSS_BACKEND_ATOL, rtol=0)
    print(f"cross-backend max relative |Δscore| (all scores) = {worst:.2e}")


def test_early_stop_and_block_selection(model, vae, inputs):
    from refam.backends.comfy_flux import capture_flux

    positive, embeds, layout, image = inputs
    full = capture_flux(model, vae, image, positive, embeds, layout, [None, None], sigma=0.5, seed=1, resolution=64)
    part = capture_flux(
        model, vae, image, positive, embeds, layout, [None, None], sigma=0.5, seed=1, resolution=64, blocks=["double"]
    )
    assert [b.name for b in part.blocks] == ["double.0", "double.1"]
    for a, b in zip(full.blocks[:2], part.blocks, strict=True):
        assert torch.equal(a.logits, b.logits)


def test_interrupted_run_leaves_nothing_behind(comfy, model, vae, inputs):
    import comfy.model_management as mm

    from refam.backends.comfy_flux import capture_flux

    positive, embeds, layout, image = inputs
    before = copy.deepcopy(model.model_options)
    reference = capture_flux(model, vae, image, positive, embeds, layout, [None, None], sigma=0.5, seed=1, resolution=64)
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(interrupt_exception()):
            capture_flux(model, vae, image, positive, embeds, layout, [None, None], sigma=0.5, seed=1, resolution=64)
    finally:
        mm.interrupt_current_processing(False)
    assert model.model_options == before
    assert not model.wrappers
    again = capture_flux(model, vae, image, positive, embeds, layout, [None, None], sigma=0.5, seed=1, resolution=64)
    for a, b in zip(reference.blocks, again.blocks, strict=True):
        assert torch.equal(a.logits, b.logits)


def test_not_flux_model_is_named(comfy):
    import comfy.model_patcher

    from refam.backends.comfy_flux import flux_diffusion_model

    class SomeUNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.diffusion_model = torch.nn.Linear(2, 2)

    patcher = comfy.model_patcher.ModelPatcher(SomeUNet(), load_device=torch.device("cpu"), offload_device=torch.device("cpu"))
    with pytest.raises(TypeError, match="got Linear"):
        flux_diffusion_model(patcher)


def test_comfy_text_path(comfy):
    """Expressions through ComfyUI's CLIP: RefAM's own token ids, padding as ComfyUI pads captions."""
    from refam.backends.comfy_text import encode_caption, encode_expressions, text_pad_length, text_tokenizer
    from refam.expression import tokenize_expression

    clip, _t5 = tiny_flux_clip()
    tokenizer, pad = text_tokenizer(clip), text_pad_length(clip)
    assert pad == 256
    texts = ["the cat on the left", "a (red:1.2) ball"]
    tokenized = [tokenize_expression(t, tokenizer, max_length=pad, pad_to=pad) for t in texts]
    assert "1.2" in tokenized[1].pieces  # weight syntax is text here
    embeds, layout = encode_expressions(clip, tokenized)
    assert layout.lengths == tuple(t.valid_length for t in tokenized)
    alone, _ = encode_expressions(clip, tokenized[1:])
    start = layout.spans[1][0]
    torch.testing.assert_close(embeds[0, start:], alone[0], atol=1e-5, rtol=0)
    cond = encode_caption(clip, "", 2.5)
    assert cond[0][0].shape[1] == 256 and cond[0][1]["guidance"] == 2.5


@torch.no_grad()
def test_vector_magnets_through_comfyui_equal_the_diffusers_encoding(comfy, weights):
    """Table 5's random-vector magnets: ComfyUI's CLIP takes them as embeddings in place of their
    placeholder tokens and gives what the diffusers path gives with the same T5 weights."""
    from refam.backends.comfy_text import encode_expressions, text_pad_length, text_tokenizer
    from refam.backends.diffusers_flux import DiffusersFlux
    from refam.expression import DEFAULT_MAGNETS
    from refam.expression.magnets import magnet_plan
    from refam.heatmap import HeatmapOptions
    from refam.pipeline import prepare_expressions

    clip, t5 = tiny_flux_clip()
    tokenizer, pad = text_tokenizer(clip), text_pad_length(clip)
    plan = magnet_plan("random_vectors", DEFAULT_MAGNETS, seed=4)
    tokenized, _ = prepare_expressions(["the cat", "a red ball"], tokenizer, pad, plan, HeatmapOptions(noun_phrase=False))
    ours, layout = encode_expressions(clip, tokenized)
    twin = DiffusersFlux(transformer=weights[0], vae=weights[1], t5=t5, t5_tokenizer=tokenizer, clip=None, clip_tokenizer=None)
    theirs, their_layout = twin.encode_expressions(tokenized)
    assert layout == their_layout
    # ComfyUI's T5 and transformers' differ by float rounding even on plain token ids (~2e-3 on
    # values ~2 with these weights); the vectors may add nothing to that.
    plain = [dataclasses.replace(t, vector_magnets=0) for t in tokenized]
    placeholders, _ = encode_expressions(clip, plain)
    baseline = (placeholders - twin.encode_expressions(plain)[0].float()).abs().max().item()
    deviation = (ours - theirs.float()).abs().max().item()
    assert deviation <= 1.5 * baseline + 1e-5, (deviation, baseline)
    assert (ours - placeholders).abs().max().item() > 50 * baseline  # the vectors were encoded, not the placeholders


def test_several_expressions_share_one_forward(model, vae, inputs):
    from comfy.patcher_extension import WrappersMP

    from refam.backends.comfy_flux import capture_flux

    positive, embeds, layout, image = inputs
    calls = []

    def count(executor, *args, **kwargs):
        calls.append(args[0].shape[0])
        return executor(*args, **kwargs)

    counted = model.clone()
    counted.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "count", count)
    captured = capture_flux(counted, vae, image, positive, embeds, layout, [None, None], sigma=0.5, seed=1, resolution=64)
    assert calls == [2]  # one forward for the 2-image batch and both expressions
    assert captured.blocks[0].logits.shape[-1] == layout.total


def test_only_positive_rows_feed_the_branch():
    """ComfyUI stacks cond/uncond chunks in one batch; the branch takes the positive ones only."""
    from refam.backends.comfy_capture import positive_rows as _positive_rows

    assert _positive_rows(None, 4) is None
    assert _positive_rows([0], 3) is None
    assert _positive_rows([1, 0], 4).tolist() == [2, 3]
    assert _positive_rows([0, 1], 6).tolist() == [0, 1, 2]


class _SpaceToDepthComfyVAE:
    """The toy's fixed latent mapping behind ComfyUI's VAE interface. ComfyUI's FLUX MODEL applies
    FLUX's latent scale/shift to whatever the VAE returns, so the inverse is applied here: the
    diffusion model then sees exactly the toy's latents, as in the diffusers backend."""

    downscale_ratio = 2

    def __init__(self, latent_format) -> None:
        from refam.toy.model import SpaceToDepthCodec

        self.codec = SpaceToDepthCodec(self.downscale_ratio)
        self.scale, self.shift = latent_format.scale_factor, latent_format.shift_factor

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        latent = self.codec.encode(pixels.permute(0, 3, 1, 2) * 2 - 1)
        return latent / self.scale + self.shift


def test_toy_weights_in_comfy_layout_agree_with_diffusers(comfy):
    """The trained toy model converted to ComfyUI's FLUX layout: the same maps as the diffusers
    backend and, through the same heatmap code, the same points — on the named objects."""
    from refam.backends.comfy_flux import capture_flux
    from refam.options import RefAMOptions
    from refam.pipeline import RefAMPipeline, expression_heatmaps
    from refam.prompts import choose_points
    from refam.toy import scenes
    from refam.toy.model import load_toy, weights_for

    backend = load_toy(weights_for("v1"))  # renders v1 scenes
    pipe = RefAMPipeline(backend, options=RefAMOptions(sigma=backend.default_sigma, resolution=48))
    model = comfy_flux_from_diffusers(backend.transformer)
    vae = _SpaceToDepthComfyVAE(model.model.latent_format)
    examples = scenes.make_eval_set(scenes.EVAL_SEED, 6, kinds=("colour",))
    worst, hits = 0.0, 0
    for i, ex in enumerate(examples):
        image = scenes.render(ex.scene)[None]
        caption = scenes.caption(ex.scene, np.random.default_rng(i))
        expressions, cues = pipe.tokenize(ex.referral.text)
        prompt_embeds, pooled = backend.encode_caption(caption)
        expr_embeds, layout = backend.encode_expressions(expressions)
        kwargs = dict(sigma=pipe.resolved().sigma, seed=0, resolution=48)
        ours = backend.capture_encoded(image, expressions, prompt_embeds, pooled, expr_embeds, layout, **kwargs)
        positive = [[prompt_embeds, {"pooled_output": pooled}]]
        theirs = capture_flux(model, vae, image, positive, expr_embeds, layout, expressions, **kwargs)
        assert theirs.geometry == ours.geometry
        for a, b in zip(theirs.blocks, ours.blocks, strict=True):
            worst = max(worst, *scores_agree(a, b))
        points = [
            choose_points(heat.grid[0], captured.geometry)[0]
            for captured in (ours, theirs)
            for heat in expression_heatmaps(captured, cues, pipe.resolved().heatmap)
        ]
        assert (points[0].x, points[0].y) == (points[1].x, points[1].y)
        assert points[0].score == pytest.approx(points[1].score, abs=1e-5)
        hits += bool(scenes.masks(ex.scene)[ex.referral.target][int(points[1].y), int(points[1].x)])
    print(f"toy weights, ComfyUI vs diffusers: max relative |Δscore| = {worst:.2e}, {hits}/{len(examples)} points on the named object")
    assert hits >= 4


class _PreferredAttention(torch.nn.Module):
    """Stands for the newer cores' ``ComfyAttention``: a layer's preferred attention function."""

    def __init__(self, function=None) -> None:
        super().__init__()
        self.config = None
        self.function = function


def _newer_core_dispatch(func, q, k, v, heads, preferred=None, transformer_options=None):
    """How newer cores route a layer's attention call (``wrap_attn``), re-implemented here: an
    installed override first (handed ``func``), else the layer's preferred function, else ``func``."""
    options = transformer_options or {}
    override = options.get("optimized_attention_override")
    if override is not None:
        return override(func, q, k, v, heads, transformer_options=options)
    if preferred is not None and preferred.function is not None:
        return preferred.function(q, k, v, heads, transformer_options=options)
    return func(q, k, v, heads, transformer_options=options)


def _default_attention(q, k, v, heads, **kwargs):
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v


def _marking_attention(q, k, v, heads, **kwargs):
    # e.g. the int8 kernel a quantized checkpoint asks for: its output differs from the default's
    return _default_attention(q, k, v, heads) + 1000.0


def test_attention_reader_runs_what_the_core_would_have_run(comfy, monkeypatch):
    """The capture calls exactly what ComfyUI calls without it and reads q/k/v and the output: the layer's
    preferred attention on newer cores (which consult an override before it), an override another
    pack installed, else the default."""
    import comfy.ldm.modules.attention as attention

    from refam.backends.comfy_capture import attention_reader, preferred_attention

    monkeypatch.setattr(attention, "ComfyAttention", _PreferredAttention, raising=False)
    layer = torch.nn.Module()
    layer.attn = torch.nn.Module()
    layer.attn.comfy_attention = _PreferredAttention(_marking_attention)
    q, k, v = torch.randn(3, 1, 2, 5, 8).unbind(0)
    seen = []

    def keep(*qkv_out):
        seen.append(qkv_out)

    preferred = preferred_attention(layer)
    assert preferred is _marking_attention
    without = _newer_core_dispatch(_default_attention, q, k, v, 2, layer.attn.comfy_attention)
    reader = attention_reader(None, keep, preferred)
    with_refam = _newer_core_dispatch(
        _default_attention, q, k, v, 2, layer.attn.comfy_attention, {"optimized_attention_override": reader}
    )
    assert torch.equal(without, with_refam) and (without > 500).all()
    assert seen and all(a is b for a, b in zip(seen[0][:3], (q, k, v), strict=True))
    assert torch.equal(seen[0][3], with_refam)  # the call's output, read for the output space

    def users_override(func, *args, **kwargs):  # another pack's override wins over the preference
        return func(*args, **kwargs) * 2

    options = {"optimized_attention_override": users_override}
    without = _newer_core_dispatch(_default_attention, q, k, v, 2, layer.attn.comfy_attention, options)
    chained = {"optimized_attention_override": attention_reader(users_override, keep, preferred)}
    assert torch.equal(without, _newer_core_dispatch(_default_attention, q, k, v, 2, layer.attn.comfy_attention, chained))

    plain = torch.nn.Module()
    plain.attn = torch.nn.Module()
    plain.attn.comfy_attention = _PreferredAttention(None)  # a layer with no preference
    assert preferred_attention(plain) is None
    layer.other = torch.nn.Module()
    layer.other.comfy_attention = _PreferredAttention(_default_attention)
    with pytest.raises(NotImplementedError, match="2 different attention functions"):
        preferred_attention(layer)


def test_cores_without_preferences_run_the_default(comfy, monkeypatch):
    """Without ``ComfyAttention`` the core never calls a preference, so neither does the capture."""
    import comfy.ldm.modules.attention as attention

    from refam.backends.comfy_capture import preferred_attention

    monkeypatch.delattr(attention, "ComfyAttention", raising=False)
    layer = torch.nn.Module()
    layer.comfy_attention = _PreferredAttention(_marking_attention)
    assert preferred_attention(layer) is None


def test_capture_session_uses_each_blocks_preference(comfy, model, inputs, monkeypatch):
    import comfy.ldm.modules.attention as attention

    from refam.backends.comfy_capture import ComfyCapture

    positive, embeds, layout, image = inputs
    monkeypatch.setattr(attention, "ComfyAttention", _PreferredAttention, raising=False)
    block = model.model.diffusion_model.single_blocks[0]
    block.comfy_attention = _PreferredAttention(_marking_attention)
    try:
        session = ComfyCapture(model, embeds, layout)
        assert session._preferred == [None, None, _marking_attention, None]
    finally:
        del block.comfy_attention


class _WorkMustNotRun:
    downscale_ratio = 8

    def encode(self, pixels):
        raise AssertionError("the VAE ran before the unsupported model was named")


def test_unsupported_flux_variants_are_named_before_any_work(comfy, weights, inputs):
    """A block layout the adapters do not know gets a clear error naming it, before the VAE or
    the model runs."""
    from refam.backends.comfy_flux import capture_flux

    positive, embeds, layout, image = inputs
    foreign = comfy_flux_from_diffusers(weights[0])
    del foreign.model.diffusion_model.double_blocks[1].txt_mod
    cases = [(foreign, "double block 1 has no txt_mod")]
    for model, named in cases:
        with pytest.raises(NotImplementedError, match=named) as err:
            capture_flux(model, _WorkMustNotRun(), image, positive, embeds, layout, [None, None], resolution=64)
        assert "support is planned" in str(err.value)
    print(f"unsupported variants named: {[named for _, named in cases]}")


def test_expression_padding_matches_the_diffusers_backend(comfy, weights, model, vae):
    """The same FLUX pads its expressions to the same T5 length on both backends: dev 512, schnell 256."""
    from refam.backends.comfy_flux import ComfyFlux
    from refam.backends.diffusers_flux import DiffusersFlux

    clip, _t5 = tiny_flux_clip()
    schnell_weights = tiny_flux_transformer(seed=3, guidance_embeds=False)
    for transformer, comfy_model, expected in (
        (weights[0], model, 512),
        (schnell_weights, comfy_flux_from_diffusers(schnell_weights), 256),
    ):
        ours = ComfyFlux(comfy_model, clip, vae)
        theirs = DiffusersFlux(
            transformer=transformer, vae=weights[1], t5=torch.nn.Identity(), t5_tokenizer=None, clip=None, clip_tokenizer=None
        )
        assert ours.operating_point == theirs.operating_point
        assert ours.text_pad_length == theirs.text_pad_length == expected


# RF-inversion compounds the backends' ~1e-6 logit differences over every step of both stages.
INVERSION_ATOL = 1e-3


def _diffusers_twin(weights):
    from refam.backends.diffusers_flux import DiffusersFlux

    transformer, dvae = weights
    return DiffusersFlux(transformer=transformer, vae=dvae, t5=torch.nn.Identity(), t5_tokenizer=None, clip=None, clip_tokenizer=None)


@pytest.mark.parametrize(
    "features",
    [
        {"mode": "inversion", "inversion_steps": 4, "gamma": 0.5, "eta": 0.9, "eta_stop": 0.5, "collect_steps": (0, 2, 3)},
        {"sigmas": (0.4, 0.9)},
    ],
    ids=["inversion", "sigmas"],
)
def test_feature_modes_agree_with_diffusers(weights, model, vae, inputs, features):
    from refam.backends.comfy_flux import capture_flux
    from refam.features import FeatureOptions

    positive, embeds, layout, image = inputs
    options = FeatureOptions(**features)
    comfy_maps = capture_flux(
        model, vae, image, positive, embeds, layout, [None, None], sigma=0.75, seed=9, resolution=80, features=options
    )
    diff_maps = _diffusers_twin(weights).capture_encoded(
        image, [None, None], positive[0][0], positive[0][1]["pooled_output"], embeds, layout,
        sigma=0.75, seed=9, guidance=3.5, resolution=80, features=options,
    )  # fmt: skip
    assert comfy_maps.meta["features"] == diff_maps.meta["features"]
    worst = 0.0
    for a, b in zip(comfy_maps.blocks, diff_maps.blocks, strict=True):
        worst = max(worst, *scores_agree(a, b, tolerance=INVERSION_ATOL))
        torch.testing.assert_close(a.text_mass, b.text_mass, atol=INVERSION_ATOL, rtol=0)
    print(f"{options.mode} {features}: cross-backend max relative |Δscore| = {worst:.2e}")


def test_inversion_trajectory_is_the_same_with_and_without_the_capture(model, vae, inputs):
    from refam.backends.comfy_capture import ComfyCapture
    from refam.backends.comfy_flow import run_inversion
    from refam.features import FeatureOptions, PassAverage
    from refam.flow import denoising_sigmas
    from refam.noise import capture_noise

    positive, embeds, layout, image = inputs
    latent = _latent(vae, image)
    target = capture_noise(latent.shape, 2).contiguous()
    features = FeatureOptions(mode="inversion", inversion_steps=3)
    outs = []
    for collect in ((), (0,), None):  # nothing captured, one step, every step
        session = ComfyCapture(model, embeds, layout, keep_output=True)
        average = PassAverage(layout)
        run = dict(average=average, collect=collect)
        outs.append(run_inversion(session, latent, positive, denoising_sigmas(3), features, target, **run))
        assert average.passes == len(features.collected_steps() if collect is None else collect)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    assert not model.wrappers


def test_interrupted_inversion_leaves_nothing_behind(comfy, model, vae, inputs):
    import comfy.model_management as mm

    from refam.backends.comfy_flux import capture_flux
    from refam.features import FeatureOptions

    positive, embeds, layout, image = inputs
    features = FeatureOptions(mode="inversion", inversion_steps=3)
    run = dict(sigma=0.5, seed=1, resolution=64, features=features)
    before = copy.deepcopy(model.model_options)
    reference = capture_flux(model, vae, image, positive, embeds, layout, [None, None], **run)
    steps_seen = []

    def interrupt_midway(done, total):
        steps_seen.append(done)
        if done == 4:  # inversion finished, first denoising step done
            mm.interrupt_current_processing(True)

    try:
        with pytest.raises(interrupt_exception()):
            capture_flux(model, vae, image, positive, embeds, layout, [None, None], progress=interrupt_midway, **run)
    finally:
        mm.interrupt_current_processing(False)
    assert steps_seen == [1, 2, 3, 4]
    assert model.model_options == before
    assert not model.wrappers
    again = capture_flux(model, vae, image, positive, embeds, layout, [None, None], **run)
    for a, b in zip(reference.blocks, again.blocks, strict=True):
        assert torch.equal(a.logits, b.logits)


@torch.no_grad()
def test_kontext_reference_tokens_agree_with_diffusers_and_stay_out_of_the_maps(weights, model, inputs):
    """FLUX.1 Kontext: a reference latent in the conditioning (ComfyUI's ReferenceLatent) appends
    its tokens after the target's (time coordinate 1); both backends read the maps of the target's
    tokens only and agree on them."""
    from refam.architectures.flux import FLUX1, latent_image_ids, pack_latents
    from refam.backends.comfy_capture import ComfyCapture, denoise_once
    from refam.backends.diffusers_capture import capture_attention
    from refam.noise import capture_noise

    positive, embeds, layout, _image = inputs
    sigma, rng = 0.75, torch.Generator().manual_seed(11)
    latent = torch.randn(2, 4, 6, 8, generator=rng)  # 2x2 patches: a 3x4 token grid
    reference = torch.randn(1, 4, 6, 8, generator=rng)
    cond, extra = positive[0]
    kontext = [[cond, {**extra, "reference_latents": [reference]}]]
    session = ComfyCapture(model, embeds, layout)
    noise = capture_noise(latent.shape, 5).contiguous()
    captured = denoise_once(session.patched_model(), latent, kontext, sigma, noise)
    assert torch.equal(captured, denoise_once(model, latent, kontext, sigma, noise))  # the denoiser is untouched

    transformer = weights[0]
    process_in = model.model.latent_format.process_in
    noisy = (1 - sigma) * process_in(latent) + sigma * noise
    grid = (3, 4)
    ref_ids = latent_image_ids(*grid)
    ref_ids[:, 0] = 1
    packed_ref = pack_latents(process_in(reference)).expand(2, -1, -1)
    pooled = extra["pooled_output"].expand(2, -1)
    shift = FLUX1.diffusers_pooled_shift(transformer, pooled, "zero")  # as ComfyCapture's default branch
    forward = dict(
        hidden_states=torch.cat([pack_latents(noisy), packed_ref], dim=1),
        encoder_hidden_states=cond.expand(2, -1, -1),
        pooled_projections=pooled,
        guidance=torch.full((2,), 3.5),
        timestep=torch.full((2,), sigma),
        img_ids=torch.cat([latent_image_ids(*grid), ref_ids]),
        txt_ids=torch.zeros(cond.shape[1], 3),
        return_dict=False,
    )
    with capture_attention(transformer, embeds, layout, architecture=FLUX1, vec_shift=shift) as theirs:
        with_branch = transformer(**forward)[0]
    assert torch.equal(with_branch, transformer(**forward)[0])
    worst = 0.0
    for a, b in zip(session.records, theirs.records, strict=True):
        assert a.logits.shape == b.logits.shape == (2, grid[0] * grid[1], layout.total)  # the target only
        scores_agree(a, b)
        worst = max(worst, (a.logits - b.logits).abs().max().item())
    assert worst <= CROSS_BACKEND_ATOL
    print(f"\nagreement flux1-kontext: max |dlogit| = {worst:.2e}")
