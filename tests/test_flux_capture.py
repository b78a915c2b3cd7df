"""The diffusers FLUX capture: invisible to the denoiser, exact against independent math."""

from __future__ import annotations

import math

import pytest
import torch

from refam.attention import ExpressionLayout
from refam.backends.diffusers_flux import (
    capture_flux_attention,
    flux_blocks,
    run_until_captured,
)
from tiny_models import tiny_flux_transformer

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


def _expr(model, lengths=(3, 4), seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, sum(lengths), model.config.joint_attention_dim, generator=g), ExpressionLayout(
        lengths
    )


@torch.no_grad()
def test_denoiser_output_bit_identical_with_capture(model):
    inputs = _inputs(model)
    plain = model(**inputs)[0]
    embeds, layout = _expr(model)
    with capture_flux_attention(model, embeds, layout) as cap:
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

    embeds, layout = _expr(model)
    trap = model.single_transformer_blocks[0].register_forward_pre_hook(interrupt)
    try:
        with pytest.raises(Interrupted), capture_flux_attention(model, embeds, layout):
            model(**_inputs(model))
    finally:
        trap.remove()
    modules = [model, *(m for _, b in flux_blocks(model) for m in b.modules())]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)


@torch.no_grad()
def test_early_stop_records_only_selected_blocks(model):
    embeds, layout = _expr(model)
    with capture_flux_attention(model, embeds, layout, blocks=[1], stop_after_last=True) as cap:
        out = run_until_captured(model, **_inputs(model))
    assert out is None
    assert [r.name for r in cap.records] == ["double.1"]
    with capture_flux_attention(model, embeds, layout) as full:
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


@torch.no_grad()
def test_branch_equals_masked_joint_attention(model):
    """The branch = the same model run with the expressions appended to the caption and a mask
    that hides them from image and caption tokens; every block's expression stream and the
    image output must match, and the captured logits must equal q_img.k_expr recomputed from
    that run's attention inputs."""
    inputs = _inputs(model, batch=2)
    embeds, layout = _expr(model, lengths=(3, 4))
    with capture_flux_attention(model, embeds, layout) as cap:
        plain = model(**inputs)[0]

    ref_inputs = dict(inputs)
    ref_inputs["encoder_hidden_states"] = torch.cat(
        [inputs["encoder_hidden_states"], embeds.expand(2, -1, -1)], dim=1
    )
    ref_inputs["txt_ids"] = torch.zeros(T_CAP + layout.total, 3)
    mask = _joint_mask(layout, T_CAP, N_IMG)
    ref_inputs["joint_attention_kwargs"] = {"attention_mask": mask[None, None].expand(2, 1, -1, -1)}

    # Independent recomputation: record each block's raw q/k from its attention module in the
    # reference run and compute the logits here.
    seen: dict[str, dict[str, torch.Tensor]] = {}
    hooks = []
    for name, block in flux_blocks(model):
        slot = seen.setdefault(name, {})
        for part in ("norm_q", "norm_k", "norm_added_k"):
            if hasattr(block.attn, part):
                hooks.append(
                    getattr(block.attn, part).register_forward_hook(
                        lambda _m, _i, o, slot=slot, part=part: slot.__setitem__(part, o)
                    )
                )
        hooks.append(block.register_forward_hook(lambda _m, _i, o, slot=slot: slot.__setitem__("out", o)))
    try:
        reference = model(**ref_inputs)[0]
    finally:
        for h in hooks:
            h.remove()

    torch.testing.assert_close(reference, plain, rtol=1e-5, atol=1e-5)
    from diffusers.models.embeddings import apply_rotary_emb

    ids = torch.cat([ref_inputs["txt_ids"], inputs["img_ids"]])
    cos, sin = model.pos_embed(ids)
    t_all = T_CAP + layout.total
    for record in cap.records:
        slot = seen[record.name]
        if record.name.startswith("double"):
            q_img = slot["norm_q"]
            k_expr = slot["norm_added_k"][:, T_CAP:]
        else:
            q_img = slot["norm_q"][:, t_all:]
            k_expr = slot["norm_k"][:, T_CAP:t_all]
        q_img = apply_rotary_emb(q_img, (cos[t_all:], sin[t_all:]), sequence_dim=1)
        d = q_img.shape[-1]
        expected = torch.einsum("bnhd,blhd->bnl", q_img, k_expr) / (math.sqrt(d) * q_img.shape[2])
        torch.testing.assert_close(record.logits, expected, rtol=1e-4, atol=1e-5)


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
        flux_blocks(model)
    embeds, layout = _expr(model)
    with pytest.raises(RuntimeError, match="single blocks as one tensor"), capture_flux_attention(model, embeds, layout):
        pass
