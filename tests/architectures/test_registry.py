"""Which architecture module a model is read with, and what it declares."""

from __future__ import annotations

import pytest
import torch

from refam.architectures import ARCHITECTURES, by_name, diffusers_architecture
from refam.architectures.flux import FLUX1
from refam.architectures.mochi import MOCHI
from tiny_models import tiny_flux_transformer


def test_each_architecture_declares_its_facts():
    names = [a.name for a in ARCHITECTURES]
    assert len(set(names)) == len(names)
    for arch in ARCHITECTURES:
        assert by_name(arch.name) is arch
        assert arch.modality in ("image", "video")
        assert arch.text_encoder.pad_length > 0
        assert 0 < arch.operating_point.sigma < 1
    with pytest.raises(ValueError, match="unknown architecture 'wan'"):
        by_name("wan")


def test_a_diffusers_flux_is_read_as_flux_and_refused_as_video():
    model = tiny_flux_transformer()
    assert diffusers_architecture(model) is FLUX1
    assert diffusers_architecture(model, "image") is FLUX1
    with pytest.raises(TypeError, match="Mochi 1 transformers; got FluxTransformer2DModel"):
        diffusers_architecture(model, "video")
    with pytest.raises(TypeError, match="got Linear"):
        diffusers_architecture(torch.nn.Linear(2, 2))


def test_a_diffusers_mochi_is_read_as_mochi():
    from diffusers import MochiTransformer3DModel

    model = MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=1, pooled_projection_dim=16,
        in_channels=12, text_embed_dim=32, time_embed_dim=16, activation_fn="swiglu", max_sequence_length=16,
    )  # fmt: skip
    assert diffusers_architecture(model) is MOCHI
    assert [name for name, _ in MOCHI.diffusers_blocks(model)] == ["mochi.0"]
    with pytest.raises(TypeError, match="FLUX.1 / FLUX.2 / Chroma / Qwen-Image / Z-Image transformers"):
        diffusers_architecture(model, "image")
