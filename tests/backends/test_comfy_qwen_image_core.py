"""Qwen-Image on whichever ComfyUI core runs: read on the January-2026 core, refused by name (with
what to do) on the October-2025 one, whose Qwen-Image lays out its attention call differently."""

from __future__ import annotations

import pytest

from comfy_support import comfy_qwen_image_from_diffusers, import_comfy
from tiny_models import tiny_qwen_image_transformer

pytestmark = pytest.mark.comfyui


def test_qwen_image_is_read_or_named_on_this_core():
    import_comfy()
    from refam.architectures import comfy_architecture
    from refam.architectures.qwen_image import QWEN_IMAGE

    model = comfy_qwen_image_from_diffusers(tiny_qwen_image_transformer(seed=3))
    if hasattr(model.model.diffusion_model, "default_ref_method"):
        assert comfy_architecture(model, "image")[0] is QWEN_IMAGE
    else:
        with pytest.raises(NotImplementedError, match="update ComfyUI"):
            comfy_architecture(model, "image")
