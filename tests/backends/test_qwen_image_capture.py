"""The diffusers Qwen-Image capture: invisible to the denoiser, exact against independent math."""

from __future__ import annotations

import math

import pytest
import torch

from refam.architectures import diffusers_architecture
from refam.architectures.qwen_image import QWEN_IMAGE
from refam.attention import ExpressionLayout
from refam.backends.diffusers_capture import capture_attention
from tiny_models import random_expressions, tiny_qwen_image_transformer

# An odd number of rows: diffusers centres the grid as -(h - h//2) ... h//2 - 1.
T_CAP, GRID_H, GRID_W = 6, 3, 4
N_IMG = GRID_H * GRID_W
# Where caption token 0 sits on all three RoPE axes: half the longer side of the token grid.
TXT_START = max(GRID_H // 2, GRID_W // 2)


def _inputs(model, batch=2, seed=1, reference=False):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    shapes = [(1, GRID_H, GRID_W)] * (2 if reference else 1)
    return dict(
        hidden_states=torch.randn(batch, N_IMG * len(shapes), cfg.in_channels, generator=g),
        encoder_hidden_states=torch.randn(batch, T_CAP, cfg.joint_attention_dim, generator=g),
        timestep=torch.full((batch,), 0.75),
        img_shapes=[shapes] * batch,
        return_dict=False,
    )


@pytest.fixture(scope="module")
def model():
    return tiny_qwen_image_transformer(seed=3)



def test_qwen_image_is_recognised_and_no_flux_claims_it(model):
    assert diffusers_architecture(model) is QWEN_IMAGE
    assert diffusers_architecture(model, "image") is QWEN_IMAGE
    assert [name for name, _ in QWEN_IMAGE.diffusers_blocks(model)] == ["double.0", "double.1"]


def test_qwen_image_layered_is_named_not_misread():
    layered = tiny_qwen_image_transformer(seed=3, use_layer3d_rope=True)
    with pytest.raises(NotImplementedError, match="Qwen-Image-Layered"):
        QWEN_IMAGE.diffusers_blocks(layered)


@torch.no_grad()
def test_denoiser_output_bit_identical_with_capture(model):
    inputs = _inputs(model)
    plain = model(**inputs)[0]
    embeds, layout = random_expressions(model)
    with capture_attention(model, embeds, layout) as cap:
        captured = model(**inputs)[0]
    assert torch.equal(plain, captured)
    assert [r.name for r in cap.records] == ["double.0", "double.1"]
    assert cap.records[0].logits.shape == (2, N_IMG, 7)
    modules = [model, *(m for _, b in QWEN_IMAGE.diffusers_blocks(model) for m in b.modules())]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)


