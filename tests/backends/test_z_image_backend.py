"""Z-Image on the diffusers backend: a Z-Image folder loads offline, its text path is the
ZImagePipeline's, and the pipeline runs to heatmaps and points."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_pipeline_segments
from refam.architectures.z_image import Z_IMAGE_TEMPLATE
from tiny_models import save_tiny_z_image_folder


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, qwen_tokenizer):
    from refam.options import RefAMOptions
    from refam.pipeline import RefAMPipeline

    folder = save_tiny_z_image_folder(tmp_path_factory.mktemp("z_image"), qwen_tokenizer)
    return RefAMPipeline.from_pretrained(folder, device="cpu", dtype="fp32", options=RefAMOptions(resolution=128))


@torch.no_grad()
def test_z_image_folder_loads_and_encodes_as_the_z_image_pipeline(pipe):
    backend = pipe.backend
    assert backend.architecture.name == "z_image" and backend.operating_point.guidance is None
    embeds, pooled = backend.encode_caption("two cats")
    # ZImagePipeline: the user turn in Qwen3's template, the second-to-last hidden state, pads stripped.
    ids = backend.text_tokenizer(Z_IMAGE_TEMPLATE[0] + "two cats" + Z_IMAGE_TEMPLATE[1]).input_ids
    expected = backend.text_encoder(torch.tensor([ids]), output_hidden_states=True).hidden_states[-2]
    assert pooled is None
    torch.testing.assert_close(embeds, expected, rtol=0, atol=1e-6)


@torch.no_grad()
def test_z_image_forward_is_the_flow_velocity(pipe):
    """The transformer returns minus the velocity on a flipped time; the backend's forward is the velocity."""
    from refam.backends.diffusers_flux import FluxInputs

    backend = pipe.backend
    latents = torch.randn(1, 4, 6, 8)
    embeds, _ = backend.encode_caption("a cat")
    flux = FluxInputs(backend, embeds, None, backend.token_grid(latents), 1, None)
    raw = backend.transformer([latents[0][:, None]], torch.tensor([1 - 0.3]), [embeds[0]], return_dict=False)[0]
    torch.testing.assert_close(backend.forward(latents, 0.3, flux), -raw[0][:, 0][None])


def test_z_image_pipeline_runs_to_heatmaps_and_points(pipe):
    assert_pipeline_segments(pipe, "Z-Image")
