"""FLUX.2 klein on the diffusers backend: a klein folder loads offline, its text path is the
Flux2KleinPipeline's, and the pipeline runs to heatmaps and points."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_pipeline_segments
from refam.architectures.flux2 import KLEIN_TEMPLATE
from tiny_models import save_tiny_flux2_klein_folder


@pytest.fixture(scope="module")
def klein_folder(tmp_path_factory, qwen_tokenizer):
    return save_tiny_flux2_klein_folder(tmp_path_factory.mktemp("klein"), qwen_tokenizer)


@pytest.fixture(scope="module")
def pipe(klein_folder):
    from refam.options import RefAMOptions
    from refam.pipeline import RefAMPipeline

    return RefAMPipeline.from_pretrained(klein_folder, device="cpu", dtype="fp32", options=RefAMOptions(resolution=128))


def _klein_states(encoder, ids, mask=None):
    states = encoder(torch.tensor([ids]), attention_mask=mask, output_hidden_states=True).hidden_states
    return torch.cat([states[i] for i in (9, 18, 27)], dim=-1)


@torch.no_grad()
def test_klein_folder_loads_with_its_text_encoder_and_encodes_as_the_klein_pipeline(pipe, qwen_tokenizer):
    backend = pipe.backend
    assert backend.architecture.name == "flux2" and backend.operating_point.guidance is None
    embeds, pooled = backend.encode_caption("two cats")
    assert pooled is None and embeds.shape == (1, 512, 192)
    # Flux2KleinPipeline: the user turn in Qwen3's template with thinking off, padded to 512, layers 9/18/27.
    prompt = KLEIN_TEMPLATE[0] + "two cats" + KLEIN_TEMPLATE[1]
    enc = qwen_tokenizer(prompt, padding="max_length", max_length=512, return_tensors="pt")
    expected = _klein_states(backend.text_encoder, enc.input_ids[0].tolist(), enc.attention_mask)
    torch.testing.assert_close(embeds, expected, rtol=0, atol=1e-6)
    tokenized, _ = pipe.tokenize(["the cat on the left", "a dog"])
    joined, layout = backend.encode_expressions(tokenized)
    assert layout.lengths == tuple(len(t.ids) for t in tokenized)
    for (start, end), expression in zip(layout.spans, tokenized, strict=True):
        # each expression encoded alone, as its own prompt would be (the causal encoder ignores the pads)
        torch.testing.assert_close(joined[:, start:end], _klein_states(backend.text_encoder, expression.ids), atol=1e-5, rtol=0)


def test_klein_pipeline_runs_to_heatmaps_and_points(pipe):
    assert_pipeline_segments(pipe, "FLUX.2")


def test_flux2_dev_folder_is_refused_by_name_before_loading(tmp_path, klein_folder):
    import shutil

    from refam.loading import load_flux2

    dev = tmp_path / "dev"
    shutil.copytree(klein_folder, dev)
    (dev / "model_index.json").write_text(json.dumps({"_class_name": "Flux2Pipeline"}))
    with pytest.raises(ValueError, match="Flux2Pipeline.*klein"):
        load_flux2(dev)
