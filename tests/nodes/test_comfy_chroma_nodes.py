"""The node chain in-process on Chroma: a tiny Chroma MODEL (approximator modulation), a Chroma CLIP
from ComfyUI's own loader (T5 unpadded, unmasked) and a FLUX-layout VAE."""

from __future__ import annotations

import json

import pytest
import torch

from comfy_support import (
    comfy_chroma_from_diffusers,
    comfy_vae_from_diffusers,
    import_comfy,
    load_pack,
    run_node,
    tiny_chroma_clip,
    tiny_vae_for_comfy,
)
from tiny_models import tiny_chroma_transformer

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def pack():
    import_comfy()
    return load_pack()



@torch.no_grad()
def test_chroma_node_chain_end_to_end(pack):
    clip = tiny_chroma_clip()
    model = comfy_chroma_from_diffusers(tiny_chroma_transformer(seed=3, in_channels=16))  # 4 latent channels, 2x2
    vae = comfy_vae_from_diffusers(tiny_vae_for_comfy(seed=4))
    image = torch.full((2, 77, 123, 3), 0.5)
    image[:, 10:40, 8:45] = torch.tensor([0.9, 0.1, 0.1])
    (cond,) = run_node(pack, "RefAMCaptionConditioning", clip=clip, caption="a red square")
    (expr,) = run_node(pack, "RefAMReferringExpression", clip=clip, expressions="the red square on the left\nthe grey one")
    # Chroma's T5 pads nothing: each expression is its tokens and </s>, encoded alone as its prompt would be
    assert all(t.valid_length == len(t.ids) for t in expr.tokenized)
    for expression, (start, end) in zip(expr.tokenized, expr.layout.spans, strict=True):
        alone = clip.encode_from_tokens(clip.tokenize(expression.augmented))
        torch.testing.assert_close(expr.embeds[:, start:end], alone.float(), atol=1e-5, rtol=0)
    (att,) = run_node(
        pack, "RefAMCaptureAttentionFlux", model=model, vae=vae, image=image, conditioning=cond, expression=expr,
        sigma=0.75, seed=0, blocks="all", resolution=96,
    )  # fmt: skip
    captured = att.captured
    assert captured.meta["architecture"] == "Chroma"
    assert [b.name for b in captured.blocks] == ["double.0", "double.1", "single.0", "single.1"]
    heat, _overlay, heatmaps = run_node(pack, "RefAMHeatmap", attention=att, image=image)
    assert heat.shape == (4, 77, 123) and float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0
    points_json, *_ = run_node(pack, "RefAMPoint", heatmaps=heatmaps)
    assert len(json.loads(points_json)) == 4
