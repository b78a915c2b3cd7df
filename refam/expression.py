"""Referring expressions -> tokens with roles (content / stop / magnet / eos / pad) and word alignment.

RefAM (Kukleva et al. 2025, Sec. 3 and Appendix B) appends "attention magnet" words to the referring
expression, softmaxes the per-token cross-attention maps over all tokens, and then drops the maps of
stop words, magnets and the end-of-sequence token before averaging. Getting that bookkeeping right is
the whole job of this module: T5 splits words into several pieces (``"_"`` -> ``['▁', '_']``,
``"giraffe"`` -> ``['▁', 'gir', 'a', 'ffe']``), pieces must inherit the role of their word, and the
model's text encoder pads to a fixed length (ComfyUI 256, diffusers 512).

One word segmentation (:func:`split_words`) is shared by everything downstream: token roles here, and
the spaCy noun phrase / spatial cues in :mod:`refam.language`, which refer to the same word indices.

This module imports neither torch nor spaCy; the tokenizer is passed in (a Hugging Face tokenizer,
ideally a fast one, whose ``__call__`` supports ``return_offsets_mapping=True``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "DEFAULT_MAGNETS",
    "NLTK_STOP_WORDS",
    "PAPER_STOP_WORD_LIST",
    "STOP_WORDS",
    "TOKENIZER_SYMBOL_STOP_WORDS",
    "Token",
    "TokenRole",
    "TokenizedExpression",
    "Word",
    "split_words",
    "tokenize_batch",
    "tokenize_expression",
    "words_overlapping",
]

#: The paper's attention magnets, appended to the expression in this order (Sec. 4, "Implementation
#: Details"): four stop words plus the colour "pink", which soaks up attention-sink mass that would
#: otherwise land on the expression's own tokens.
DEFAULT_MAGNETS: tuple[str, ...] = ("_", "with", "to", "and", "pink")

#: Appendix B of the paper, copied verbatim (same line breaks, trailing spaces dropped) so it can be
#: diffed against the PDF text. It is NLTK's older English stop-word list (127 words) followed by the
#: tokenizer symbols. The PDF rendering lost the underscore: the tail reads ``now; ; .; -;`` where the
#: source had ``_`` (the prose names "_", ";" and "." and DESIGN.md lists ``_ ; . -``). Since ";" is also
#: the separator, the symbols cannot be recovered by splitting; they are restored explicitly in
#: :data:`TOKENIZER_SYMBOL_STOP_WORDS`.
PAPER_STOP_WORD_LIST = """\
i; me; my; myself; we; our; ours; ourselves; you;
your; yours; yourself; yourselves; he; him; his;
himself; she; her; hers; herself; it; its; itself;
they; them; their; theirs; themselves; what; which;
who; whom; this; that; these; those; am; is; are;
was; were; be; been; being; have; has; had; having;
do; does; did; doing; a; an; the; and; but; if; or;
because; as; until; while; of; at; by; for; with;
about; against; between; into; through; during;
before; after; above; below; to; from; up; down; in;
out; on; off; over; under; again; further; then; once;
here; there; when; where; why; how; all; any; both;
each; few; more; most; other; some; such; no; nor;
not; only; own; same; so; than; too; very; s; t; can;
will; just; don; should; now; ; .; -;"""

#: The 127 alphabetic entries of the paper's list (NLTK's English list as of NLTK 3.2).
NLTK_STOP_WORDS: frozenset[str] = frozenset(
    entry.strip() for entry in PAPER_STOP_WORD_LIST.split(";") if entry.strip().isalpha()
)

#: SentencePiece's word-start mark, which T5 sometimes emits as a piece of its own.
SENTENCEPIECE_MARK = "\u2581"

#: Symbols the paper adds "to account for the special symbols from the tokenization".
TOKENIZER_SYMBOL_STOP_WORDS: frozenset[str] = frozenset({"_", ";", ".", "-"})

#: The paper's full stop-word list: 127 NLTK words + 4 symbols = 131 entries, all lower case.
#: Matching is case-insensitive (a word matches when ``word.lower()`` is in the set).
STOP_WORDS: frozenset[str] = NLTK_STOP_WORDS | TOKENIZER_SYMBOL_STOP_WORDS


class TokenRole(str, Enum):
    """What a token is, for the heatmap filters (which drop everything but CONTENT by default).

    ``EOS`` covers the end-of-sequence token ``</s>`` and any other special token a tokenizer adds
    (e.g. a start token); none of them belongs to a word. ``PAD`` tokens are padding: they are
    excluded from the softmax over tokens as well as from the average.
    """

    CONTENT = "content"
    STOP = "stop"
    MAGNET = "magnet"
    EOS = "eos"
    PAD = "pad"


@dataclass(frozen=True)
class Word:
    """A word of an expression: its text and its ``[start, end)`` character span."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Token:
    """One tokenizer token.

    ``word_index`` indexes :attr:`TokenizedExpression.words` (words of the augmented expression); it is
    -1 (and ``word`` is "") for EOS/special and PAD tokens. A token whose span covers several words
    (T5 keeps "1.2" or "..." as one piece) carries the first of them.
    """

    id: int
    piece: str
    role: TokenRole
    word_index: int
    word: str


