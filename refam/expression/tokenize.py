"""Referring expression + magnets -> role-labelled tokens (:class:`TokenizedExpression`).

RefAM (Kukleva et al. 2025, Sec. 3 and Appendix B) appends "attention magnet" words to the referring
expression, softmaxes the per-token cross-attention maps over all tokens, and then drops the maps of
stop words, magnets and the end-of-sequence token before averaging. Getting that bookkeeping right is
the whole job of this module: T5 splits words into several pieces (``"_"`` -> ``['▁', '_']``,
``"giraffe"`` -> ``['▁', 'gir', 'a', 'ffe']``), pieces must inherit the role of their word, and the
model's text encoder pads to a fixed length (ComfyUI 256, diffusers 512).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from refam.expression.alignment import BYTE_LEVEL_SPACE, SENTENCEPIECE_MARK, encode, special_ids, token_words
from refam.expression.tokens import Token, TokenizedExpression, TokenRole
from refam.expression.word_lists import DEFAULT_MAGNETS, STOP_WORDS
from refam.expression.words import check_expression, split_words

__all__ = ["tokenize_expression"]


def _check_magnets(magnets: Sequence[str]) -> tuple[str, ...]:
    # A bare string would silently become one magnet per character.
    if isinstance(magnets, str):
        raise TypeError(f"magnets must be a sequence of words, not a str; did you mean ({magnets!r},)?")
    out = []
    for m in magnets:
        if not isinstance(m, str):
            raise TypeError(f"magnets must be strings, got {type(m).__name__}")
        if not m.strip():
            raise ValueError("magnets must be non-empty words (an empty tuple disables magnets)")
        out.append(m.strip())
    return tuple(out)


def _check_length(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _word_boundary_cut(word_of: list[int], budget: int) -> int:
    """How many of the expression's tokens to keep (at most ``budget``) without splitting a word."""
    if budget >= len(word_of):
        return len(word_of)
    keep = budget
    # Back off while the first dropped token continues the last kept token's word.
    while keep > 0 and word_of[keep - 1] == word_of[keep]:
        keep -= 1
    return keep if keep > 0 else budget  # one giant word: cut inside it rather than drop everything


def _template_tokens(tokenizer: Any, text: str, start: bool) -> list[Token]:
    """A chat template's text as EOS-role tokens; ``start``: with the tokenizer's start token (Mistral's ``<s>``)."""
    ids = [int(i) for i in tokenizer(text, add_special_tokens=start)["input_ids"]] if text or start else []
    pieces = tokenizer.convert_ids_to_tokens(ids) if ids else []
    return [Token(i, str(p), TokenRole.EOS, -1, "") for i, p in zip(ids, pieces, strict=True)]


