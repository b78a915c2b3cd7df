"""Table 5's magnet variants: the words appended, and random vectors in the text encoder's input."""

from __future__ import annotations

import pytest
import torch

from refam.expression import DEFAULT_MAGNETS, STOP_WORDS, TokenRole
from refam.expression.magnets import VECTOR_PLACEHOLDER, magnet_plan
from refam.heatmap import HeatmapOptions
from refam.options import RefAMOptions
from refam.pipeline import prepare_expressions
from refam.variants import MAGNET_VARIANTS


def test_each_variant_appends_what_table_5_names():
    assert magnet_plan("default", DEFAULT_MAGNETS).words == DEFAULT_MAGNETS
    assert magnet_plan("stop_words", DEFAULT_MAGNETS).words == ("_", "with", "to", "and")
    assert magnet_plan("none", DEFAULT_MAGNETS).words == ()
    drawn = magnet_plan("random_stop_words", DEFAULT_MAGNETS, seed=3)
    assert len(drawn.words) == 5 and drawn.words[-1] == "pink"  # the stop words are replaced, the colour stays
    assert all(w in STOP_WORDS for w in drawn.words[:4]) and drawn.vectors == 0
    assert magnet_plan("random_stop_words", DEFAULT_MAGNETS, seed=3) == drawn  # seeded
    others = {magnet_plan("random_stop_words", DEFAULT_MAGNETS, seed=s).words for s in range(5)}
    assert len(others) == 5  # "Sampling five different stop-word sets"
    vectors = magnet_plan("random_vectors", DEFAULT_MAGNETS, seed=1)
    assert vectors.words == (VECTOR_PLACEHOLDER,) * 4 + ("pink",) and vectors.vectors == 4 and vectors.seed == 1


def test_bad_variant_and_seed_are_refused_where_options_are_built():
    with pytest.raises(ValueError, match="magnet_variant"):
        RefAMOptions(magnet_variant="random")
    with pytest.raises(ValueError, match="magnet_seed"):
        RefAMOptions(magnet_seed=-1)
    assert set(MAGNET_VARIANTS) == {"default", "stop_words", "random_stop_words", "random_vectors", "none"}


def test_vector_positions_are_the_placeholder_magnets_only(t5_tokenizer):
    plan = RefAMOptions(magnet_variant="random_vectors", magnet_seed=2).magnet_plan()
    (expr,), _ = prepare_expressions(["the and red cup"], t5_tokenizer, 32, plan, HeatmapOptions(noun_phrase=False))
    positions = expr.vector_positions
    assert len(positions) == 4 and expr.vector_seed == 2
    assert all(expr.tokens[p].role is TokenRole.MAGNET and expr.tokens[p].piece == "▁and" for p in positions)
    # the user's own "and" and the colour magnet keep their embeddings
    user_and = [i for i, t in enumerate(expr.tokens) if t.piece == "▁and" and t.role is TokenRole.STOP]
    pink = [i for i, t in enumerate(expr.tokens) if t.word == "pink"]
    assert user_and and pink and not set(user_and + pink) & set(positions)


def _reference_vectors(count: int, dim: int, seed: int, table: torch.Tensor) -> torch.Tensor:
    """The documented draw, written out: Gaussian directions at the mean norm of the in-use rows of
    an evenly spaced vocabulary sample."""
    sample = table[:: max(1, table.shape[0] // 2048)].float()
    norms = sample.norm(dim=-1)
    scale = norms[norms > 0].mean()
    raw = torch.randn(count, dim, generator=torch.Generator().manual_seed(seed))
    return raw / raw.norm(dim=-1, keepdim=True) * scale


@torch.no_grad()
def test_random_vectors_replace_the_input_embeddings_of_the_toy_t5(t5_tokenizer):
    from refam.toy.model import load_toy, weights_for

    backend = load_toy(weights_for("v1"))  # renders v1 scenes
    pad = backend.text_pad_length
    heat = HeatmapOptions(noun_phrase=False)
    words = magnet_plan("random_vectors", DEFAULT_MAGNETS, seed=7)
    (expr,), _ = prepare_expressions(["the red circle"], backend.tokenizer, pad, words, heat)
    got, layout = backend.encode_expressions([expr])

    t5 = backend.t5
    ids = torch.tensor([expr.ids])
    embeds = t5.get_input_embeddings()(ids).clone()
    embeds[0, expr.vector_positions] = _reference_vectors(4, embeds.shape[-1], 7, t5.get_input_embeddings().weight)
    expected = t5(inputs_embeds=embeds)[0][:, : expr.valid_length].to(got.dtype)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    (plain,), _ = prepare_expressions(["the red circle"], backend.tokenizer, pad, ("and",) * 4 + ("pink",), heat)
    placeholders, _ = backend.encode_expressions([plain])
    assert not torch.allclose(got, placeholders, atol=1e-3)  # the vectors, not the placeholder word, were encoded
    another = magnet_plan("random_vectors", DEFAULT_MAGNETS, seed=8)
    (expr8,), _ = prepare_expressions(["the red circle"], backend.tokenizer, pad, another, heat)
    assert not torch.allclose(backend.encode_expressions([expr8])[0], got, atol=1e-3)
