"""Random-vector attention magnets (Table 5): placeholder tokens whose input embeddings are
replaced by random vectors before the text encoder runs, in every encoder path (diffusers FLUX and
Mochi, ComfyUI's CLIP)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from refam.expression import TokenizedExpression

__all__ = [
    "draw_magnet_vectors",
    "encode_with_magnets",
    "has_vector_magnets",
    "magnet_inputs",
    "magnet_vectors_by_position",
    "typical_norm",
    "with_vector_magnets",
]

# Rows of the embedding table the norm is measured on: every k-th token id, about this many.
_NORM_SAMPLE = 2048


def typical_norm(embed: Callable[[torch.Tensor], torch.Tensor], vocab_size: int, device: torch.device | str = "cpu") -> float:
    """Mean L2 norm of the real token embeddings, measured on an evenly spaced sample of the
    vocabulary through the encoder's own embedding call (which undoes any weight quantisation).
    Rows that are all zero (a pruned table, like the toy model's) are not tokens in use."""
    ids = torch.arange(0, vocab_size, max(1, vocab_size // _NORM_SAMPLE), device=device)
    norms = embed(ids[None]).detach().float().norm(dim=-1).flatten()
    used = norms[norms > 0]
    if used.numel() == 0:
        raise ValueError("the text encoder's token embeddings are all zeros; cannot scale random magnet vectors")
    return float(used.mean())


def draw_magnet_vectors(count: int, dim: int, seed: int, norm: float) -> torch.Tensor:
    """``[count, dim]`` float32: Gaussian directions, each rescaled to ``norm`` — "replacing stop
    words with random vectors (re-normalized to match token distributions)" (§4.2). The same seed
    gives the same vectors on every machine (a CPU generator)."""
    gen = torch.Generator().manual_seed(int(seed))
    vectors = torch.randn(count, dim, generator=gen)
    return vectors / vectors.norm(dim=-1, keepdim=True) * norm


def has_vector_magnets(expressions: Sequence[TokenizedExpression]) -> bool:
    return any(e.vector_magnets for e in expressions)


def magnet_vectors_by_position(expression: TokenizedExpression, dim: int, norm: float) -> dict[int, torch.Tensor]:
    """Token position -> the random vector that replaces its input embedding."""
    positions = expression.vector_positions
    if not positions:
        return {}
    vectors = draw_magnet_vectors(len(positions), dim, expression.vector_seed, norm)
    return dict(zip(positions, vectors, strict=True))


def with_vector_magnets(embeds: torch.Tensor, expressions: Sequence[TokenizedExpression], norm: float) -> torch.Tensor:
    """Input embeddings ``[E, T, D]`` of ``expressions`` with their vector magnets in place (a copy)."""
    out = embeds.clone()
    for row, expression in enumerate(expressions):
        for position, vector in magnet_vectors_by_position(expression, out.shape[-1], norm).items():
            out[row, position] = vector.to(out)
    return out


def magnet_inputs(
    encoder: torch.nn.Module, ids: torch.Tensor, expressions: Sequence[TokenizedExpression]
) -> dict[str, torch.Tensor]:
    """What a transformers text encoder is called with for ``ids``: the ids, or, when an expression
    has vector magnets, its input embeddings with the vectors in place."""
    if not has_vector_magnets(expressions):
        return {"input_ids": ids}
    table = encoder.get_input_embeddings()
    norm = typical_norm(table, table.num_embeddings, ids.device)
    return {"inputs_embeds": with_vector_magnets(table(ids), expressions, norm)}


def encode_with_magnets(
    t5: torch.nn.Module, ids: torch.Tensor, expressions: Sequence[TokenizedExpression], **kwargs: Any
) -> torch.Tensor:
    """A transformers T5 encoder's output for ``ids`` (vector magnets in place, if any)."""
    return t5(**magnet_inputs(t5, ids, expressions), **kwargs)[0]
