"""The node chain in-process on Qwen-Image: a tiny Qwen-Image MODEL, a Qwen-Image CLIP (Qwen2.5-VL
in its chat template) and a Wan 2.1-layout VAE, which encodes each image of the batch alone."""

from __future__ import annotations

import json

import pytest
import torch

from comfy_support import (
    comfy_qwen_image_from_diffusers,
    import_comfy,
    load_pack,
    run_node,
    tiny_qwen_image_clip,
    tiny_wan21_vae,
)
from tiny_models import tiny_qwen_image_transformer

pytestmark = [pytest.mark.comfyui, pytest.mark.comfy_model("qwen_image")]


@pytest.fixture(scope="module")
def pack():
    import_comfy()
    return load_pack()




def test_qwen_image_node_chain_end_to_end(pack):
    clip, hf = tiny_qwen_image_clip()
    model = comfy_qwen_image_from_diffusers(tiny_qwen_image_transformer(seed=3, joint_attention_dim=hf.config.hidden_size))
    vae = tiny_wan21_vae(seed=4)
    image = torch.full((2, 77, 123, 3), 0.5)
    image[1, 10:40, 8:45] = torch.tensor([0.9, 0.1, 0.1])  # two different images: the batch is not one clip
    (cond,) = run_node(pack, "RefAMCaptionConditioning", clip=clip, caption="a red square")
    (expr,) = run_node(pack, "RefAMReferringExpression", clip=clip, expressions="the red square\nthe grey background")
    assert [t.role.value for t in expr.tokenized[0].tokens][-5:] == ["eos"] * 5  # the kept template tail
    (att,) = run_node(
        pack, "RefAMCaptureAttentionFlux", model=model, vae=vae, image=image, conditioning=cond, expression=expr,
        sigma=0.75, seed=0, blocks="all", resolution=96,
    )  # fmt: skip
    captured = att.captured
    assert captured.meta["architecture"] == "Qwen-Image" and captured.batch_size == 2
    assert captured.geometry.grid == tuple(side // 16 for side in captured.geometry.model_size)
    heat, _overlay, heatmaps = run_node(pack, "RefAMHeatmap", attention=att, image=image)
    assert heat.shape == (4, 77, 123) and float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0
    points_json, *_ = run_node(pack, "RefAMPoint", heatmaps=heatmaps)
    assert len(json.loads(points_json)) == 4
    _grid, report, _text, _diagnostics = run_node(pack, "RefAMTokenMaps", attention=att, image_index=1)
    assert report.startswith("model: Qwen-Image")
