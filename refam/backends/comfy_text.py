"""Text through the user's ComfyUI CLIP: the caption's CONDITIONING and the expressions' embeddings.

The token ids of an expression are RefAM's own (roles and magnets already decided), handed to the
CLIP as pre-tokenized sections, so ComfyUI's ``(word:1.2)`` weight syntax never sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from refam.architectures.flux import FLUX_IMAGE
from refam.attention import ExpressionLayout, pack_expressions
from refam.expression import TokenizedExpression
from refam.magnet_vectors import has_vector_magnets, magnet_vectors_by_position, typical_norm

__all__ = [
    "COMFY_T5_PAD_LENGTH",
    "ComfyTextPart",
    "encode_caption",
    "encode_expressions",
    "text_pad_length",
    "text_part",
    "text_template",
    "text_tokenizer",
]

# ComfyUI pads FLUX's T5 prompts to 256 tokens (``T5XXLTokenizer(min_length=256)``).
COMFY_T5_PAD_LENGTH = 256

# What a CLIP must hold, for the message when it holds neither.
_WANTED = (
    "the model's text encoder: T5-XXL (FLUX.1: DualCLIPLoader type 'flux'; Chroma: CLIPLoader type 'chroma'; "
    "Mochi: CLIPLoader type 'mochi'), Qwen3 (FLUX.2 klein: CLIPLoader type 'flux2'; Z-Image: CLIPLoader type "
    "'lumina2') or Qwen2.5-VL (Qwen-Image: CLIPLoader type 'qwen_image')"
)

# ComfyUI's Qwen2.5-VL text model (Qwen-Image's) crops a prompt's template up to and including the
# user turn's opening from its output, as diffusers' pipeline drops its first 34 tokens: that part
# conditions the prompt's states but never reaches the DiT.
_CROPPED_THROUGH = {"qwen25_7b": "<|im_start|>user\n"}


@dataclass(frozen=True)
class ComfyTextPart:
    """The text encoder of a ComfyUI CLIP that RefAM encodes expressions with.

    ``key``: its name in the CLIP's token dict (``t5xxl``, ``qwen3_4b``...); ``tokenizer``: the
    Hugging Face tokenizer behind it (word offsets for token roles); ``pad_length``: what a prompt
    is padded to (FLUX.1's T5: 256), None when prompts are not padded (Chroma's T5, the LLMs);
    ``template``: an LLM's chat template around the prompt, (before, after), as the DiT sees it;
    ``encoder_prefix``: template text before that which only the encoder reads (the CLIP crops it
    from its output: Qwen-Image's system turn and user-turn opening), None when there is none."""

    key: str
    tokenizer: Any
    pad_length: int | None
    template: tuple[str, str] | None
    model: Any  # the CLIP's encoder for that key (its input embeddings serve vector magnets)
    causal: bool  # an LLM: padding after a prompt never reaches it
    encoder_prefix: str | None = None


def _inner(tokenizer: Any) -> Any:
    """A single-encoder tokenizer's (``SD1Tokenizer``) own tokenizer: an attribute named after the
    encoder (upstream) or ``sd_tokenizer`` (newer cores)."""
    inner = getattr(tokenizer, "sd_tokenizer", None)
    return inner if inner is not None else getattr(tokenizer, getattr(tokenizer, "clip", ""), None)


def _model_part(clip: Any, key: str) -> Any:
    model = clip.cond_stage_model
    part = getattr(model, key, None)
    return part if part is not None else getattr(model, getattr(model, "clip", ""), None)


def text_part(clip: Any) -> ComfyTextPart:
    """The T5-XXL (FLUX.1's dual CLIP, Mochi's single one) or LLM (FLUX.2 klein's Qwen3, Qwen-Image's
    Qwen2.5-VL, with its chat template) part of a ComfyUI CLIP; a TypeError naming what the CLIP
    holds otherwise."""
    tokenizer = getattr(clip, "tokenizer", None)
    t5 = getattr(tokenizer, "t5xxl", None)
    if t5 is None and getattr(tokenizer, "clip_name", None) == "t5xxl":
        t5 = _inner(tokenizer)
    if getattr(t5, "tokenizer", None) is not None:
        pad = int(getattr(t5, "min_length", None) or COMFY_T5_PAD_LENGTH)
        # Chroma's T5 tokenizer (min_length 1) does not pad its prompts.
        return ComfyTextPart("t5xxl", t5.tokenizer, pad if pad > 1 else None, None, _model_part(clip, "t5xxl"), False)
    template = getattr(tokenizer, "llama_template", None)
    key = getattr(tokenizer, "clip_name", None)
    llm = _inner(tokenizer) if isinstance(template, str) and template.count("{}") == 1 else None
    if getattr(llm, "tokenizer", None) is not None and key:
        before, after = template.split("{}")
        cropped = _CROPPED_THROUGH.get(key)
        if cropped is not None and before.endswith(cropped):
            return ComfyTextPart(key, llm.tokenizer, None, ("", after), _model_part(clip, key), True, before)
        return ComfyTextPart(key, llm.tokenizer, None, (before, after), _model_part(clip, key), True)
    raise TypeError(
        f"RefAM needs {_WANTED}; the CLIP given has tokenizer {type(tokenizer).__name__} without either"
    )


def text_tokenizer(clip: Any) -> Any:
    """The Hugging Face tokenizer behind a CLIP's text encoder (word offsets for token roles)."""
    return text_part(clip).tokenizer


def text_pad_length(clip: Any) -> int | None:
    return text_part(clip).pad_length


def text_template(clip: Any) -> tuple[str, str] | None:
    return text_part(clip).template


def encode_caption(clip: Any, caption: str, guidance: float | None = FLUX_IMAGE.guidance) -> list:
    """CONDITIONING for the denoising pass; the caption is taken literally (no ``(word:1.2)``)."""
    # Chat-template tokenizers (FLUX.2's) switch the weight syntax off themselves and refuse the flag.
    literal = {} if isinstance(getattr(clip.tokenizer, "llama_template", None), str) else {"disable_weights": True}
    tokens = clip.tokenize(caption or "", **literal)
    out = clip.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
    cond = out.pop("cond")
    if guidance is not None:
        out["guidance"] = float(guidance)
    return [[cond, out]]


def _vector_scale(clip: Any, part: ComfyTextPart) -> tuple[int, float]:
    """Width and typical norm of the text encoder's token embeddings, read through its own
    embedding call (which undoes any weight quantisation), for random-vector magnets."""
    table = part.model.transformer.get_input_embeddings()
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
    """Text-encoder embeddings of every expression's non-padding tokens, back to back: ``[1, L, D]``.

    Each expression is one section: the encoder runs them side by side in one batch, T5's padded
    as a caption would be, an LLM's (causal: padding after a prompt cannot reach it) padded here
    to the longest with its pad token, which ComfyUI masks. An unpadded T5 (Chroma's, which runs
    without a mask) encodes each expression alone, as its caption would be.
    """
    if not expressions:
        raise ValueError("no expressions to encode")
    part = text_part(clip)  # the TypeError for a CLIP without a text encoder RefAM reads
    if part.encoder_prefix is not None or (part.pad_length is None and not part.causal):
        return _encode_one_by_one(clip, part, expressions)
    tokens = dict(clip.tokenize(""))
    width = max(len(e.ids) for e in expressions)
    if part.pad_length is not None and any(len(e.ids) != width for e in expressions):
        raise ValueError(f"expressions must share one padded length, got {sorted({len(e.ids) for e in expressions})}")
    scale = _vector_scale(clip, part) if has_vector_magnets(expressions) else None
    pad = int(part.tokenizer.pad_token_id) if part.pad_length is None else 0
    tokens[part.key] = [_section(e, scale) + [(pad, 1.0)] * (width - len(e.ids)) for e in expressions]
    cond = clip.encode_from_tokens(tokens)
    rows = cond.reshape(len(expressions), width, cond.shape[-1])
    joined, layout = pack_expressions(rows, [e.valid_length for e in expressions])
    return joined.float().cpu(), layout


def _encode_one_by_one(
    clip: Any, part: ComfyTextPart, expressions: Sequence[TokenizedExpression]
) -> tuple[torch.Tensor, ExpressionLayout]:
    """Each expression in a CLIP call of its own, as its caption would be: an unpadded T5 without a
    mask (Chroma's) would let a shorter section see the pads that match it to a longer one; Qwen-
    Image's CLIP looks for the template prefix only the encoder reads in the first section alone and
    crops it from all sections joined (a section without it would keep its last token only)."""
    text = part.encoder_prefix
    prefix = [(int(i), 1.0) for i in part.tokenizer(text, add_special_tokens=False)["input_ids"]] if text else []
    scale = _vector_scale(clip, part) if has_vector_magnets(expressions) else None
    rows = []
    for expression in expressions:
        tokens = dict(clip.tokenize(""))
        tokens[part.key] = [prefix + _section(expression, scale)]
        cond = clip.encode_from_tokens(tokens)
        if cond.shape[1] != len(expression.ids):
            raise RuntimeError(
                f"the CLIP returned {cond.shape[1]} rows for a prompt of {len(prefix)} template + "
                f"{len(expression.ids)} expression tokens; RefAM expects it to drop exactly the {len(prefix)}"
            )
        rows.append(cond[:, : expression.valid_length])
    return torch.cat(rows, dim=1).float().cpu(), ExpressionLayout(tuple(e.valid_length for e in expressions))
