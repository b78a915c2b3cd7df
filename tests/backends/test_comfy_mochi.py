"""ComfyUI Mochi backend on ComfyUI's own ``AsymmDiTJoint`` built small (skipped without ``COMFYUI_PATH``)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from comfy_support import import_comfy, interrupt_exception, scores_agree, tiny_comfy_mochi

pytestmark = pytest.mark.comfyui

T5_DIM = 32


@pytest.fixture(scope="module", autouse=True)
def comfy():
    import_comfy()


@pytest.fixture(scope="module")
def model():
    return tiny_comfy_mochi(T5_DIM)


@pytest.fixture(scope="module")
def inputs():
    from refam.attention import ExpressionLayout

    g = torch.Generator().manual_seed(3)
    mask = torch.ones(1, 16, dtype=torch.long)
    mask[0, 11:] = 0
    positive = [[torch.randn(1, 16, T5_DIM, generator=g), {"attention_mask": mask}]]
    latent = torch.randn(1, 12, 3, 8, 12, generator=g)
    embeds = torch.randn(1, 7, T5_DIM, generator=g)
    return positive, latent, embeds, ExpressionLayout((3, 4))


def test_output_bit_identical_and_model_untouched(model, inputs):
    from refam.backends.comfy_capture import ComfyCapture, denoise_once
    from refam.noise import capture_noise

    positive, latent, embeds, layout = inputs
    before = copy.deepcopy(model.model_options)
    noise = capture_noise(latent.shape, 2).contiguous()
    plain = denoise_once(model, latent, positive, 0.05, noise)
    session = ComfyCapture(model, embeds, layout)
    patched = denoise_once(session.patched_model(), latent, positive, 0.05, noise)
    assert torch.equal(plain, patched)
    assert [b.name for b in session.records] == ["mochi.0", "mochi.1", "mochi.2"]
    assert model.model_options == before and not model.wrappers


def test_block0_maps_equal_a_recomputation(model, inputs):
    """Visual q from block 0's own inputs (recorded by a plain patch) against expression k."""
    from comfy.ldm.genmo.joint_model.asymm_models_joint import modulated_rmsnorm
    from comfy.ldm.genmo.joint_model.temporal_rope import apply_rotary_emb_qk_real

    from refam.backends.comfy_mochi import capture_mochi

    positive, latent, embeds, layout = inputs
    seen = {}

    def record(args, extra):
        seen.update({k: args[k] for k in ("img", "vec", "rope_cos", "rope_sin")})
        seen["img"] = args["img"].clone()
        return extra["original_block"](args)

    watcher = model.clone()
    watcher.set_model_patch_replace(record, "dit", "double_block", 0)
    frames = np.zeros((13, 32, 48, 3), dtype=np.uint8)
    captured = capture_mochi(
        watcher, None, frames, positive, embeds, layout, [None, None], sigma=0.05, seed=2, blocks=[0], latent=latent
    )
    dm = model.model.diffusion_model
    block = dm.blocks[0]
    attn = block.attn
    with torch.no_grad():
        c = torch.nn.functional.silu(seen["vec"])
        x = modulated_rmsnorm(seen["img"], block.mod_x(c).chunk(4, dim=1)[0])
        q = attn.q_norm_x(attn.qkv_x(x).view(1, x.shape[1], 3, attn.num_heads, -1)[:, :, 0])
        q = apply_rotary_emb_qk_real(q, seen["rope_cos"], seen["rope_sin"])
        y = modulated_rmsnorm(dm.t5_yproj(embeds), block.mod_y(c).chunk(4, dim=1)[0])
        k = attn.k_norm_y(attn.qkv_y(y).view(1, y.shape[1], 3, attn.num_heads, -1)[:, :, 1])
        logits = torch.einsum("bnhd,blhd->bnl", q.float(), k.float()) / math.sqrt(q.shape[-1]) / attn.num_heads
    per_frame = logits.reshape(3, -1, logits.shape[-1])  # one capture image per latent frame
    torch.testing.assert_close(captured.blocks[0].logits, per_frame, atol=2e-5, rtol=1e-4)
    assert captured.geometry.grid == (4, 6) and captured.batch_size == 3


