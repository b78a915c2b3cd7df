"""The diffusers Chroma capture: invisible to the denoiser, exact against independent math."""

from __future__ import annotations

import math

import pytest
import torch

from refam.architectures import diffusers_architecture
from refam.architectures.chroma import CHROMA
from refam.architectures.flux import FLUX1, latent_image_ids
from refam.architectures.flux2 import FLUX2
from refam.attention import ExpressionLayout
from refam.backends.diffusers_capture import capture_attention
from tiny_models import random_expressions, tiny_chroma_transformer

T_CAP, GRID_H, GRID_W = 6, 3, 4
N_IMG = GRID_H * GRID_W


def _inputs(model, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    return dict(
        hidden_states=torch.randn(batch, N_IMG, cfg.in_channels, generator=g),
        encoder_hidden_states=torch.randn(batch, T_CAP, cfg.joint_attention_dim, generator=g),
        timestep=torch.full((batch,), 0.75),
        img_ids=latent_image_ids(GRID_H, GRID_W),
        txt_ids=torch.zeros(T_CAP, 3),
        return_dict=False,
    )


@pytest.fixture(scope="module")
def model():
    return tiny_chroma_transformer(seed=3)



def test_chroma_is_recognised_and_the_flux_modules_do_not_claim_it(model):
    assert diffusers_architecture(model) is CHROMA
    assert diffusers_architecture(model, "image") is CHROMA
    assert not FLUX1.diffusers_matches(model) and not FLUX2.diffusers_matches(model)


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
    assert all(r.logits.shape == (2, N_IMG, 7) for r in cap.records)
    modules = [model, *(m for _, b in CHROMA.diffusers_blocks(model) for m in b.modules())]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)


def _joint_mask(layout: ExpressionLayout) -> torch.Tensor:
    """[S, S] for [caption ; expressions ; image]: nobody sees the expressions; they see each
    themselves and the image."""
    n_e = layout.total
    allowed = torch.ones(T_CAP + n_e + N_IMG, T_CAP + n_e + N_IMG, dtype=torch.bool)
    e = slice(T_CAP, T_CAP + n_e)
    allowed[:, e] = False
    allowed[e, :T_CAP] = False
    allowed[e, e] = layout.text_mask()
    return allowed


class _MaskedProcessor:
    """The block's own attention processor with the joint mask in place of the model's (Chroma's
    blocks build their mask from a per-token vector, which cannot say who sees whom)."""

    def __init__(self, inner, mask: torch.Tensor) -> None:
        self.inner, self.mask = inner, mask

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        return self.inner(attn, hidden_states, encoder_hidden_states, self.mask, image_rotary_emb)


def _reference_run(model, inputs, embeds, layout):
    """The model with the expressions appended to the caption (text ids zero, as the caption's)
    and hidden by a mask; q/k/v and the attention outputs of every block read by hooks on the
    attention's own modules."""
    batch = inputs["hidden_states"].shape[0]
    ref = dict(inputs)
    ref["encoder_hidden_states"] = torch.cat([inputs["encoder_hidden_states"], embeds.expand(batch, -1, -1)], 1)
    ref["txt_ids"] = torch.zeros(T_CAP + layout.total, 3)
    mask = _joint_mask(layout)
    seen: dict[str, dict[str, torch.Tensor]] = {}
    hooks, processors = [], []
    for name, block in CHROMA.diffusers_blocks(model):
        slot = seen.setdefault(name, {})
        for part in ("norm_q", "norm_k", "norm_added_q", "norm_added_k", "to_v", "add_v_proj"):
            if isinstance(getattr(block.attn, part, None), torch.nn.Module):
                hooks.append(getattr(block.attn, part).register_forward_hook(
                    lambda _m, _i, o, slot=slot, part=part: slot.__setitem__(part, o)))  # fmt: skip
        outputs = {"out_image": block.attn.to_out[0], "out_text": block.attn.to_add_out} if name.startswith(
            "double") else {"out_all": block.proj_out}  # fmt: skip
        for part, module in outputs.items():
            hooks.append(module.register_forward_pre_hook(
                lambda _m, i, slot=slot, part=part: slot.__setitem__(part, i[0])))  # fmt: skip
        processors.append((block.attn, block.attn.processor))
        block.attn.processor = _MaskedProcessor(block.attn.processor, mask[None, None].expand(batch, 1, -1, -1))
    try:
        out = model(**ref)[0]
    finally:
        for h in hooks:
            h.remove()
        for attn, processor in processors:
            attn.processor = processor
    return out, seen, ref, mask


