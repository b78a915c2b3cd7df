"""The node chain in-process against real ComfyUI objects (skipped without ``COMFYUI_PATH``)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from comfy_support import (
    comfy_flux_from_diffusers,
    comfy_vae_from_diffusers,
    import_comfy,
    load_pack,
    run_node,
    tiny_flux_clip,
    tiny_vae_for_comfy,
)
from tiny_models import tiny_flux_transformer

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def pack():
    import_comfy()
    return load_pack()



@pytest.fixture(scope="module")
def objects(pack):
    model = comfy_flux_from_diffusers(tiny_flux_transformer(seed=3, guidance_embeds=True))
    vae = comfy_vae_from_diffusers(tiny_vae_for_comfy(seed=4))
    clip, _ = tiny_flux_clip()
    return model, clip, vae


@pytest.fixture(scope="module")
def sam2_folder(tmp_path_factory, pack):
    import folder_paths
    from safetensors.torch import save_file

    from refam.segment import build_sam2_module

    folder = tmp_path_factory.mktemp("sam2_models")
    module = build_sam2_module("sam2.1_hiera_t", image_size=1024)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / "sam2.1_hiera_tiny.safetensors"))
    folder_paths.add_model_folder_path("sam2", str(folder))
    return folder



def _image(n=2, h=77, w=123):
    """A batch whose size is not a multiple of 16: two flat squares on grey."""
    arr = np.full((n, h, w, 3), 0.5, dtype=np.float32)
    arr[:, 10:40, 8:45] = (0.9, 0.1, 0.1)
    arr[:, 30:70, 70:115] = (0.1, 0.2, 0.9)
    return torch.from_numpy(arr)


def test_node_chain_end_to_end(pack, objects, sam2_folder):
    model, clip, vae = objects
    image = _image()
    (cond,) = run_node(pack, "RefAMCaptionConditioning", clip=clip, caption="", guidance=3.5)
    (expr,) = run_node(
        pack,
        "RefAMReferringExpression",
        clip=clip,
        expressions="the red square on the left\n\nthe blue one",
        magnets="_ with to and pink",
        noun_phrase=True,
        spatial_bias=True,
    )
    assert expr.texts == ["the red square on the left", "the blue one"]
    (att,) = run_node(
        pack,
        "RefAMCaptureAttentionFlux",
        model=model,
        vae=vae,
        image=image,
        conditioning=cond,
        expression=expr,
        sigma=0.75,
        seed=0,
        blocks="all",
        resolution=128,
    )
    (att,) = run_node(
        pack,
        "RefAMFilterTokens",
        attention=att,
        drop_stop_words=True,
        drop_magnets=True,
        drop_eos=True,
        score="concept_attention",
        remove_gas=True,
        gas_threshold=10.0,
        gas_rule="paper",
        noun_phrase=False,
    )
    assert att.options.noun_phrase is False
    heat, overlay, heatmaps = run_node(
        pack, "RefAMHeatmap", attention=att, image=image, blocks="double,single.1", skip_fraction=0.0, spatial_bias=True
    )
    assert heat.shape == (4, 77, 123) and heat.dtype == torch.float32
    assert float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0
    assert overlay.shape == (4, 77, 123, 3)
    points_json, points, *_sam3 = run_node(pack, "RefAMPoint", heatmaps=heatmaps, mode="argmax", count=3, min_distance=2)
    rows = json.loads(points_json)
    assert [(r["image"], r["expression"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(0 <= r["x"] < 123 and 0 <= r["y"] < 77 for r in rows)
    # Same image twice, same seed: the entries of image 0 and image 1 agree (batch order check).
    assert rows[0]["x"] == rows[2]["x"] and rows[1]["y"] == rows[3]["y"]
    (segmenter,) = run_node(pack, "RefAMLoadSAM2", checkpoint="sam2.1_hiera_tiny.safetensors", device="auto", dtype="auto")
    mask, preview = run_node(pack, "RefAMSegment", segmenter=segmenter, image=image, points=points)
    assert mask.shape == (4, 77, 123) and preview.shape == (4, 77, 123, 3)
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    # An interior point, a negative point and a box, in ComfyUI SAM3 Detect's formats; the Segment
    # node gives all of them to SAM2 and picks the candidate that agrees with the heatmap.
    _json, prompted, positive, negative, boxes = run_node(
        pack, "RefAMPoint", heatmaps=heatmaps, mode="interior", negative_points=1, box=True
    )
    positive, negative = json.loads(positive), json.loads(negative)
    assert len(positive) == 4 and all(set(p) == {"x", "y"} and all(isinstance(v, int) for v in p.values()) for p in positive)
    assert len(negative) <= 4 and all(isinstance(p["x"], int) for p in negative)
    assert len(boxes) == 2 and all(len(per_image) == 2 for per_image in boxes)
    for i, p in enumerate(positive):
        box = boxes[i // 2][i % 2]
        assert set(box) == {"x", "y", "width", "height"} and box["width"] >= 1 and box["height"] >= 1
        assert box["x"] <= p["x"] <= box["x"] + box["width"] and box["y"] <= p["y"] <= box["y"] + box["height"]
        assert prompted.prompts[i].regions.mask()[p["y"], p["x"]]  # inside the heatmap's target region
    chosen, _preview = run_node(pack, "RefAMSegment", segmenter=segmenter, image=image, points=prompted, mask_choice="agreement")
    assert chosen.shape == (4, 77, 123)
    grid, report, text_attention, diagnostics = run_node(pack, "RefAMTokenMaps", attention=att, image_index=1)
    assert grid.ndim == 4 and grid.shape[-1] == 3
    assert "role=magnet" in report and "the red square on the left" in report
    # Figs. 1, 3 and 4 for each expression: one text-to-text tile per block, entropies in [0, 1]
    analyses = json.loads(diagnostics)
    assert [a["expression"] for a in analyses] == att.expressions.texts
    assert text_attention.ndim == 4 and text_attention.shape[-1] == 3
    for a in analyses:
        n_blocks, n_tokens = len(a["blocks"]), len(a["pieces"])
        assert len(a["entropy_mean"]) == len(a["entropy_min"]) == len(a["text_attention"]) == n_blocks
        assert all(0.0 <= lo <= m <= 1.0 + 1e-6 for lo, m in zip(a["entropy_min"], a["entropy_mean"], strict=True))
        assert len(a["text_mass"]) == len(a["image_share"]) == len(a["gas"]) == n_tokens
        assert abs(sum(a["image_share"]) - 1.0) < 1e-4


def test_all_in_one(pack, objects, sam2_folder):
    model, clip, vae = objects
    (segmenter,) = run_node(pack, "RefAMLoadSAM2", checkpoint="sam2.1_hiera_tiny.safetensors", device="cpu", dtype="auto")
    mask, heat, points_json = run_node(
        pack,
        "RefAMSegmentAllInOne",
        model=model,
        clip=clip,
        vae=vae,
        segmenter=segmenter,
        image=_image(n=1, h=50, w=66),
        expressions="the blue square",
        caption="two squares",
        magnets="",
        noun_phrase=True,
        spatial_bias=True,
        sigma=0.75,
        seed=3,
        guidance=3.5,
        resolution=96,
    )
    assert mask.shape == heat.shape == (1, 50, 66)
    assert len(json.loads(points_json)) == 1


def test_bad_inputs_fail_clearly(pack, objects):
    import comfy.model_patcher

    model, clip, vae = objects
    with pytest.raises(ValueError, match="empty"):
        run_node(pack, "RefAMReferringExpression", clip=clip, expressions=" \n  ", magnets="", noun_phrase=False, spatial_bias=False)
    with pytest.raises(FileNotFoundError, match="searched: .*sams"):
        run_node(pack, "RefAMLoadSAM", checkpoint="missing_sam.pth", device="cpu", dtype="auto")

    class Unet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.diffusion_model = torch.nn.Conv2d(4, 4, 1)

    not_flux = comfy.model_patcher.ModelPatcher(Unet(), torch.device("cpu"), torch.device("cpu"))
    (expr,) = run_node(pack, "RefAMReferringExpression", clip=clip, expressions="a cat", magnets="", noun_phrase=False, spatial_bias=False)
    capture = dict(vae=vae, conditioning=[], expression=expr, sigma=0.75, seed=0, blocks="all", resolution=64)
    nan_image = _image(n=1)
    nan_image[0, 5, 5, 0] = float("nan")
    bad_inputs = [
        ({"image": nan_image}, "NaN"),
        ({"image": _image(n=1), "blocks": "0-999999999"}, "999999999"),
        ({"image": _image(n=1), "sigma": 1.5}, "sigma must be in"),
        ({"image": _image(n=1), "resolution": 16}, "resolution must be at least"),
    ]
    for change, message in bad_inputs:  # node errors with RefAM's message, before any pass runs
        with pytest.raises(ValueError, match=message):
            run_node(pack, "RefAMCaptureAttentionFlux", model=model, **{**capture, **change})
    with pytest.raises(TypeError, match="got Conv2d"):
        run_node(
            pack,
            "RefAMCaptureAttentionFlux",
            model=not_flux,
            vae=vae,
            image=_image(n=1),
            conditioning=[],
            expression=expr,
            sigma=0.75,
            seed=0,
            blocks="all",
            resolution=64,
        )


def test_feature_mode_node_drives_the_capture(pack, objects):
    model, clip, vae = objects
    image = _image(n=1)
    (cond,) = run_node(pack, "RefAMCaptionConditioning", clip=clip, caption="two squares", guidance=3.5)
    (expr,) = run_node(pack, "RefAMReferringExpression", clip=clip, expressions="the red square", magnets="_ with to and pink", noun_phrase=True, spatial_bias=True)
    capture = dict(model=model, vae=vae, image=image, conditioning=cond, expression=expr, sigma=0.75, seed=0, blocks="all", resolution=64)
    (features,) = run_node(pack, "RefAMFeatureMode", features="inversion", inversion_steps=3, collect_steps="1-2")
    (att,) = run_node(pack, "RefAMCaptureAttentionFlux", features=features, **capture)
    assert att.captured.meta["features"]["mode"] == "inversion"
    assert att.captured.meta["features"]["collect_steps"] == [1, 2]
    heat, *_ = run_node(pack, "RefAMHeatmap", attention=att, image=image)
    assert heat.shape == (1, 77, 123) and torch.isfinite(heat).all()
    (several,) = run_node(pack, "RefAMFeatureMode", sigmas="0.5, 0.9")
    (att,) = run_node(pack, "RefAMCaptureAttentionFlux", features=several, **capture)
    assert att.captured.meta["features"]["sigmas"] == [0.5, 0.9]
    # Without the features input the node is the paper's single pass, as before.
    (att,) = run_node(pack, "RefAMCaptureAttentionFlux", **capture)
    assert att.captured.meta["features"]["mode"] == "single" and att.captured.meta["features"]["sigmas"] is None
    for change, message in [
        ({"features": "inversion", "sigmas": "0.5"}, "clear it for inversion"),
        ({"sigmas": "0.5, lots"}, "comma-separated noise levels"),
        ({"sigmas": "0.5, 2"}, "sigma must be in"),
        ({"features": "inversion", "collect_steps": "40"}, "past the last denoising step"),
    ]:
        with pytest.raises(ValueError, match=message):
            run_node(pack, "RefAMFeatureMode", **change)


def test_mochi_video_chain(pack, sam2_folder):
    """Capture (Mochi) -> Filter -> Heatmap on the latent frames -> Point -> Propagate over the clip."""
    from comfy_support import PooledVideoVAE, tiny_comfy_mochi, tiny_mochi_clip

    model = tiny_comfy_mochi(32)
    clip_model = tiny_mochi_clip()  # ComfyUI's Mochi CLIP (real MochiT5Tokenizer), T5 32 wide as the model
    import comfy.text_encoders.genmo

    assert isinstance(clip_model.tokenizer, comfy.text_encoders.genmo.MochiT5Tokenizer)
    frames = torch.zeros(8, 48, 64, 3)
    for t in range(8):
        frames[t, 10:30, 4 + 3 * t : 24 + 3 * t] = torch.tensor([0.9, 0.1, 0.1])
    (cond,) = run_node(pack, "RefAMCaptionConditioning", clip=clip_model, caption="a red box moving right", guidance=3.5)
    assert cond[0][1]["attention_mask"].shape == (1, cond[0][0].shape[1])  # Mochi's T5 returns its mask
    (expr,) = run_node(
        pack, "RefAMReferringExpression", clip=clip_model, expressions="the red box", magnets="_ with",
        noun_phrase=False, spatial_bias=True,
    )
    att, shown, selection = run_node(
        pack, "RefAMCaptureAttentionMochi", model=model, vae=PooledVideoVAE(), frames=frames, conditioning=cond,
        expression=expr, sigma=0.01, seed=0, blocks="all", resolution=64,
    )
    # 8 frames -> padded to 13 -> 3 latent frames, all holding real frames; one shown frame each.
    assert att.captured.batch_size == 3 and selection.indices == [0, 3, 7] and shown.shape == (3, 48, 64, 3)
    (att,) = run_node(
        pack, "RefAMFilterTokens", attention=att, drop_stop_words=True, drop_magnets=True, drop_eos=True,
        score="concept_attention", remove_gas=True, gas_threshold=10.0, gas_rule="paper", noun_phrase=False,
    )
    heat, _overlay, heatmaps = run_node(pack, "RefAMHeatmap", attention=att, image=shown, blocks="all", skip_fraction=0.0, spatial_bias=True)
    assert heat.shape == (3, 48, 64)
    _json, points, *_sam3 = run_node(pack, "RefAMPoint", heatmaps=heatmaps, mode="interior", box=True)
    (segmenter,) = run_node(pack, "RefAMLoadSAM2", checkpoint="sam2.1_hiera_tiny.safetensors", device="cpu", dtype="auto")
    mask, preview, report = run_node(
        pack, "RefAMPropagateSAM2Video", segmenter=segmenter, frames=frames, points=points, heatmaps=heatmaps,
        points_from=1, direction="both", prompt_frame="first", selection=selection,
    )
    assert mask.shape == (8, 48, 64) and preview.shape == (8, 48, 64, 3)
    # the paper's protocol by default: the first frame prompts SAM2
    assert report.startswith("'the red box': prompts on frames [0]; evidence 0:")
    _mask, _preview, report = run_node(
        pack, "RefAMPropagateSAM2Video", segmenter=segmenter, frames=frames, points=points, heatmaps=heatmaps,
        points_from=1, direction="forward", prompt_frame="best", selection=selection,
    )
    assert all(f"{f}:" in report for f in (0, 3, 7))  # every latent frame's frame competed


def test_segmenter_folders_register_on_this_core_and_list_by_family(pack, tmp_path):
    """``models/sams`` and ``models/sam2`` register through the running core's own folder registry
    (a dict upstream, a ``FolderNames`` object in the packaged core), keep paths already added,
    survive a second registration, and each loader lists its own family's files."""
    from refam.backends.comfy_runtime import folder_paths, list_checkpoints, register_model_folders

    fp = folder_paths()
    extra = tmp_path / "extra_sam2"
    extra.mkdir()
    for name in ("sam2.1_hiera_small.pt", "sam_vit_h_4b8939.pth", "my_segmenter.safetensors", "notes.txt"):
        (extra / name).write_bytes(b"")
    fp.add_model_folder_path("sam2", str(extra))  # as extra_model_paths.yaml would
    register_model_folders()
    register_model_folders()
    paths = [str(p) for p in fp.folder_names_and_paths["sam2"][0]]
    assert paths.count(str(extra)) == 1
    assert os.path.join(fp.models_dir, "sam2") in paths
    # the suffixes are read back through the listings (the packaged core iterates its own
    # extension sets character by character when asked for them directly)
    sam2_files = list_checkpoints(("sam2", "sams"), "sam2")
    sam_files = list_checkpoints(("sam2",), "sam")
    assert "sam2.1_hiera_small.pt" in sam2_files and "sam_vit_h_4b8939.pth" not in sam2_files
    assert "sam_vit_h_4b8939.pth" in sam_files and "sam2.1_hiera_small.pt" not in sam_files
    assert "my_segmenter.safetensors" in sam2_files and "my_segmenter.safetensors" in sam_files
    assert "notes.txt" not in sam2_files


