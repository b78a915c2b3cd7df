"""The diffusers FLUX capture: invisible to the denoiser, exact against independent math."""

from __future__ import annotations

import math

import pytest
import torch

from refam.architectures.flux import FLUX1
from refam.attention import ExpressionLayout
from refam.backends.diffusers_capture import capture_attention, run_until_captured
from tiny_models import random_expressions, tiny_flux_transformer

T_CAP, GRID_H, GRID_W = 5, 3, 4
N_IMG = GRID_H * GRID_W


def _inputs(model, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    img_ids = torch.zeros(N_IMG, 3)
    img_ids[:, 1] = torch.arange(GRID_H).repeat_interleave(GRID_W)
    img_ids[:, 2] = torch.arange(GRID_W).repeat(GRID_H)
    return dict(
        hidden_states=torch.randn(batch, N_IMG, cfg.in_channels, generator=g),
        encoder_hidden_states=torch.randn(batch, T_CAP, cfg.joint_attention_dim, generator=g),
        pooled_projections=torch.randn(batch, cfg.pooled_projection_dim, generator=g),
        timestep=torch.full((batch,), 0.75),
        img_ids=img_ids,
        txt_ids=torch.zeros(T_CAP, 3),
        return_dict=False,
    )


@pytest.fixture(scope="module")
def model():
    return tiny_flux_transformer(seed=3)



@torch.no_grad()
def test_denoiser_output_bit_identical_with_capture(model):
    inputs = _inputs(model)
    plain = model(**inputs)[0]
    embeds, layout = random_expressions(model)
    with capture_attention(model, embeds, layout) as cap:
        captured = model(**inputs)[0]
    assert torch.equal(plain, captured)
    assert [r.name for r in cap.records] == ["double.0", "double.1", "single.0", "single.1"]
    assert cap.records[0].logits.shape == (2, N_IMG, 7)
    assert cap.records[0].logits.dtype == torch.float32 and cap.records[0].logits.device.type == "cpu"


@torch.no_grad()
def test_hooks_removed_after_exception(model):
    """A run interrupted mid-forward (a user cancel, an OOM) leaves the model as it was."""

    class Interrupted(Exception):
        pass

    def interrupt(*_args):
        raise Interrupted

    embeds, layout = random_expressions(model)
    trap = model.single_transformer_blocks[0].register_forward_pre_hook(interrupt)
    try:
        with pytest.raises(Interrupted), capture_attention(model, embeds, layout):
            model(**_inputs(model))
    finally:
        trap.remove()
    modules = [model, *(m for _, b in FLUX1.diffusers_blocks(model) for m in b.modules())]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)


@torch.no_grad()
def test_early_stop_records_only_selected_blocks(model):
    embeds, layout = random_expressions(model)
    with capture_attention(model, embeds, layout, blocks=[1], stop_after_last=True) as cap:
        out = run_until_captured(model, **_inputs(model))
    assert out is None
    assert [r.name for r in cap.records] == ["double.1"]
    with capture_attention(model, embeds, layout) as full:
        model(**_inputs(model))
    torch.testing.assert_close(cap.records[0].logits, full.records[1].logits, rtol=0, atol=0)


def _joint_mask(layout: ExpressionLayout, t_cap: int, n_img: int) -> torch.Tensor:
    """[S, S] for sequence [caption ; expressions ; image]: True = may attend."""
    n_e = layout.total
    s = t_cap + n_e + n_img
    allowed = torch.ones(s, s, dtype=torch.bool)
    e = slice(t_cap, t_cap + n_e)
    allowed[:, e] = False  # nobody sees the expressions ...
    allowed[e, :t_cap] = False  # ... and the expressions do not see the caption
    allowed[e, e] = layout.text_mask()  # each expression sees itself
    return allowed


