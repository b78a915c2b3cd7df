"""Text through the user's ComfyUI CLIP: the caption's CONDITIONING and the expressions' embeddings.

The token ids of an expression are RefAM's own (roles and magnets already decided), handed to the
CLIP as pre-tokenized sections, so ComfyUI's ``(word:1.2)`` weight syntax never sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from refam.architectures.flux import FLUX_IMAGE
from refam.attention import ExpressionLayout, pack_expressions
from refam.expression import TokenizedExpression
from refam.magnet_vectors import has_vector_magnets, magnet_vectors_by_position, typical_norm

__all__ = ["COMFY_T5_PAD_LENGTH", "encode_caption", "encode_expressions", "t5_pad_length", "t5_tokenizer"]

# ComfyUI pads FLUX's T5 prompts to 256 tokens (``T5XXLTokenizer(min_length=256)``).
COMFY_T5_PAD_LENGTH = 256


def _t5_part(clip: Any) -> Any:
    """ComfyUI's T5-XXL tokenizer inside a CLIP: ``tokenizer.t5xxl`` for FLUX's dual tokenizer;
    a single-encoder tokenizer (Mochi's ``SD1Tokenizer`` with ``clip_name="t5xxl"``) keeps it
    under its ``clip`` attribute (``clip_t5xxl``)."""
    tokenizer = getattr(clip, "tokenizer", None)
    inner = getattr(tokenizer, "t5xxl", None)
    if inner is None and getattr(tokenizer, "clip_name", None) == "t5xxl":
        inner = getattr(tokenizer, getattr(tokenizer, "clip", ""), None)
    return inner


def t5_tokenizer(clip: Any) -> Any:
    """The Hugging Face T5 tokenizer behind a FLUX or Mochi CLIP (word offsets for token roles)."""
    hf = getattr(_t5_part(clip), "tokenizer", None)
    if hf is None:
        raise TypeError(
            "RefAM needs the model's T5-XXL text encoder (FLUX: DualCLIPLoader type 'flux'; Mochi: CLIPLoader "
            f"type 'mochi'); the CLIP given has tokenizer {type(getattr(clip, 'tokenizer', None)).__name__} "
            "without a T5-XXL part"
        )
    return hf


def t5_pad_length(clip: Any) -> int:
    return int(getattr(_t5_part(clip), "min_length", None) or COMFY_T5_PAD_LENGTH)


def encode_caption(clip: Any, caption: str, guidance: float | None = FLUX_IMAGE.guidance) -> list:
    """CONDITIONING for the denoising pass; the caption is taken literally (no ``(word:1.2)``)."""
    tokens = clip.tokenize(caption or "", disable_weights=True)
    out = clip.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
    cond = out.pop("cond")
    if guidance is not None:
        out["guidance"] = float(guidance)
    return [[cond, out]]


def _t5_encoder(clip: Any) -> Any:
    """ComfyUI's T5 model inside a CLIP (``t5xxl`` for FLUX; ``clip_t5xxl`` for Mochi's single encoder)."""
    model = clip.cond_stage_model
    inner = getattr(model, "t5xxl", None)
    return inner if inner is not None else getattr(model, getattr(model, "clip", ""), None)


def _vector_scale(clip: Any) -> tuple[int, float]:
    """Width and typical norm of the CLIP's T5 token embeddings, read through its own embedding
    call (which undoes any weight quantisation), for random-vector magnets."""
    table = _t5_encoder(clip).transformer.get_input_embeddings()
    clip.load_model()

    def embed(ids: torch.Tensor) -> torch.Tensor:
        return table(ids.to(table.weight.device), out_dtype=torch.float32)

    return table.weight.shape[1], typical_norm(embed, table.weight.shape[0])


def _section(expression: TokenizedExpression, scale: tuple[int, float] | None) -> list[tuple[Any, float]]:
    """One expression's tokens for the CLIP; a vector magnet goes in as an embedding tensor in place
    of its placeholder id, which ComfyUI's T5 takes as the input embedding at that position."""
    section: list[tuple[Any, float]] = [(int(i), 1.0) for i in expression.ids]
    if scale is not None:
        for position, vector in magnet_vectors_by_position(expression, *scale).items():
            section[position] = (vector, 1.0)
    return section


@torch.no_grad()
def encode_expressions(clip: Any, expressions: Sequence[TokenizedExpression]) -> tuple[torch.Tensor, ExpressionLayout]:
    """T5 embeddings of every expression's non-padding tokens, back to back: ``[1, L, D]``.

    Each expression is one section: T5 encodes them side by side in one batch, each padded as a
    caption would be.
    """
    if not expressions:
        raise ValueError("no expressions to encode")
    t5_tokenizer(clip)  # the TypeError for a CLIP without T5
    tokens = dict(clip.tokenize(""))
    lengths = {len(e.ids) for e in expressions}
    if len(lengths) != 1:
        raise ValueError(f"expressions must share one padded length, got {sorted(lengths)}")
    scale = _vector_scale(clip) if has_vector_magnets(expressions) else None
    tokens["t5xxl"] = [_section(e, scale) for e in expressions]
    cond = clip.encode_from_tokens(tokens)
    width = lengths.pop()
    rows = cond.reshape(len(expressions), width, cond.shape[-1])
    joined, layout = pack_expressions(rows, [e.valid_length for e in expressions])
    return joined.float().cpu(), layout
