"""The diffusers Z-Image capture: invisible to the denoiser, exact against the branch written out."""

from __future__ import annotations

import math

import torch

from refam.architectures import diffusers_architecture
from refam.architectures.z_image import Z_IMAGE
from refam.attention import ExpressionLayout
from refam.backends.diffusers_capture import capture_attention
from tiny_models import tiny_z_image_transformer

CAPTION, H, W = 40, 6, 8  # a caption padded to 64; a 3x4 token grid
N_IMG = (H // 2) * (W // 2)


def _inputs(model, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(model.config.in_channels, 1, H, W, generator=g) for _ in range(batch)]
    caption = torch.randn(CAPTION, model.config.cap_feat_dim, generator=g)
    return x, torch.full((batch,), 0.25), [caption] * batch


def test_z_image_is_recognised():
    assert diffusers_architecture(tiny_z_image_transformer()) is Z_IMAGE


def _qkv(layer, hidden, scale):
    attn = layer.attention
    normed = layer.attention_norm1(hidden) * (1 + scale)
    q, k, v = (proj(normed).unflatten(-1, (attn.heads, -1)) for proj in (attn.to_q, attn.to_k, attn.to_v))
    return attn.norm_q(q), attn.norm_k(k), v


@torch.no_grad()
def test_denoiser_output_bit_identical_with_capture_and_maps_equal_the_branch_written_out():
    model = tiny_z_image_transformer(seed=3)
    x, t, caption = _inputs(model)
    plain = model(x, t, caption, return_dict=False)[0]
    g = torch.Generator().manual_seed(2)
    embeds, layout = torch.randn(1, 13, model.config.cap_feat_dim, generator=g), ExpressionLayout((6, 7))
    seen: dict[int, dict] = {}
    hooks = []
    for i, layer in enumerate(model.layers):
        slot = seen.setdefault(i, {})
        hooks.append(layer.register_forward_pre_hook(lambda _m, a, slot=slot: slot.update(x=a[0], freqs=a[2], vec=a[3])))
        # the block's own call comes first; the branch projects its own output with the same module after it
        hooks.append(layer.attention.to_out[0].register_forward_pre_hook(lambda _m, a, slot=slot: None if "out" in slot else slot.update(out=a[0])))
    try:
        with capture_attention(model, embeds, layout) as cap:
            captured = model(x, t, caption, return_dict=False)[0]
    finally:
        for h in hooks:
            h.remove()
    assert all(torch.equal(a, b) for a, b in zip(plain, captured, strict=True))
    assert [r.name for r in cap.records] == ["single.0", "single.1"]
    modules = [model, *(m for _, b in Z_IMAGE.diffusers_blocks(model) for m in b.modules())]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)

    def rope(v, freqs):  # interleaved pairs as complex numbers
        c = torch.view_as_complex(v.float().reshape(*v.shape[:-1], -1, 2)) * freqs.unsqueeze(-2)
        return torch.view_as_real(c).flatten(-2)

    # The expression stream: each expression embedded and refined alone, padded to 32 with the
    # caption pad token, positions 1, 2, ... (a caption's); the pads dropped before the joint layers.
    streams = []
    for n, (start, end) in zip(layout.lengths, layout.spans, strict=True):
        e = model.cap_embedder(embeds[:, start:end])
        e = torch.cat([e, model.cap_pad_token.expand(1, 32 - n, -1)], dim=1)
        ids = torch.zeros(32, 3, dtype=torch.int32)
        ids[:, 0] = torch.arange(32) + 1
        for refiner in model.context_refiner:
            e = refiner(e, None, model.rope_embedder(ids)[None])
        streams.append(e[:, :n])
    expr = torch.cat(streams, dim=1).expand(2, -1, -1)
    # Joint layers: each expression token keeps a caption's offset to the image (caption padded
    # to 64, image at 65; an expression padded to 32 starts 32 before it).
    ids = torch.zeros(layout.total, 3, dtype=torch.int32)
    ids[:, 0] = torch.cat([torch.arange(n) + 64 - 32 + 1 for n in layout.lengths])
    text_freqs = model.rope_embedder(ids)
    group = torch.cat([torch.full((n,), i) for i, n in enumerate(layout.lengths)])
    same = group[:, None] == group[None, :]
    for record, i in zip(cap.records, range(2), strict=True):
        layer, slot = model.layers[i], seen[i]
        attn = layer.attention
        s1, g1, s2, g2 = layer.adaLN_modulation(slot["vec"]).unsqueeze(1).chunk(4, dim=2)

        qi, ki, vi = (t[:, :N_IMG] for t in _qkv(layer, slot["x"], s1))  # diffusers' sequence: the image first
        qe, ke, ve = _qkv(layer, expr, s1)
        img_freqs = slot["freqs"][:, :N_IMG]
        qi_r, ki_r = rope(qi, img_freqs), rope(ki, img_freqs)
        qe_r, ke_r = rope(qe, text_freqs[None]), rope(ke, text_freqs[None])
        d = qi.shape[-1]
        expected = torch.einsum("bnhd,blhd->bnl", qi_r, ke_r) / (math.sqrt(d) * attn.heads)
        torch.testing.assert_close(record.scores["scaled_dot"], expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(record.scores["concept_attention"], torch.einsum("bnhd,blhd->bnl", qi, qe), rtol=1e-4, atol=1e-4)
        logits = torch.cat([torch.einsum("blhd,bmhd->bhlm", qe_r, ke_r).masked_fill(~same, float("-inf")),
                            torch.einsum("blhd,bnhd->bhln", qe_r, ki_r)], dim=-1) / math.sqrt(d)  # fmt: skip
        probs = logits.softmax(-1)
        torch.testing.assert_close(record.scores["attention_probs"].exp(), probs[..., layout.total :].mean(1).transpose(1, 2),
                                   rtol=1e-4, atol=1e-6)  # fmt: skip
        out = torch.einsum("bhlm,bmhd->blhd", probs, torch.cat([ve, vi], dim=1)).flatten(2)
        output = torch.einsum("bnc,blc->bnl", slot["out"][:, :N_IMG], out)
        torch.testing.assert_close(record.scores["output_space"], output, rtol=1e-4, atol=1e-4)
        expr = expr + g1.tanh() * layer.attention_norm2(attn.to_out[0](out))
        expr = expr + g2.tanh() * layer.ffn_norm2(layer.feed_forward(layer.ffn_norm1(expr) * (1 + s2)))
