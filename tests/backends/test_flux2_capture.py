"""The diffusers FLUX.2 capture: invisible to the denoiser, exact against independent math."""

from __future__ import annotations

import math

import pytest
import torch

from refam.architectures import diffusers_architecture
from refam.architectures.flux2 import FLUX2
from refam.attention import ExpressionLayout
from refam.backends.diffusers_capture import capture_attention
from tiny_models import random_expressions, tiny_flux2_transformer

T_CAP, GRID_H, GRID_W = 6, 3, 4
N_IMG = GRID_H * GRID_W


def _image_ids(t: int = 0) -> torch.Tensor:
    ids = torch.zeros(N_IMG, 4)
    ids[:, 0] = t
    ids[:, 1] = torch.arange(GRID_H).repeat_interleave(GRID_W)
    ids[:, 2] = torch.arange(GRID_W).repeat(GRID_H)
    return ids


def _text_ids(positions) -> torch.Tensor:
    ids = torch.zeros(len(positions), 4)
    ids[:, 3] = torch.as_tensor(positions, dtype=torch.float32)
    return ids


def _inputs(model, batch=2, seed=1, reference=False):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    n = N_IMG * (2 if reference else 1)
    return dict(
        hidden_states=torch.randn(batch, n, cfg.in_channels, generator=g),
        encoder_hidden_states=torch.randn(batch, T_CAP, cfg.joint_attention_dim, generator=g),
        timestep=torch.full((batch,), 0.75),
        img_ids=torch.cat([_image_ids(), _image_ids(10)]) if reference else _image_ids(),
        txt_ids=_text_ids(range(T_CAP)),
        return_dict=False,
    )


@pytest.fixture(scope="module")
def model():
    return tiny_flux2_transformer(seed=3)



def test_flux2_is_recognised_and_flux1_does_not_claim_it(model):
    assert diffusers_architecture(model) is FLUX2


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
    modules = [model, *(m for _, b in FLUX2.diffusers_blocks(model) for m in b.modules())]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)


def _joint_mask(layout: ExpressionLayout, n_img: int) -> torch.Tensor:
    """[S, S] for [caption ; expressions ; target image ; reference image]: nobody sees the
    expressions; they see each themselves and the target image (the one being segmented)."""
    n_e = layout.total
    s = T_CAP + n_e + n_img
    allowed = torch.ones(s, s, dtype=torch.bool)
    e = slice(T_CAP, T_CAP + n_e)
    allowed[:, e] = False
    allowed[e, :T_CAP] = False
    allowed[e, T_CAP + n_e + N_IMG :] = False
    allowed[e, e] = layout.text_mask()
    return allowed


def _reference_run(model, inputs, embeds, layout):
    """The model with the expressions appended to the caption at their own text positions (each
    expression from 0, as the caption would be) and hidden by a mask; q/k/v and the attention
    outputs of every block read by hooks on the attention's own modules."""
    batch = inputs["hidden_states"].shape[0]
    ref = dict(inputs)
    ref["encoder_hidden_states"] = torch.cat([inputs["encoder_hidden_states"], embeds.expand(batch, -1, -1)], 1)
    own = [p for n in layout.lengths for p in range(n)]
    ref["txt_ids"] = _text_ids([*range(T_CAP), *own])
    n_img = inputs["hidden_states"].shape[1]
    mask = _joint_mask(layout, n_img)
    ref["joint_attention_kwargs"] = {"attention_mask": mask[None, None].expand(batch, 1, -1, -1)}
    seen: dict[str, dict[str, torch.Tensor]] = {}
    hooks = []
    for name, block in FLUX2.diffusers_blocks(model):
        slot = seen.setdefault(name, {})
        parts = ("norm_q", "norm_k", "norm_added_q", "norm_added_k", "to_v", "add_v_proj", "to_qkv_mlp_proj")
        for part in parts:
            if isinstance(getattr(block.attn, part, None), torch.nn.Module):
                hooks.append(getattr(block.attn, part).register_forward_hook(
                    lambda _m, _i, o, slot=slot, part=part: slot.__setitem__(part, o)))  # fmt: skip
        outputs = {"out_image": block.attn.to_out[0], "out_text": block.attn.to_add_out} if name.startswith(
            "double") else {"out_all": block.attn.to_out}  # fmt: skip
        for part, module in outputs.items():
            hooks.append(module.register_forward_pre_hook(
                lambda _m, i, slot=slot, part=part: slot.__setitem__(part, i[0])))  # fmt: skip
    try:
        out = model(**ref)[0]
    finally:
        for h in hooks:
            h.remove()
    return out, seen, ref, mask


