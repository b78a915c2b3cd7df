"""The node chain in-process on FLUX.2 klein's layout: a tiny FLUX.2 MODEL, a klein CLIP (Qwen3
in its chat template) and a FLUX.2 VAE (latent batch norm, 1/16), as a user's graph would wire them."""

from __future__ import annotations

import json

import pytest
import torch

from comfy_support import (
    comfy_flux2_from_diffusers,
    import_comfy,
    load_pack,
    run_node,
    tiny_flux2_vae_for_comfy,
    tiny_klein_clip,
)
from tiny_models import tiny_flux2_transformer

pytestmark = [pytest.mark.comfyui, pytest.mark.comfy_model("flux2")]


@pytest.fixture(scope="module")
def pack():
    import_comfy()
    return load_pack()



@pytest.fixture(scope="module")
def objects(pack):
    clip, _ = tiny_klein_clip()
    vae = tiny_flux2_vae_for_comfy(seed=4)
    # the klein CLIP's context: Qwen3 layers 9, 18, 27 concatenated (3 x 64)
    model = comfy_flux2_from_diffusers(tiny_flux2_transformer(seed=3, in_channels=vae.latent_channels, joint_attention_dim=192))
    return model, clip, vae



def test_flux2_klein_node_chain_end_to_end(pack, objects):
    model, clip, vae = objects
    image = torch.full((2, 77, 123, 3), 0.5)
    image[:, 10:40, 8:45] = torch.tensor([0.9, 0.1, 0.1])
    (cond,) = run_node(pack, "RefAMCaptionConditioning", clip=clip, caption="two squares", guidance=3.5)
    assert cond[0][0].shape[1] == 512  # klein's prompt: its chat template, padded to 512
    (expr,) = run_node(pack, "RefAMReferringExpression", clip=clip, expressions="the red square on the left\nthe grey one")
    roles = [t.role.value for t in expr.tokenized[0].tokens]
    assert roles[:3] == ["eos"] * 3 and roles[-9:] == ["eos"] * 9  # the chat template around the expression
    assert expr.embeds.shape[-1] == 192 and expr.layout.lengths == tuple(len(t.ids) for t in expr.tokenized)
    (att,) = run_node(
        pack, "RefAMCaptureAttentionFlux", model=model, vae=vae, image=image, conditioning=cond, expression=expr,
        sigma=0.75, seed=0, blocks="all", resolution=96,
    )  # fmt: skip
    captured = att.captured
    assert captured.meta["architecture"] == "FLUX.2"
    assert [b.name for b in captured.blocks] == ["double.0", "double.1", "single.0", "single.1"]
    assert captured.geometry.grid == tuple(side // 16 for side in captured.geometry.model_size)  # 1/16, patch 1
    heat, overlay, heatmaps = run_node(pack, "RefAMHeatmap", attention=att, image=image)
    assert heat.shape == (4, 77, 123) and float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0
    points_json, *_ = run_node(pack, "RefAMPoint", heatmaps=heatmaps)
    assert len(json.loads(points_json)) == 4
    _grid, report, _text, diagnostics = run_node(pack, "RefAMTokenMaps", attention=att, image_index=0)
    assert report.startswith("model: FLUX.2") and "role=eos" in report
    assert len(json.loads(diagnostics)) == 2