def tokenize_expression(
    expression: str,
    tokenizer: Any,
    *,
    magnets: Sequence[str] = DEFAULT_MAGNETS,
    stop_words: Collection[str] = STOP_WORDS,
    max_length: int = 512,
    pad_to: int | None = None,
    template: tuple[str, str] | None = None,
) -> TokenizedExpression:
    """Tokenize ``expression + magnets`` and label every token with its role and word.

    - ``expression`` is stripped and taken literally (ComfyUI's ``(word:1.2)`` weight syntax is not
      parsed: the parentheses, colon and digits are just words).
    - ``magnets`` are appended in order, joined by single spaces; their tokens are MAGNET (even
      "pink", which is no stop word). A magnet word that also occurs in the user's text is STOP or
      CONTENT there; only the appended copy is MAGNET. ``magnets=()`` is the no-magnet ablation.
    - Words of the user's text whose lower-case form is in ``stop_words`` are STOP, others CONTENT;
      every piece of a multi-piece word inherits the word's role.
    - If the user's text has no CONTENT token at all (e.g. "it", "this", "that"), its STOP tokens are
      re-labelled CONTENT and a warning is added, so the method still has tokens to average instead
      of an empty set (magnets and EOS stay dropped).
    - More than ``min(max_length, pad_to)`` tokens: the user's text is cut (at a word boundary) so
      that the magnets and the EOS token survive; ``truncated`` is set and a warning says how many
      tokens were dropped. ``text``/``augmented``/``words`` still describe the full input.
    - ``pad_to``: pad with the tokenizer's pad id up to that length (PAD role), as the text encoder
      expects (ComfyUI pads T5 to 256, diffusers to 512). Real tokens are capped at
      ``min(max_length, pad_to)``; the result has exactly ``pad_to`` tokens.
    - ``template``: the chat template an LLM text encoder wraps a prompt in, as (text before,
      text after) the prompt (FLUX.2 klein: ``("<|im_start|>user\\n", "<|im_end|>...")``). Its tokens
      (with the tokenizer's own start token, if any) surround the expression and its magnets, labelled
      EOS: they belong to no word and their maps are dropped with EOS's. The expression is encoded
      alone, between them: the templates end and start at special tokens or newlines, where
      byte-level BPE never merges across.
    """
    text = check_expression(expression)
    magnet_words = _check_magnets(magnets)
    limit = _check_length("max_length", max_length)
    if pad_to is not None:
        limit = min(limit, _check_length("pad_to", pad_to))

    augmented = " ".join((text, *magnet_words))
    words = split_words(augmented)
    n_expr_words = len(split_words(text))
    stop = {w.lower() for w in stop_words}
    word_roles = [
        TokenRole.MAGNET
        if i >= n_expr_words
        else (TokenRole.STOP if w.text.lower() in stop else TokenRole.CONTENT)
        for i, w in enumerate(words)
    ]

    ids, offsets, special, pieces = encode(tokenizer, augmented, special_tokens=template is None)
    words_of_token = token_words(augmented, words, offsets, special)
    specials = special_ids(tokenizer)
    warnings: list[str] = []

    tokens: list[Token] = []
    typed_special = 0
    for tid, piece, is_special, overlapped in zip(ids, pieces, special, words_of_token, strict=True):
        if is_special or not overlapped or tid in specials:
            # Special tokens typed into the text ("</s>") still encode to the special id; the model
            # sees an EOS there, so it is labelled like one.
            typed_special += not is_special
            tokens.append(Token(tid, piece, TokenRole.EOS, -1, ""))
            continue
        first = overlapped[0]
        if first >= n_expr_words:
            role = TokenRole.MAGNET
        elif not piece.strip(SENTENCEPIECE_MARK + BYTE_LEVEL_SPACE):
            # A bare word-start mark ('▁' before '_' or '(', byte-level 'Ġ' before a digit) is the
            # tokenizer's own symbol, which the paper's list names among its "special symbols from
            # the tokenization" (printed "_").
            # Punctuation the list does not name (',', "'", '?') keeps its word's role: the list is
            # the paper's choice, and it stops at '_ ; . -'.
            role = TokenRole.STOP
        elif any(word_roles[w] is TokenRole.CONTENT for w in overlapped):
            # A piece spanning several words ("1.2", "...") is content if any of them is.
            role = TokenRole.CONTENT
        else:
            role = TokenRole.STOP
        tokens.append(Token(tid, piece, role, first, words[first].text))
    if typed_special:
        warnings.append(
            f"the expression contains {typed_special} special-token text(s) such as '</s>'; "
            "they are encoded as special tokens and not used as words"
        )

    if template is not None:
        tokens = _template_tokens(tokenizer, template[0], True) + tokens + _template_tokens(tokenizer, template[1], False)

    unk_id = getattr(tokenizer, "unk_token_id", None)
    n_unk = sum(t.id == unk_id for t in tokens) if isinstance(unk_id, int) else 0
    if n_unk:
        unknown = sorted({words[t.word_index].text for t in tokens if t.id == unk_id and t.word_index >= 0})
        warnings.append(
            f"{n_unk} token(s) are unknown to the tokenizer ({' '.join(unknown)}); "
            "they are kept but carry little meaning"
        )

    truncated = False
    if len(tokens) > limit:
        # Keep the magnets and EOS and cut the user's text instead: the magnets are what soaks up
        # background attention in the softmax over tokens, and EOS ends the sequence the text encoder
        # was trained on; losing either changes every remaining map, while losing the tail of an
        # over-long description only loses detail.
        expr_pos = [i for i, t in enumerate(tokens) if 0 <= t.word_index < n_expr_words]
        fixed = len(tokens) - len(expr_pos)
        if fixed >= limit:
            raise ValueError(
                f"the magnets and special tokens alone take {fixed} tokens, which does not fit "
                f"max_length/pad_to = {limit}; use fewer magnets or a longer limit"
            )
        keep = _word_boundary_cut([tokens[i].word_index for i in expr_pos], limit - fixed)
        last_word = tokens[expr_pos[keep - 1]].word_index
        dropped = set(expr_pos[keep:])
        tokens = [t for i, t in enumerate(tokens) if i not in dropped]
        truncated = True
        warnings.append(
            f"expression too long: dropped {len(dropped)} of its {len(expr_pos)} tokens to fit {limit} "
            f"tokens with the magnets and EOS; it now ends at word {last_word + 1} of {n_expr_words} "
            f"({words[last_word].text!r})"
        )

    expr_tokens = [i for i, t in enumerate(tokens) if 0 <= t.word_index < n_expr_words]
    if expr_tokens and not any(tokens[i].role is TokenRole.CONTENT for i in expr_tokens):
        # With every user token dropped as a stop word nothing would be averaged; keeping the user's
        # own tokens is the closest to the user's intent (the magnets and EOS are still dropped).
        for i in expr_tokens:
            t = tokens[i]
            tokens[i] = Token(t.id, t.piece, TokenRole.CONTENT, t.word_index, t.word)
        warnings.append(
            f"expression {text!r} has only stop words; its tokens are kept as content so that there is "
            "something to average (add a noun, e.g. 'the cat')"
        )

    if pad_to is not None and len(tokens) < pad_to:
        pad_id = getattr(tokenizer, "pad_token_id", None)
        if not isinstance(pad_id, int):
            raise ValueError("pad_to needs a tokenizer with a pad_token_id")
        pad_piece = str(getattr(tokenizer, "pad_token", None) or "")
        tokens.extend(Token(pad_id, pad_piece, TokenRole.PAD, -1, "") for _ in range(pad_to - len(tokens)))

    return TokenizedExpression(
        text=text,
        augmented=augmented,
        words=words,
        expression_word_count=n_expr_words,
        tokens=tokens,
        truncated=truncated,
        warnings=warnings,
        magnets=magnet_words,
    )