@pytest.mark.parametrize("reference_image", [False, True])
@torch.no_grad()
def test_branch_equals_masked_joint_attention_at_the_expressions_own_text_positions(model, reference_image):
    """Scores of every block = those recomputed from a joint run with the expressions appended
    (text RoPE at their own positions) and masked; with a reference image appended after the
    target (FLUX.2's multi-reference editing), the expressions attend the target only and the maps
    cover its tokens."""
    from diffusers.models.embeddings import apply_rotary_emb

    inputs = _inputs(model, reference=reference_image)
    embeds, layout = random_expressions(model)
    with capture_attention(model, embeds, layout) as cap:
        plain = model(**inputs)[0]
    reference, seen, ref, mask = _reference_run(model, inputs, embeds, layout)
    torch.testing.assert_close(reference, plain, rtol=1e-5, atol=1e-5)

    cos, sin = model.pos_embed(torch.cat([ref["txt_ids"], inputs["img_ids"]]))
    t_all = T_CAP + layout.total
    inner = model.config.num_attention_heads * model.config.attention_head_dim
    for record in cap.records:
        slot = seen[record.name]
        if record.name.startswith("double"):
            q_img, k_img, q_txt, k_txt = slot["norm_q"], slot["norm_k"], slot["norm_added_q"], slot["norm_added_k"]
            out_img, out_expr = slot["out_image"], slot["out_text"][:, T_CAP:]
        else:
            q_txt, k_txt = slot["norm_q"][:, :t_all], slot["norm_k"][:, :t_all]
            q_img, k_img = slot["norm_q"][:, t_all:], slot["norm_k"][:, t_all:]
            out_img, out_expr = slot["out_all"][:, t_all:, :inner], slot["out_all"][:, T_CAP:t_all, :inner]
        q_img, k_img, out_img = q_img[:, :N_IMG], k_img[:, :N_IMG], out_img[:, :N_IMG]  # the target only
        rope_img = (cos[t_all : t_all + N_IMG], sin[t_all : t_all + N_IMG])
        q_rot = apply_rotary_emb(q_img, rope_img, sequence_dim=1)
        k_rot = apply_rotary_emb(k_img, rope_img, sequence_dim=1)
        q_txt_rot = apply_rotary_emb(q_txt, (cos[:t_all], sin[:t_all]), sequence_dim=1)
        k_txt_rot = apply_rotary_emb(k_txt, (cos[:t_all], sin[:t_all]), sequence_dim=1)
        heads, d = q_img.shape[2], q_img.shape[-1]
        expected = torch.einsum("bnhd,blhd->bnl", q_rot, k_txt_rot[:, T_CAP:]) / (math.sqrt(d) * heads)
        torch.testing.assert_close(record.scores["scaled_dot"], expected, rtol=1e-4, atol=1e-5)
        concept = torch.einsum("bnhd,blhd->bnl", q_img, q_txt[:, T_CAP:])  # before RoPE, heads summed
        torch.testing.assert_close(record.scores["concept_attention"], concept, rtol=1e-4, atol=1e-4)
        keys = torch.cat([k_txt_rot[:, :t_all], k_rot], dim=1)
        logits = torch.einsum("blhd,bshd->bhls", q_txt_rot[:, T_CAP:], keys) / math.sqrt(d)
        allowed = mask[T_CAP:t_all, : t_all + N_IMG]
        probs = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
        torch.testing.assert_close(
            record.scores["attention_probs"].exp(), probs[..., t_all:].mean(1).transpose(1, 2), rtol=1e-4, atol=1e-6
        )
        output = torch.einsum("bnc,blc->bnl", out_img, out_expr)
        torch.testing.assert_close(record.scores["output_space"], output, rtol=1e-4, atol=1e-4)
