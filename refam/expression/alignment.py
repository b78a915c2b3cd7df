"""Tokenizer output aligned to words: ids, character offsets, special-token flags and pieces, and
for each token the words its span overlaps.

Works with any Hugging Face tokenizer; a fast one gives exact offsets
(``return_offsets_mapping=True``), a slow one gets best-effort offsets from its pieces.
"""

from __future__ import annotations

from typing import Any

from refam.expression.words import Word, words_overlapping

__all__ = ["BYTE_LEVEL_SPACE", "SENTENCEPIECE_MARK", "encode", "special_ids", "token_words"]

#: SentencePiece's word-start mark, which T5 sometimes emits as a piece of its own.
SENTENCEPIECE_MARK = "\u2581"
#: Byte-level BPE's space (Qwen, Mistral's tekken), a piece of its own before digits ("Ġ", "2").
BYTE_LEVEL_SPACE = "\u0120"


def special_ids(tokenizer: Any) -> set[int]:
    # <unk> is listed among the special ids but stands for real text (an unknown character), so it is
    # not special for our purposes.
    ids = {i for i in (getattr(tokenizer, "all_special_ids", None) or []) if i is not None}
    for name in ("eos_token_id", "bos_token_id", "pad_token_id", "cls_token_id", "sep_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            ids.add(value)
    unk = getattr(tokenizer, "unk_token_id", None)
    ids.discard(unk)
    return ids


def _pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    convert = getattr(tokenizer, "convert_ids_to_tokens", None)
    if convert is None:
        return [""] * len(ids)
    return [str(p) for p in convert(ids)]


def _offsets_from_pieces(
    text: str, pieces: list[str], special: list[bool], unk_token: str | None
) -> list[tuple[int, int]]:
    """Best-effort character spans for tokenizers without ``return_offsets_mapping`` (slow ones).

    Walks the text left to right, matching each piece (with its word-start marker removed). Pieces
    that cannot be matched get an empty span, which later attaches them to the next token's word.
    """
    offsets: list[tuple[int, int]] = []
    pos = 0
    for piece, is_special in zip(pieces, special, strict=True):
        if is_special:
            offsets.append((0, 0))
            continue
        body = piece.replace("▁", " ").replace("Ġ", " ").removesuffix("</w>").strip()
        start = pos
        while start < len(text) and text[start].isspace():
            start += 1
        if body and text[start : start + len(body)].lower() == body.lower():
            end = start + len(body)
        elif unk_token is not None and piece == unk_token and start < len(text):
            end = start + 1  # an unknown character
        else:
            end = start  # a bare word-start marker, or something we cannot place
        offsets.append((start, end))
        pos = end
    return offsets


def encode(
    tokenizer: Any, text: str, special_tokens: bool = True
) -> tuple[list[int], list[tuple[int, int]], list[bool], list[str]]:
    """Token ids, char offsets, special-token flags and pieces for ``text`` (with the tokenizer's
    special tokens unless ``special_tokens`` is False)."""
    kwargs: dict[str, Any] = {"add_special_tokens": special_tokens, "return_special_tokens_mask": True}
    # verbose=False: we truncate ourselves, so HF's "longer than the maximum length" warning is noise.
    try:
        enc = tokenizer(text, return_offsets_mapping=True, verbose=False, **kwargs)
        offsets = enc.get("offset_mapping")
    except NotImplementedError:
        # Hugging Face slow (Python) tokenizers cannot return offsets.
        enc = tokenizer(text, verbose=False, **kwargs)
        offsets = None
    raw_ids = list(enc["input_ids"])
    if raw_ids and isinstance(raw_ids[0], (list, tuple)):
        raise TypeError("tokenizer returned a batch for a single string")
    ids = [int(i) for i in raw_ids]
    specials = special_ids(tokenizer)
    mask = enc.get("special_tokens_mask")
    if mask is not None and len(mask) == len(ids):
        special = [bool(m) for m in mask]
    else:
        special = [i in specials for i in ids]
    pieces = _pieces(tokenizer, ids)
    if offsets is None or len(offsets) != len(ids):
        offsets = _offsets_from_pieces(text, pieces, special, getattr(tokenizer, "unk_token", None))
    else:
        offsets = [(int(a), int(b)) for a, b in offsets]
    return ids, offsets, special, pieces


def token_words(
    text: str, words: list[Word], offsets: list[tuple[int, int]], special: list[bool]
) -> list[list[int]]:
    """For each token, the indices of the words its span overlaps ([] for special tokens).

    A token with an empty or whitespace-only span (a bare '▁' from a slow tokenizer) belongs to the
    next token's word: SentencePiece emits the word-start marker as its own piece before pieces that
    do not carry it (``"_"`` -> ``['▁', '_']``).
    """
    per_token: list[list[int]] = []
    for (start, end), is_special in zip(offsets, special, strict=True):
        if is_special or not text[start:end].strip():
            per_token.append([])
        else:
            per_token.append(words_overlapping(words, start, end))
    # Attach unaligned ordinary tokens to the next aligned token's word (or, at the end, the previous).
    n = len(per_token)
    for i in range(n):
        if special[i] or per_token[i]:
            continue
        nxt = next((per_token[j] for j in range(i + 1, n) if not special[j] and per_token[j]), None)
        prev = next((per_token[j] for j in range(i - 1, -1, -1) if not special[j] and per_token[j]), None)
        chosen = nxt or prev
        per_token[i] = [chosen[0]] if chosen else []
    return per_token
