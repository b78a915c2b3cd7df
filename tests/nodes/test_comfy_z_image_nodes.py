"""The node chain in-process on Z-Image: a tiny NextDiT MODEL with Z-Image's modulation and caption
pad tokens, a Z-Image CLIP (Qwen3 in its chat template, second-to-last layer) and a FLUX VAE."""

from __future__ import annotations

import json

import pytest
import torch

from comfy_support import (
    comfy_vae_from_diffusers,
    comfy_z_image_from_diffusers,
    import_comfy,
    load_pack,
    run_node,
    tiny_vae_for_comfy,
    tiny_z_image_clip,
)
from tiny_models import tiny_z_image_transformer

pytestmark = [pytest.mark.comfyui, pytest.mark.comfy_model("z_image")]


@pytest.fixture(scope="module")
def pack():
    import_comfy()
    return load_pack()




@torch.no_grad()
def test_z_image_node_chain_and_text_path(pack):
    clip, hf = tiny_z_image_clip()
    model = comfy_z_image_from_diffusers(tiny_z_image_transformer(seed=3, cap_feat_dim=hf.config.hidden_size))
    vae = comfy_vae_from_diffusers(tiny_vae_for_comfy(seed=4))
    image = torch.full((1, 77, 123, 3), 0.5)
    image[:, 10:40, 8:45] = torch.tensor([0.9, 0.1, 0.1])
    (cond,) = run_node(pack, "RefAMCaptionConditioning", clip=clip, caption="a red square")
    (expr,) = run_node(pack, "RefAMReferringExpression", clip=clip, expressions="the red square\nthe grey background")
    for expression, (start, end) in zip(expr.tokenized, expr.layout.spans, strict=True):
        roles = [t.role.value for t in expression.tokens]
        assert roles[:3] == ["eos"] * 3 and roles[-5:] == ["eos"] * 5  # Z-Image's chat template
        tokens = clip.tokenize(expression.augmented)
        assert [int(t[0]) for t in tokens["qwen3_4b"][0]] == expression.ids  # ComfyUI's own tokenization
        alone = clip.encode_from_tokens(tokens)  # the expression as ComfyUI encodes that prompt
        torch.testing.assert_close(expr.embeds[:, start:end], alone.float(), atol=1e-5, rtol=0)
    (att,) = run_node(
        pack, "RefAMCaptureAttentionFlux", model=model, vae=vae, image=image, conditioning=cond, expression=expr,
        sigma=0.75, seed=0, blocks="all", resolution=96,
    )  # fmt: skip
    captured = att.captured
    assert captured.meta["architecture"] == "Z-Image"
    assert [b.name for b in captured.blocks] == ["single.0", "single.1"]
    heat, _overlay, heatmaps = run_node(pack, "RefAMHeatmap", attention=att, image=image)
    assert heat.shape == (2, 77, 123) and float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0
    points_json, *_ = run_node(pack, "RefAMPoint", heatmaps=heatmaps)
    assert len(json.loads(points_json)) == 2
    _grid, report, _text, _diagnostics = run_node(pack, "RefAMTokenMaps", attention=att, image_index=0)
    assert report.startswith("model: Z-Image")