#: Roles dropped from the average by default (paper, Sec. 3.3 and Appendix B).
DEFAULT_DROP_ROLES: frozenset[TokenRole] = frozenset(
    {TokenRole.STOP, TokenRole.MAGNET, TokenRole.EOS, TokenRole.PAD}
)


@dataclass
class TokenizedExpression:
    """A tokenized, role-labelled referring expression (see :func:`tokenize_expression`).

    ``text`` is the expression it stands for; ``augmented`` what was tokenized (the expression, or
    its head noun phrase when that is encoded instead, plus the magnets)."""

    text: str
    augmented: str
    words: list[Word]
    expression_word_count: int
    tokens: list[Token]
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)
    magnets: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def ids(self) -> list[int]:
        return [t.id for t in self.tokens]

    @property
    def pieces(self) -> list[str]:
        return [t.piece for t in self.tokens]

    @property
    def roles(self) -> list[TokenRole]:
        return [t.role for t in self.tokens]

    @property
    def word_indices(self) -> list[int]:
        return [t.word_index for t in self.tokens]

    @property
    def valid_length(self) -> int:
        """Number of tokens that are not padding (padding only ever comes last)."""
        return sum(t.role is not TokenRole.PAD for t in self.tokens)

    @property
    def attention_mask(self) -> list[int]:
        """1 for real tokens, 0 for padding: the tokens the softmax over tokens runs over."""
        return [int(t.role is not TokenRole.PAD) for t in self.tokens]

    def keep_mask(
        self,
        drop_roles: Collection[TokenRole] = DEFAULT_DROP_ROLES,
        *,
        words: Collection[int] | None = None,
    ) -> list[bool]:
        """Which tokens' maps go into the average.

        ``drop_roles``: roles to drop (default: stop words, magnets, EOS, padding). Padding is always
        dropped: it carries no meaning and is not part of the softmax either.
        ``words``: if given, also drop tokens whose word index is not in it (the noun-phrase filter;
        pass :attr:`refam.language.LanguageCues.noun_phrase_words`).
        """
        drop = {TokenRole(r) for r in drop_roles} | {TokenRole.PAD}
        word_set = None if words is None else set(words)
        return [t.role not in drop and (word_set is None or t.word_index in word_set) for t in self.tokens]

    def token_indices(self, *roles: TokenRole) -> list[int]:
        """Positions of the tokens having any of ``roles``."""
        wanted = {TokenRole(r) for r in roles}
        return [i for i, t in enumerate(self.tokens) if t.role in wanted]


# A word is a run of letters/digits (Unicode-aware; combining accents stay inside the word); every
# other non-space character is a word of its own. So "cat's" -> cat ' s, "left-hand" -> left - hand,
# "left." -> left . and "(cat:1.2)" -> ( cat : 1 . 2 ). This matches how T5 cuts text (it emits
# "'", "-", "." as separate pieces) and how NLTK's list expects it ("s", "t", "don" are in the list
# precisely because "cat's" / "don't" split at the apostrophe). The underscore is not a letter here,
# so the magnet "_" is a word of its own even when glued to others ("__" is two words).
_WORD_RE = re.compile(r"(?:[^\W_]|[\u0300-\u036f])+|\S")