@torch.no_grad()
def test_branch_equals_masked_joint_attention(model):
    """Scores of every block = those recomputed from a joint run with the expressions appended
    to the caption and masked: the text half of each double block's modulation, the single
    blocks' image rows after the caption, no text rotation."""
    from diffusers.models.embeddings import apply_rotary_emb

    inputs = _inputs(model)
    embeds, layout = random_expressions(model)
    with capture_attention(model, embeds, layout) as cap:
        plain = model(**inputs)[0]
    reference, seen, ref, mask = _reference_run(model, inputs, embeds, layout)
    torch.testing.assert_close(reference, plain, rtol=1e-5, atol=1e-5)

    cos, sin = model.pos_embed(torch.cat([ref["txt_ids"], inputs["img_ids"]]))
    t_all = T_CAP + layout.total
    inner = model.config.num_attention_heads * model.config.attention_head_dim
    assert len(cap.records) == 4
    for record in cap.records:
        slot = seen[record.name]
        if record.name.startswith("double"):
            q_img, k_img, q_txt, k_txt = slot["norm_q"], slot["norm_k"], slot["norm_added_q"], slot["norm_added_k"]
            out_img, out_expr = slot["out_image"], slot["out_text"][:, T_CAP:]
        else:
            q_txt, k_txt = slot["norm_q"][:, :t_all], slot["norm_k"][:, :t_all]
            q_img, k_img = slot["norm_q"][:, t_all:], slot["norm_k"][:, t_all:]
            out_img, out_expr = slot["out_all"][:, t_all:, :inner], slot["out_all"][:, T_CAP:t_all, :inner]
        rope_img = (cos[t_all:], sin[t_all:])
        q_rot = apply_rotary_emb(q_img, rope_img, sequence_dim=1)
        k_rot = apply_rotary_emb(k_img, rope_img, sequence_dim=1)
        q_txt_rot = apply_rotary_emb(q_txt, (cos[:t_all], sin[:t_all]), sequence_dim=1)
        k_txt_rot = apply_rotary_emb(k_txt, (cos[:t_all], sin[:t_all]), sequence_dim=1)
        heads, d = q_img.shape[2], q_img.shape[-1]
        expected = torch.einsum("bnhd,blhd->bnl", q_rot, k_txt_rot[:, T_CAP:]) / (math.sqrt(d) * heads)
        torch.testing.assert_close(record.scores["scaled_dot"], expected, rtol=1e-4, atol=1e-5)
        concept = torch.einsum("bnhd,blhd->bnl", q_img, q_txt[:, T_CAP:])  # before RoPE, heads summed
        torch.testing.assert_close(record.scores["concept_attention"], concept, rtol=1e-4, atol=1e-4)
        keys = torch.cat([k_txt_rot, k_rot], dim=1)
        logits = torch.einsum("blhd,bshd->bhls", q_txt_rot[:, T_CAP:], keys) / math.sqrt(d)
        probs = logits.masked_fill(~mask[T_CAP:t_all], float("-inf")).softmax(-1)
        torch.testing.assert_close(
            record.scores["attention_probs"].exp(), probs[..., t_all:].mean(1).transpose(1, 2), rtol=1e-4, atol=1e-6
        )
        output = torch.einsum("bnc,blc->bnl", out_img, out_expr)
        torch.testing.assert_close(record.scores["output_space"], output, rtol=1e-4, atol=1e-4)
