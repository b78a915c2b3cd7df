"""Mochi capture on a tiny random diffusers ``MochiTransformer3DModel`` (+ tiny Mochi VAE, tiny T5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from refam.architectures.mochi import latent_frame_of, latent_frames, mochi_timestep
from refam.attention import ExpressionLayout
from refam.backends.diffusers_capture import capture_attention
from refam.backends.diffusers_mochi import DiffusersMochi
from tiny_models import tiny_t5

TEXT_DIM = 32


def tiny_mochi(seed: int = 0):
    from diffusers import MochiTransformer3DModel

    torch.manual_seed(seed)
    model = MochiTransformer3DModel(
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=3,
        pooled_projection_dim=24,
        in_channels=12,
        text_embed_dim=TEXT_DIM,
        time_embed_dim=32,
        max_sequence_length=32,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        # Zero frequencies make RoPE the identity; random ones make a wrong rotation show.
        model.pos_frequencies.copy_(torch.randn_like(model.pos_frequencies))
    return model.eval()


def tiny_mochi_vae(seed: int = 0):
    from diffusers import AutoencoderKLMochi

    torch.manual_seed(seed)
    return AutoencoderKLMochi(
        encoder_block_out_channels=(32, 32, 32, 32),
        decoder_block_out_channels=(32, 32, 32, 32),
        layers_per_block=(1, 1, 1, 1, 1),
    ).eval()


def _inputs(t: int = 3, h: int = 4, w: int = 6, text: int = 9, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 12, t, h * 2, w * 2, generator=g)
    caption = torch.randn(1, text, TEXT_DIM, generator=g)
    mask = torch.ones(1, text, dtype=torch.long)
    mask[0, -3:] = 0  # padding the model must ignore
    expr = torch.randn(1, 7, TEXT_DIM, generator=g)
    return latents, caption, mask, expr, ExpressionLayout((3, 4))


def _forward(model, latents, caption, mask, sigma=0.01):
    return model(
        hidden_states=latents,
        encoder_hidden_states=caption,
        timestep=torch.tensor([mochi_timestep(sigma)]),
        encoder_attention_mask=mask,
        return_dict=False,
    )[0]


def test_frame_bookkeeping():
    assert [latent_frames(n) for n in (1, 7, 13, 31)] == [1, 2, 3, 6]
    assert [latent_frame_of(t) for t in (0, 1, 6, 7, 12, 13)] == [0, 1, 1, 2, 2, 3]
    assert mochi_timestep(0.01) == pytest.approx(990.0)


def test_denoiser_output_bit_identical_with_capture():
    model = tiny_mochi()
    latents, caption, mask, expr, layout = _inputs()
    with torch.no_grad():
        plain = _forward(model, latents, caption, mask)
        with capture_attention(model, expr, layout, modality="video") as session:
            captured = _forward(model, latents, caption, mask)
    assert torch.equal(plain, captured)
    assert [b.name for b in session.records] == ["mochi.0", "mochi.1", "mochi.2"]
    assert session.records[0].logits.shape == (1, 3 * 4 * 6, 7)
    assert not model.transformer_blocks[0]._forward_hooks  # everything removed


def test_block0_maps_equal_an_independent_recomputation():
    """Visual q (RMSNorm-zero modulation, per-head RMSNorm, RoPE) against expression k, written out here."""
    model = tiny_mochi()
    latents, caption, mask, expr, layout = _inputs()
    with torch.no_grad(), capture_attention(model, expr, layout, modality="video", blocks=[0], stop_after_last=True) as s:
        from refam.attention import CaptureComplete

        with pytest.raises(CaptureComplete):
            _forward(model, latents, caption, mask)
        temb, _ = model.time_embed(torch.tensor([990.0]), caption, mask, hidden_dtype=torch.float32)
        b, c, t, hh, ww = latents.shape
        x = model.patch_embed(latents.permute(0, 2, 1, 3, 4).flatten(0, 1)).unflatten(0, (b, -1)).flatten(1, 2)
        block = model.transformer_blocks[0]
        attn = block.attn1
        rms = lambda z: z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6)  # noqa: E731
        scale_msa = block.norm1.linear(torch.nn.functional.silu(temb)).chunk(4, dim=1)[0]
        xn = rms(x) * (1 + scale_msa[:, None])
        q = attn.to_q(xn).unflatten(2, (attn.heads, -1))
        q = rms_w(q, attn.norm_q)
        cos, sin = model.rope(model.pos_frequencies, t, hh // 2, ww // 2, device=q.device, dtype=torch.float32)
        q = torch.stack([q[..., 0::2] * cos - q[..., 1::2] * sin, q[..., 0::2] * sin + q[..., 1::2] * cos], -1).flatten(-2)
        e = model.time_embed.caption_proj(expr)
        scale_y = block.norm1_context.linear(torch.nn.functional.silu(temb)).chunk(4, dim=1)[0]
        en = rms(e) * (1 + scale_y[:, None])
        k = rms_w(attn.add_k_proj(en).unflatten(2, (attn.heads, -1)), attn.norm_added_k)
        logits = torch.einsum("bnhd,blhd->bnl", q, k) / math.sqrt(q.shape[-1]) / attn.heads
    torch.testing.assert_close(s.records[0].logits, logits, atol=3e-5, rtol=1e-4)


def rms_w(x, norm):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    return y * norm.weight if getattr(norm, "weight", None) is not None else y


def test_not_mochi_is_named():
    with pytest.raises(TypeError, match="got Linear"), capture_attention(torch.nn.Linear(2, 2), torch.zeros(1, 1, 2), ExpressionLayout((1,)), modality="video"):
        pass


@pytest.mark.parametrize("num_frames", [13, 10])
def test_per_frame_heatmaps_have_the_clips_frames_and_size(t5_tokenizer, num_frames):
    from refam.expression import tokenize_expression
    from refam.heatmap import HeatmapOptions
    from refam.language import analyze_expression
    from refam.video import frame_heatmaps

    backend = DiffusersMochi(
        transformer=tiny_mochi(),
        vae=tiny_mochi_vae(),
        t5=tiny_t5(d_model=TEXT_DIM),
        t5_tokenizer=t5_tokenizer,
        t5_max_length=32,
    )
    frames = (np.random.default_rng(0).random((num_frames, 50, 70, 3)) * 255).astype(np.uint8)
    texts = ["the dog on the left", "a red ball"]
    tokenized = [tokenize_expression(t, t5_tokenizer, max_length=32, pad_to=32) for t in texts]
    captured = backend.capture(frames, tokenized, "", sigma=0.01, resolution=64)
    assert captured.batch_size == latent_frame_of(num_frames - 1) + 1
    cues = [analyze_expression(t) for t in texts]
    heat = frame_heatmaps(captured, cues, HeatmapOptions(), num_frames)
    assert heat.shape == (num_frames, 2, 50, 70)
    assert torch.isfinite(heat).all() and float(heat.min()) >= 0 and float(heat.max()) <= 1
    # Frames of one latent frame share its heatmap; frame 0 has its own.
    assert torch.equal(heat[1], heat[6]) and not torch.equal(heat[0], heat[1])


def test_cli_segment_video_with_mochi(tmp_path, t5_tokenizer):
    """The paper's video path headless: a Mochi folder + SAM2 -> DAVIS-layout masks for every frame."""
    import json

    from PIL import Image
    from safetensors.torch import save_file

    from refam.cli import main
    from refam.segment import SAM2_VIDEO_MODEL_OVERRIDES, build_sam2_module

    folder = tmp_path / "mochi"
    tiny_mochi().save_pretrained(folder / "transformer")
    tiny_mochi_vae().save_pretrained(folder / "vae")
    tiny_t5(d_model=TEXT_DIM).save_pretrained(folder / "text_encoder")
    t5_tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "MochiPipeline"}))
    torch.manual_seed(0)
    tracker = build_sam2_module("sam2.1_hiera_t", image_size=256, model_overrides=SAM2_VIDEO_MODEL_OVERRIDES)
    ckpt = tmp_path / "sam2.1_hiera_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tracker.state_dict().items()}, str(ckpt))
    clip = tmp_path / "clip"
    clip.mkdir()
    rng = np.random.default_rng(0)
    for t in range(9):
        Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(clip / f"{t:05d}.png")
    common = ["segment-video", str(clip), "the dog", "--video-model", str(folder), "--segmenter", str(ckpt),
              "--sam2-image-size", "256", "--resolution", "64", "--quiet"]
    out = tmp_path / "out"
    assert main([*common, "--out", str(out)]) == 0
    masks = sorted((out / "00_the-dog").glob("*.png"))
    assert len(masks) == 9 and Image.open(masks[0]).size == (56, 40)
    summary = json.loads((out / "summary.json").read_text())
    # The paper's protocol: the first frame prompts, at Mochi's own σ (timestep 990); the explicit
    # --resolution is honoured.
    assert summary["results"][0]["prompt_frame"] == 0 and list(summary["results"][0]["evidence"]) == ["0"]
    assert summary["options"]["sigma"] == 0.01 and summary["options"]["resolution"] == 64

    # By name: the most evident latent frame (9 frames -> padded to 13 -> latent frames 0, 1, 2
    # shown on frames 0, 3, 8), and an explicit σ equal to FLUX's default stays as given.
    best = tmp_path / "best"
    assert main([*common, "--prompt-frame", "best", "--sigma", "0.75", "--out", str(best)]) == 0
    summary = json.loads((best / "summary.json").read_text())
    assert sorted(int(k) for k in summary["results"][0]["evidence"]) == [0, 3, 8]
    assert summary["options"]["sigma"] == 0.75
