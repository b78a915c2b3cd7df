"""Chroma on the diffusers backend: a Chroma folder loads offline, its prompts are unpadded T5, and
the pipeline runs to heatmaps and points."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_pipeline_segments
from tiny_models import save_tiny_chroma_folder


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, t5_tokenizer):
    from refam.options import RefAMOptions
    from refam.pipeline import RefAMPipeline

    folder = save_tiny_chroma_folder(tmp_path_factory.mktemp("chroma"), t5_tokenizer)
    return RefAMPipeline.from_pretrained(folder, device="cpu", dtype="fp32", options=RefAMOptions(resolution=128))


@torch.no_grad()
def test_chroma_folder_loads_and_encodes_unpadded_t5(pipe, t5_tokenizer):
    backend = pipe.backend
    assert backend.architecture.name == "chroma" and backend.operating_point.guidance is None
    embeds, pooled = backend.encode_caption("two cats")
    ids = t5_tokenizer("two cats").input_ids
    assert pooled is None and embeds.shape[1] == len(ids)  # the caption's tokens and </s>, no padding
    torch.testing.assert_close(embeds, backend.t5(torch.tensor([ids]))[0], rtol=0, atol=1e-6)
    tokenized, _ = pipe.tokenize(["the cat on the left", "a dog"])
    assert all(t.valid_length == len(t.ids) for t in tokenized)  # unpadded
    joined, layout = backend.encode_expressions(tokenized)
    for (start, end), expression in zip(layout.spans, tokenized, strict=True):
        alone = backend.t5(torch.tensor([expression.ids]))[0]  # as if it were the only prompt
        torch.testing.assert_close(joined[:, start:end], alone, rtol=0, atol=1e-5)


def test_chroma_pipeline_runs_to_heatmaps_and_points(pipe):
    assert_pipeline_segments(pipe, "Chroma")