def _masked_reference_run(model, inputs, embeds, layout):
    """The model run with the expressions appended to the caption and a mask hiding them from the
    image and caption tokens; every block's q/k (QK-normed, before RoPE) recorded by hooks on the
    attention's own norms, independently of the capture's code."""
    batch = inputs["hidden_states"].shape[0]
    ref_inputs = dict(inputs)
    ref_inputs["encoder_hidden_states"] = torch.cat(
        [inputs["encoder_hidden_states"], embeds.expand(batch, -1, -1)], dim=1
    )
    ref_inputs["txt_ids"] = torch.zeros(T_CAP + layout.total, 3)
    mask = _joint_mask(layout, T_CAP, N_IMG)
    ref_inputs["joint_attention_kwargs"] = {"attention_mask": mask[None, None].expand(batch, 1, -1, -1)}
    seen: dict[str, dict[str, torch.Tensor]] = {}
    hooks = []
    for name, block in FLUX1.diffusers_blocks(model):
        slot = seen.setdefault(name, {})
        for part in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            if hasattr(block.attn, part):
                hooks.append(
                    getattr(block.attn, part).register_forward_hook(
                        lambda _m, _i, o, slot=slot, part=part: slot.__setitem__(part, o)
                    )
                )
        # the attention outputs before their projections: a double block projects the image's
        # (to_out) and the text's (to_add_out) apart, a single block [attention; MLP] of all tokens
        outputs = (
            {"out_image": block.attn.to_out[0], "out_text": block.attn.to_add_out}
            if name.startswith("double")
            else {"out_all": block.proj_out}
        )
        for part, module in outputs.items():
            hooks.append(
                module.register_forward_pre_hook(
                    lambda _m, i, slot=slot, part=part: slot.__setitem__(part, i[0])
                )
            )
    try:
        reference = model(**ref_inputs)[0]
    finally:
        for h in hooks:
            h.remove()
    return reference, seen, ref_inputs, mask