def _rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """``x [B, S, H, Dh]`` rotated by complex ``freqs [S, Dh/2]`` over (even, odd) pairs."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * freqs[:, None]).flatten(3).type_as(x)


class _MaskedJoint:
    """A joint attention over ``[text ; image]`` written here: the text rotated at the positions
    given (not the model's contiguous ones), one ``[S, S]`` mask over everything; what it saw is
    left in ``seen``."""

    def __init__(self, text_freqs: torch.Tensor, mask: torch.Tensor, seen: dict) -> None:
        self.text_freqs, self.mask, self.seen = text_freqs, mask, seen

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, encoder_hidden_states_mask=None,
                 attention_mask=None, image_rotary_emb=None):  # fmt: skip
        d = attn.inner_dim // attn.heads

        def heads(x):
            return x.unflatten(-1, (-1, d))

        q_img, k_img = attn.norm_q(heads(attn.to_q(hidden_states))), attn.norm_k(heads(attn.to_k(hidden_states)))
        q_txt = attn.norm_added_q(heads(attn.add_q_proj(encoder_hidden_states)))
        k_txt = attn.norm_added_k(heads(attn.add_k_proj(encoder_hidden_states)))
        v = torch.cat([heads(attn.add_v_proj(encoder_hidden_states)), heads(attn.to_v(hidden_states))], 1)
        image_freqs = image_rotary_emb[0]
        q = torch.cat([_rotate(q_txt, self.text_freqs), _rotate(q_img, image_freqs)], 1)
        k = torch.cat([_rotate(k_txt, self.text_freqs), _rotate(k_img, image_freqs)], 1)
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=self.mask
        ).transpose(1, 2).flatten(2)  # fmt: skip
        t = encoder_hidden_states.shape[1]
        self.seen.update(q_img=q_img, q_txt=q_txt, q=q, k=k, out=out, image_freqs=image_freqs)
        return attn.to_out[0](out[:, t:]), attn.to_add_out(out[:, :t])


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
    """The model with the expressions appended to the caption, each at the text positions it would
    have as a caption (from 0), hidden by a mask; every block's attention read as it ran."""
    batch = inputs["hidden_states"].shape[0]
    ref = dict(inputs)
    ref["encoder_hidden_states"] = torch.cat([inputs["encoder_hidden_states"], embeds.expand(batch, -1, -1)], 1)
    positions = torch.tensor([*range(T_CAP), *(p for n in layout.lengths for p in range(n))])
    text_freqs = model.pos_embed.pos_freqs[TXT_START + positions]
    mask = _joint_mask(layout, inputs["hidden_states"].shape[1])
    seen: dict[str, dict] = {}
    blocks = QWEN_IMAGE.diffusers_blocks(model)
    processors = [b.attn.processor for _, b in blocks]
    for name, block in blocks:
        block.attn.processor = _MaskedJoint(text_freqs, mask, seen.setdefault(name, {}))
    try:
        out = model(**ref)[0]
    finally:
        for (_, block), processor in zip(blocks, processors, strict=True):
            block.attn.processor = processor
    return out, seen, mask


@pytest.mark.parametrize("variant", ["plain", "reference", "reference_zero_cond"])
@torch.no_grad()
def test_branch_equals_masked_joint_attention_at_the_expressions_own_text_positions(variant):
    """Scores of every block = those recomputed from a joint run with the expressions appended
    (text RoPE at their own caption positions) and masked; with a reference image after the target
    (Qwen-Image-Edit), and with Edit-2511's zero-timestep modulation of the reference, the
    expressions attend the target only and the maps cover its tokens."""
    model = tiny_qwen_image_transformer(seed=3, zero_cond_t=variant == "reference_zero_cond")
    inputs = _inputs(model, reference=variant != "plain")
    embeds, layout = random_expressions(model)
    with capture_attention(model, embeds, layout) as cap:
        plain = model(**inputs)[0]
    reference, seen, mask = _reference_run(model, inputs, embeds, layout)
    torch.testing.assert_close(reference, plain, rtol=1e-5, atol=1e-5)

    t_all = T_CAP + layout.total
    heads, d = model.config.num_attention_heads, model.config.attention_head_dim
    expression = slice(T_CAP, t_all)
    for record in cap.records:
        slot = seen[record.name]
        q, k = slot["q"], slot["k"]
        q_img_rot, k_expr_rot = q[:, t_all : t_all + N_IMG], k[:, expression]
        expected = torch.einsum("bnhd,blhd->bnl", q_img_rot, k_expr_rot) / (math.sqrt(d) * heads)
        torch.testing.assert_close(record.scores["scaled_dot"], expected, rtol=1e-4, atol=1e-5)
        # ConceptAttention: queries before RoPE, heads summed.
        concept = torch.einsum("bnhd,blhd->bnl", slot["q_img"][:, :N_IMG], slot["q_txt"][:, expression])
        torch.testing.assert_close(record.scores["concept_attention"], concept, rtol=1e-4, atol=1e-4)
        logits = torch.einsum("blhd,bshd->bhls", q[:, expression], k[:, : t_all + N_IMG]) / math.sqrt(d)
        probs = logits.masked_fill(~mask[expression, : t_all + N_IMG], float("-inf")).softmax(-1)
        torch.testing.assert_close(
            record.scores["attention_probs"].exp(), probs[..., t_all:].mean(1).transpose(1, 2), rtol=1e-4, atol=1e-6
        )
        out = slot["out"]
        output = torch.einsum("bnc,blc->bnl", out[:, t_all : t_all + N_IMG], out[:, expression])
        torch.testing.assert_close(record.scores["output_space"], output, rtol=1e-4, atol=1e-4)