def test_pack_entry_point_names_its_requirements_file(pack):
    import asyncio

    from refam.install_hints import install_hint, use_comfyui_hints

    try:
        asyncio.run(pack.comfy_entrypoint())
        assert "custom_nodes/" in install_hint("sam2") and "requirements.txt" in install_hint("sam2")
    finally:
        use_comfyui_hints(None)


def test_kontext_reference_latent_leaves_the_maps_on_the_target(pack, objects):
    """FLUX.1 Kontext: a reference latent in the conditioning (what ComfyUI's ReferenceLatent node
    adds) joins the pass after the target's tokens; the maps stay the target's, one per patch."""
    model, clip, vae = objects
    image = _image(n=1)
    (cond,) = run_node(pack, "RefAMCaptionConditioning", clip=clip, caption="", guidance=2.5)
    reference = torch.randn(1, 4, 10, 10, generator=torch.Generator().manual_seed(3))
    kontext = [[c, {**extra, "reference_latents": [reference]}] for c, extra in cond]
    (expr,) = run_node(pack, "RefAMReferringExpression", clip=clip, expressions="the red square")
    (att,) = run_node(
        pack, "RefAMCaptureAttentionFlux", model=model, vae=vae, image=image, conditioning=kontext, expression=expr,
        sigma=0.75, seed=0, blocks="all", resolution=128,
    )  # fmt: skip
    (plain,) = run_node(
        pack, "RefAMCaptureAttentionFlux", model=model, vae=vae, image=image, conditioning=cond, expression=expr,
        sigma=0.75, seed=0, blocks="all", resolution=128,
    )  # fmt: skip
    grid = att.captured.geometry.grid
    assert grid == plain.captured.geometry.grid
    for with_ref, without in zip(att.captured.blocks, plain.captured.blocks, strict=True):
        assert with_ref.logits.shape == without.logits.shape == (1, grid[0] * grid[1], expr.layout.total)
    assert not torch.equal(att.captured.blocks[-1].logits, plain.captured.blocks[-1].logits)  # the reference was seen