def _query_vectors(seen: dict, name: str, n_expr: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and expression queries of one block of the reference run, ``[B, H, tokens, Dh]``."""
    t_all = T_CAP + n_expr
    slot = seen[name]
    if name.startswith("double"):
        image, expr = slot["norm_q"], slot["norm_added_q"][:, T_CAP:]
    else:
        image, expr = slot["norm_q"][:, t_all:], slot["norm_q"][:, T_CAP:t_all]
    return image.transpose(1, 2), expr.transpose(1, 2)


def _output_vectors(slot: dict, name: str, n_expr: int, inner: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and expression attention outputs (before the output projection) of one block of the
    reference run, ``[B, tokens, H*Dh]``."""
    t_all = T_CAP + n_expr
    if name.startswith("double"):
        return slot["out_image"], slot["out_text"][:, T_CAP:]
    joint = slot["out_all"][..., :inner]
    return joint[:, t_all:], joint[:, T_CAP:t_all]


@torch.no_grad()
def test_branch_equals_masked_joint_attention(model):
    """The branch = the same model run with the expressions appended to the caption and a mask
    that hides them from image and caption tokens; every block's expression stream and the
    image output must match, and the captured logits must equal q_img.k_expr recomputed from
    that run's attention inputs."""
    inputs = _inputs(model, batch=2)
    embeds, layout = random_expressions(model, lengths=(3, 4))
    with capture_attention(model, embeds, layout) as cap:
        plain = model(**inputs)[0]

    reference, seen, ref_inputs, mask = _masked_reference_run(model, inputs, embeds, layout)
    torch.testing.assert_close(reference, plain, rtol=1e-5, atol=1e-5)
    from diffusers.models.embeddings import apply_rotary_emb

    ids = torch.cat([ref_inputs["txt_ids"], inputs["img_ids"]])
    cos, sin = model.pos_embed(ids)
    t_all = T_CAP + layout.total
    allowed = mask[T_CAP:t_all]  # what the expression queries may attend in the joint sequence
    for record in cap.records:
        slot = seen[record.name]
        if record.name.startswith("double"):
            q_plain, k_img = slot["norm_q"], slot["norm_k"]
            q_expr, k_expr = slot["norm_added_q"][:, T_CAP:], slot["norm_added_k"][:, T_CAP:]
            k_txt = slot["norm_added_k"]
        else:
            q_plain, k_img = slot["norm_q"][:, t_all:], slot["norm_k"][:, t_all:]
            q_expr, k_expr = slot["norm_q"][:, T_CAP:t_all], slot["norm_k"][:, T_CAP:t_all]
            k_txt = slot["norm_k"][:, :t_all]
        q_img = apply_rotary_emb(q_plain, (cos[t_all:], sin[t_all:]), sequence_dim=1)
        heads, d = q_img.shape[2], q_img.shape[-1]
        expected = torch.einsum("bnhd,blhd->bnl", q_img, k_expr) / (math.sqrt(d) * heads)
        torch.testing.assert_close(record.scores["scaled_dot"], expected, rtol=1e-4, atol=1e-5)
        # ConceptAttention's vectors: image and expression queries before RoPE, heads summed, unscaled
        concept = torch.einsum("bnhd,blhd->bnl", q_plain, q_expr)
        torch.testing.assert_close(record.scores["concept_attention"], concept, rtol=1e-4, atol=1e-4)
        # the expression queries' attention in the joint run, read on the image keys (text RoPE is
        # the identity: text ids are zeros)
        keys = torch.cat([k_txt, apply_rotary_emb(k_img, (cos[t_all:], sin[t_all:]), sequence_dim=1)], dim=1)
        logits = torch.einsum("blhd,bshd->bhls", q_expr, keys) / math.sqrt(d)
        probs = logits.masked_fill(~allowed, float("-inf")).softmax(-1)[..., t_all:].mean(1)
        torch.testing.assert_close(
            record.scores["attention_probs"].exp(), probs.transpose(1, 2), rtol=1e-4, atol=1e-6
        )
        # ConceptAttention's output space: attention outputs of image and expression tokens, unscaled
        out_image, out_expr = _output_vectors(slot, record.name, layout.total, heads * d)
        output = torch.einsum("bnc,blc->bnl", out_image, out_expr)
        torch.testing.assert_close(record.scores["output_space"], output, rtol=1e-4, atol=1e-4)


def test_single_blocks_of_old_diffusers_are_refused_by_name(monkeypatch):
    """Before diffusers 0.35 a single block took ``[text; image]`` as one tensor, so the image
    rows this backend reads would hold text: refuse it, naming the version to install."""
    import types

    model = tiny_flux_transformer(seed=3)

    def old_forward(self, hidden_states, temb, image_rotary_emb=None, joint_attention_kwargs=None):
        raise AssertionError("never called")

    block = model.single_transformer_blocks[0]
    monkeypatch.setattr(block, "forward", types.MethodType(old_forward, block))
    with pytest.raises(RuntimeError, match=r"diffusers >= 0\.35"):
        FLUX1.diffusers_blocks(model)
    embeds, layout = random_expressions(model)
    with (
        pytest.raises(RuntimeError, match="single blocks as one tensor"),
        capture_attention(model, embeds, layout),
    ):
        pass


def _conceptattention_heatmaps(image_vectors, concept_vectors, layer_indices, timesteps=(0,), softmax=True):
    """ConceptAttention's ``compute_heatmaps_from_vectors`` (its FLUX pipeline), written out here:
    vectors ``[time, layers, batch, heads, tokens, dim]``; heads flattened into channels, the dot
    product unscaled, a softmax over concepts per (time, layer), then the mean over the chosen
    timesteps and layers -> ``[batch, concepts, patches]``."""
    t, lay, b, h, p, d = image_vectors.shape
    image = image_vectors.permute(0, 1, 2, 4, 3, 5).reshape(t, lay, b, p, h * d)
    concepts = concept_vectors.permute(0, 1, 2, 4, 3, 5).reshape(t, lay, b, -1, h * d)
    heatmaps = torch.einsum("tlbpd,tlbcd->tlbcp", image, concepts)
    if softmax:
        heatmaps = heatmaps.softmax(dim=-2)
    heatmaps = heatmaps[list(timesteps)][:, list(layer_indices)]
    return heatmaps.mean(dim=(0, 1))


def _assert_heatmap_is_conceptattentions(model, t5_tokenizer, options, vectors_of) -> None:
    """Every token map of ``options`` equals ConceptAttention's heatmap function applied to the
    vectors ``vectors_of(seen, block_name, n_tokens)`` reads (``[B, heads, tokens, dim]`` image and
    concept vectors) off the masked joint run, the expression's tokens as its concepts."""
    from refam.attention import CapturedAttention, ImageGeometry
    from refam.expression import tokenize_expression
    from refam.heatmap import build_heatmap

    expression = tokenize_expression("the red cup on the left", t5_tokenizer, max_length=32, pad_to=32)
    n = expression.valid_length
    embeds, layout = random_expressions(model, lengths=(n,))
    inputs = _inputs(model, batch=2)
    with capture_attention(model, embeds, layout) as cap:
        model(**inputs)
    grid = (GRID_H, GRID_W)
    captured = CapturedAttention(
        cap.records, [expression], layout, ImageGeometry(grid, grid, grid), len(cap.records)
    )
    ours = build_heatmap(captured, 0, options)

    _reference, seen, _inputs_used, _mask = _masked_reference_run(model, inputs, embeds, layout)
    vectors = [vectors_of(seen, r.name, n) for r in cap.records]
    image_vectors = torch.stack([v[0] for v in vectors])[None]
    concept_vectors = torch.stack([v[1] for v in vectors])[None]
    expected = _conceptattention_heatmaps(image_vectors, concept_vectors, range(len(vectors)))
    for b in range(2):
        got = torch.stack([m.grid.flatten() for m in ours.token_maps[b]])
        torch.testing.assert_close(got, expected[b], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_concept_attention_heatmap_equals_conceptattentions_function(model, t5_tokenizer):
    """The default scoring: ConceptAttention's heatmaps of the query vectors recorded
    independently (the masked joint run)."""
    from refam.heatmap import HeatmapOptions

    options = HeatmapOptions(noun_phrase=False, spatial_bias=False, remove_gas=False)
    assert options.chosen_score == "concept_attention"
    _assert_heatmap_is_conceptattentions(model, t5_tokenizer, options, _query_vectors)


@torch.no_grad()
def test_output_space_heatmap_equals_conceptattentions_function(model, t5_tokenizer):
    """Table 8's output space: ConceptAttention's heatmaps of the attention outputs (its
    ``output_space_*_vectors``) of the masked joint run."""
    from refam.heatmap import HeatmapOptions

    options = HeatmapOptions(noun_phrase=False, spatial_bias=False, space="output")
    assert options.chosen_score == "output_space"
    inner = model.config.num_attention_heads * model.config.attention_head_dim

    def output_vectors(seen, name, n):
        # one "head" holding the flattened channels, as ConceptAttention stores its output vectors
        image, concept = _output_vectors(seen[name], name, n, inner)
        return image[:, None], concept[:, None]

    _assert_heatmap_is_conceptattentions(model, t5_tokenizer, options, output_vectors)


@torch.no_grad()
@pytest.mark.parametrize("branch_pooled", ["zero", "caption"])
def test_branch_modulation_uses_the_chosen_pooled_vector(model, branch_pooled):
    """ConceptAttention modulates its concept stream from a zero pooled CLIP vector (the default);
    ``caption`` keeps the image stream's. Read off what the branch hands the blocks' text-stream
    modulation, against ``time_text_embed`` computed here."""

    inputs = _inputs(model)
    embeds, layout = random_expressions(model)
    seen: list[torch.Tensor] = []
    block = model.transformer_blocks[0]
    hook = block.norm1_context.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(kwargs.get("emb", args[1] if len(args) > 1 else None)),
        with_kwargs=True,
    )
    try:
        shift = FLUX1.diffusers_pooled_shift(model, inputs["pooled_projections"], branch_pooled)
        with capture_attention(model, embeds, layout, vec_shift=shift):
            model(**inputs)
    finally:
        hook.remove()
    image_stream, branch = seen  # the block's own call, then the branch's
    timestep = inputs["timestep"] * 1000
    pooled = (
        inputs["pooled_projections"]
        if branch_pooled == "caption"
        else torch.zeros_like(inputs["pooled_projections"])
    )
    torch.testing.assert_close(branch, model.time_text_embed(timestep, pooled), atol=1e-6, rtol=1e-5)
    assert torch.equal(image_stream, model.time_text_embed(timestep, inputs["pooled_projections"]))
    with pytest.raises(ValueError, match="branch_pooled"):
        FLUX1.diffusers_pooled_shift(model, inputs["pooled_projections"], "mean")
