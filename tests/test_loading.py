"""Loading FLUX from ComfyUI-style single files (BFL layout, prefixes, inferred depth) offline."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from bfl_layout import to_bfl
from conftest import REPO_ROOT
from refam.loading import load_flux
from refam.single_files import load_clip_file, load_t5_file, load_transformer_file
from refam.weights import find_weights_file
from tiny_models import tiny_clip, tiny_t5


def _no_meta(module):
    return not any(t.is_meta for t in [*module.parameters(), *module.buffers()])


@pytest.mark.slow
def test_bfl_single_file_transformer_loads_exactly(tmp_path):
    """A full-width (3072) 1 double + 1 single block FLUX-dev saved in the original layout, with
    ComfyUI's checkpoint prefix, loads into diffusers with identical weights and outputs."""
    from diffusers import FluxTransformer2DModel

    from refam.bench.flux import build_model

    ref = build_model(24, 1, 1, torch.bfloat16, torch.device("cpu"))
    bfl = {f"model.diffusion_model.{k}": v for k, v in to_bfl(ref.state_dict(), 1, 1).items()}
    path = tmp_path / "flux1-dev-tiny-depth.safetensors"
    save_file(bfl, str(path))
    del bfl
    model = load_transformer_file(path, torch.bfloat16)
    assert isinstance(model, FluxTransformer2DModel) and _no_meta(model)
    assert (
        model.config.num_layers == 1 and model.config.num_single_layers == 1 and model.config.guidance_embeds
    )
    ref_sd = ref.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref_sd[k]), k


def test_t5_and_clip_single_files_load_with_inferred_configs(tmp_path, t5_tokenizer, clip_tokenizer):
    t5 = tiny_t5(d_model=64)
    sd = {
        f"t5xxl.transformer.{k}": v.contiguous()
        for k, v in t5.state_dict().items()
        if "embed_tokens" not in k
    }
    save_file(sd, str(tmp_path / "t5.safetensors"))  # ComfyUI-style prefix; the tied table stored once
    loaded = load_t5_file(tmp_path / "t5.safetensors", torch.float32)
    ids = t5_tokenizer(["a cat on the left"], return_tensors="pt").input_ids
    assert _no_meta(loaded)
    torch.testing.assert_close(loaded(ids)[0], t5(ids)[0])

    clip = tiny_clip(hidden=128, heads=2)  # CLIP's 64-dim heads: the loader infers heads = width / 64
    # transformers 4 / ComfyUI naming ("text_model." prefix), whatever the installed version uses
    sd = {f"text_model.{k.removeprefix('text_model.')}": v.contiguous() for k, v in clip.state_dict().items()}
    save_file(sd, str(tmp_path / "clip_l.safetensors"))
    loaded = load_clip_file(tmp_path / "clip_l.safetensors", torch.float32)
    ids = clip_tokenizer(["a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert _no_meta(loaded)
    torch.testing.assert_close(loaded(ids).pooler_output, clip(ids).pooler_output)


def test_wrong_files_are_named(tmp_path):
    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "not_flux.safetensors"))
    with pytest.raises(ValueError, match="does not look like a FLUX transformer"):
        load_transformer_file(tmp_path / "not_flux.safetensors", torch.float32)
    with pytest.raises(FileNotFoundError, match="Searched"):
        find_weights_file("flux1-dev.safetensors", [tmp_path / "models" / "unet"], "FLUX transformer")
    with pytest.raises(FileNotFoundError, match="T5"):
        # a transformer file with no text encoders anywhere: the error lists where it looked
        (tmp_path / "diffusion_models").mkdir()
        save_file(
            {"double_blocks.0.img_in.weight": torch.zeros(1)},
            str(tmp_path / "diffusion_models" / "x.safetensors"),
        )
        load_flux(tmp_path / "diffusion_models" / "x.safetensors", comfyui_path=tmp_path / "ComfyUI")


def test_hub_id_loads_from_the_offline_hf_cache_and_is_found_automatically(
    tmp_path, t5_tokenizer, clip_tokenizer
):
    """A FLUX.1 snapshot in the Hugging Face cache is used by hub id, offline, and picked up when
    no --model is given."""
    from tiny_models import save_tiny_flux_folder

    repo_dir = tmp_path / "hub" / "models--black-forest-labs--FLUX.1-dev"
    commit = "0123456789abcdef0123456789abcdef01234567"  # the cache keys snapshots by full commit hash
    save_tiny_flux_folder(repo_dir / "snapshots" / commit, t5_tokenizer, clip_tokenizer)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    # A fresh process: diffusers and transformers read the cache location when they are imported.
    script = (
        "from refam.loading import cached_flux_model, load_flux\n"
        "repo = cached_flux_model()\n"
        "b = load_flux(repo, dtype='fp32')\n"
        "print(repo, b.name, b.transformer.config.num_layers, b.t5_tokenizer('a cat').input_ids[-1])\n"
    )
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-dev", "2", "1"]
