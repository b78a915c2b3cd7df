"""Qwen-Image on the diffusers backend: a Qwen-Image folder loads offline, its text path is the
QwenImagePipeline's (the system prompt read by the encoder, dropped before the DiT), and the
pipeline runs to heatmaps and points."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_pipeline_segments
from refam.architectures.qwen_image import QWEN_IMAGE_PROMPT
from tiny_models import save_tiny_qwen_image_folder

PREFIX = 34  # QwenImagePipeline's prompt_template_encode_start_idx


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, qwen_tokenizer):
    from refam.options import RefAMOptions
    from refam.pipeline import RefAMPipeline

    folder = save_tiny_qwen_image_folder(tmp_path_factory.mktemp("qwen_image"), qwen_tokenizer)
    return RefAMPipeline.from_pretrained(folder, device="cpu", dtype="fp32", options=RefAMOptions(resolution=128))


def _last_states(encoder, ids):
    return encoder(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1]


@torch.no_grad()
def test_qwen_image_folder_loads_and_encodes_as_the_qwen_image_pipeline(pipe, qwen_tokenizer):
    backend = pipe.backend
    assert backend.architecture.name == "qwen_image" and backend.operating_point.guidance is None
    embeds, pooled = backend.encode_caption("two cats")
    ids = qwen_tokenizer(QWEN_IMAGE_PROMPT[0] + "two cats" + QWEN_IMAGE_PROMPT[1]).input_ids
    assert pooled is None
    torch.testing.assert_close(embeds, _last_states(backend.text_encoder, ids)[:, PREFIX:], rtol=0, atol=1e-6)
    tokenized, _ = pipe.tokenize(["the cat on the left", "a dog"])
    joined, layout = backend.encode_expressions(tokenized)
    prefix = qwen_tokenizer(QWEN_IMAGE_PROMPT[0]).input_ids
    assert len(prefix) == PREFIX
    for (start, end), expression in zip(layout.spans, tokenized, strict=True):
        # the expression as its own prompt: behind the system prompt, which is then dropped
        alone = _last_states(backend.text_encoder, prefix + expression.ids)[:, PREFIX:]
        torch.testing.assert_close(joined[:, start:end], alone, rtol=0, atol=1e-5)


def test_qwen_image_pipeline_runs_to_heatmaps_and_points(pipe):
    assert_pipeline_segments(pipe, "Qwen-Image")