def split_words(text: str) -> list[Word]:
    """Split ``text`` into words with character spans (THE segmentation used across RefAM).

    Leading/trailing whitespace never forms words, so word indices of ``text`` and ``text.strip()``
    agree (only the character offsets shift).
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [Word(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(text)]


def words_overlapping(words: Sequence[Word], start: int, end: int) -> list[int]:
    """Indices of ``words`` whose span overlaps the character span ``[start, end)``."""
    return [i for i, w in enumerate(words) if w.start < end and start < w.end]


# --------------------------------------------------------------------------------------------------
# tokenization


def _check_expression(expression: object) -> str:
    if not isinstance(expression, str):
        raise TypeError(f"expression must be a str, got {type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise ValueError("expression is empty: type what to segment, e.g. 'the cat on the left'")
    return text


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


def _special_ids(tokenizer: Any) -> set[int]:
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


def _encode(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]], list[bool], list[str]]:
    """Token ids, char offsets, special-token flags and pieces for ``text`` (with special tokens)."""
    kwargs: dict[str, Any] = {"add_special_tokens": True, "return_special_tokens_mask": True}
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
    special_ids = _special_ids(tokenizer)
    mask = enc.get("special_tokens_mask")
    if mask is not None and len(mask) == len(ids):
        special = [bool(m) for m in mask]
    else:
        special = [i in special_ids for i in ids]
    pieces = _pieces(tokenizer, ids)
    if offsets is None or len(offsets) != len(ids):
        offsets = _offsets_from_pieces(text, pieces, special, getattr(tokenizer, "unk_token", None))
    else:
        offsets = [(int(a), int(b)) for a, b in offsets]
    return ids, offsets, special, pieces


def _token_words(
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


def _word_boundary_cut(word_of: list[int], budget: int) -> int:
    """How many of the expression's tokens to keep (at most ``budget``) without splitting a word."""
    if budget >= len(word_of):
        return len(word_of)
    keep = budget
    # Back off while the first dropped token continues the last kept token's word.
    while keep > 0 and word_of[keep - 1] == word_of[keep]:
        keep -= 1
    return keep if keep > 0 else budget  # one giant word: cut inside it rather than drop everything


def tokenize_expression(
    expression: str,
    tokenizer: Any,
    *,
    magnets: Sequence[str] = DEFAULT_MAGNETS,
    stop_words: Collection[str] = STOP_WORDS,
    max_length: int = 512,
    pad_to: int | None = None,
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
    """
    text = _check_expression(expression)
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

    ids, offsets, special, pieces = _encode(tokenizer, augmented)
    token_words = _token_words(augmented, words, offsets, special)
    special_ids = _special_ids(tokenizer)
    warnings: list[str] = []

    tokens: list[Token] = []
    typed_special = 0
    for tid, piece, is_special, overlapped in zip(ids, pieces, special, token_words, strict=True):
        if is_special or not overlapped or tid in special_ids:
            # Special tokens typed into the text ("</s>") still encode to the special id; the model
            # sees an EOS there, so it is labelled like one.
            typed_special += not is_special
            tokens.append(Token(tid, piece, TokenRole.EOS, -1, ""))
            continue
        first = overlapped[0]
        if first >= n_expr_words:
            role = TokenRole.MAGNET
        elif not piece.strip(SENTENCEPIECE_MARK):
            # A bare word-start mark ('▁' before '_' or '(') is the tokenizer's own symbol, which the
            # paper's list names among its "special symbols from the tokenization" (printed "_").
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


def tokenize_batch(
    expressions: Iterable[str],
    tokenizer: Any,
    *,
    pad_to: int | str | None = None,
    **kwargs: Any,
) -> list[TokenizedExpression]:
    """:func:`tokenize_expression` for several expressions; each keeps its own roles and length.

    ``pad_to``: an int pads every expression to that length; ``"longest"`` pads them to the longest
    one in the batch (handy for one batched forward pass); ``None`` leaves lengths as they are.
    """
    if isinstance(expressions, str):
        raise TypeError("expressions must be a sequence of strings, not a single str")
    items = list(expressions)
    if pad_to == "longest":
        unpadded = [tokenize_expression(e, tokenizer, **kwargs) for e in items]
        if not unpadded:
            return []
        longest = max(len(t) for t in unpadded)
        return [tokenize_expression(e, tokenizer, pad_to=longest, **kwargs) for e in items]
    if isinstance(pad_to, str):
        raise ValueError(f"pad_to must be an int, 'longest' or None, got {pad_to!r}")
    return [tokenize_expression(e, tokenizer, pad_to=pad_to, **kwargs) for e in items]