def test_padding_frames_are_dropped(model, inputs):
    from refam.backends.comfy_mochi import capture_mochi

    positive, latent, embeds, layout = inputs
    frames = np.zeros((7, 32, 48, 3), dtype=np.uint8)  # 7 frames = latent frames 0 and 1; the third is padding
    captured = capture_mochi(model, None, frames, positive, embeds, layout, [None, None], latent=latent, blocks=[1])
    assert captured.batch_size == 2 and [b.name for b in captured.blocks] == ["mochi.1"]
    assert captured.geometry.model_size == (64, 96)


def test_interrupt_and_wrong_model(model, inputs):
    import comfy.model_management as mm

    from refam.backends.comfy_mochi import capture_mochi, mochi_diffusion_model

    positive, latent, embeds, layout = inputs
    before = copy.deepcopy(model.model_options)
    frames = np.zeros((13, 32, 48, 3), dtype=np.uint8)
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(interrupt_exception()):
            capture_mochi(model, None, frames, positive, embeds, layout, [None, None], latent=latent)
    finally:
        mm.interrupt_current_processing(False)
    assert model.model_options == before and not model.wrappers

    class Other(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.diffusion_model = torch.nn.Identity()

    import comfy.model_patcher

    other = comfy.model_patcher.ModelPatcher(Other(), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(TypeError, match="got Identity"):
        mochi_diffusion_model(other)


def test_cross_backend_agreement_with_diffusers(inputs):
    """The same random Mochi weights (2 full-width blocks) in ComfyUI and in diffusers give the same maps."""
    from diffusers import MochiTransformer3DModel

    from comfy_support import tiny_comfy_mochi
    from genmo_layout import to_diffusers_mochi
    from refam.architectures.mochi import mochi_timestep, per_latent_frame
    from refam.backends.comfy_mochi import capture_mochi
    from refam.backends.diffusers_capture import capture_attention
    from refam.noise import capture_noise

    positive, latent, embeds, layout = inputs
    comfy_model = tiny_comfy_mochi(T5_DIM, seed=5, depth=2, full_width=True)
    diffusers_model = MochiTransformer3DModel(
        num_layers=2, text_embed_dim=T5_DIM, time_embed_dim=256, max_sequence_length=16
    ).eval()
    sd = to_diffusers_mochi(comfy_model.model.diffusion_model.state_dict(), depth=2)
    diffusers_model.load_state_dict(sd, strict=True)

    sigma, seed = 0.05, 4
    frames = np.zeros((13, 64, 96, 3), dtype=np.uint8)
    comfy_maps = capture_mochi(
        comfy_model, None, frames, positive, embeds, layout, [None, None], sigma=sigma, seed=seed, latent=latent
    )
    x0 = comfy_model.model.latent_format.process_in(latent)
    noisy = (1 - sigma) * x0 + sigma * capture_noise(latent.shape, seed)
    with torch.no_grad(), capture_attention(diffusers_model, embeds, layout, modality="video") as session:
        diffusers_model(
            hidden_states=noisy,
            encoder_hidden_states=positive[0][0],
            timestep=torch.tensor([mochi_timestep(sigma)]),
            encoder_attention_mask=positive[0][1]["attention_mask"],
            return_dict=False,
        )
    diff_maps = per_latent_frame(session.records, latent.shape[2])
    worst = 0.0
    for a, b in zip(comfy_maps.blocks, diff_maps, strict=True):
        worst = max(worst, *scores_agree(a, b, MOCHI_CROSS_BACKEND_ATOL))
        torch.testing.assert_close(a.text_mass, b.text_mass, atol=MOCHI_CROSS_BACKEND_ATOL, rtol=0)
    print(f"Mochi cross-backend max relative |Δscore| (all scores) = {worst:.2e}")


# float32 on both sides; the implementations differ only in op order (fused q/k/v, RMSNorm and RoPE
# arithmetic): measured ~5e-7 on logits of magnitude ~1.
MOCHI_CROSS_BACKEND_ATOL = 1e-4
