"""Tokens of a referring expression, each with a role (content / stop / magnet / eos / pad) and the
index of the word it came from, and the one rule deciding which tokens' maps the heatmap averages."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from enum import Enum

from refam.expression.words import Word

__all__ = ["DEFAULT_DROP_ROLES", "Token", "TokenRole", "TokenizedExpression"]


class TokenRole(str, Enum):
    """What a token is, for the heatmap filters (which drop everything but CONTENT by default).

    ``EOS`` covers the end-of-sequence token ``</s>``, any other special token a tokenizer adds
    (e.g. a start token) and the chat template an LLM text encoder wraps the prompt in (FLUX.2's
    ``<|im_start|>user`` ... ``<|im_end|>``, whose closing tokens play ``</s>``'s part); none of them
    belongs to a word. ``PAD`` tokens are padding: they are
    excluded from the softmax over tokens as well as from the average.
    """

    CONTENT = "content"
    STOP = "stop"
    MAGNET = "magnet"
    EOS = "eos"
    PAD = "pad"


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
    # The first ``vector_magnets`` magnet words are placeholders whose input embeddings the text
    # encoder replaces by random vectors drawn with ``vector_seed`` (Table 5's "random vectors").
    vector_magnets: int = 0
    vector_seed: int = 0

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
    def vector_positions(self) -> list[int]:
        """Token positions whose input embedding is a random vector, in magnet order."""
        first = self.expression_word_count
        return [
            i
            for i, t in enumerate(self.tokens)
            if t.role is TokenRole.MAGNET and 0 <= t.word_index - first < self.vector_magnets
        ]

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
        """Which tokens' maps go into the average: THE keep rule, the one :mod:`refam.heatmap` applies.

        ``drop_roles``: roles to drop (default: stop words, magnets, EOS, padding). Padding is always
        dropped: it carries no meaning and is not part of the softmax either.
        ``words``: the noun-phrase filter (pass :attr:`refam.language.LanguageCues.noun_phrase_words`):
        a CONTENT token whose word index is not in it is dropped too. Stop words, magnets and EOS
        are left to ``drop_roles``, inside the phrase or not.
        """
        # The noun-phrase filter picks which of the expression's words describe the target (the paper's
        # NP, HybridGL's head noun phrase); the role switches decide about everything else. With the
        # paper's drop_roles only content tokens are left anyway, so this is "filtering of everything
        # but noun phrase" (Table 4); with a switch off (magnets kept, say) those tokens stay, as the
        # magnets and EOS do when the head phrase is encoded on its own (np_mode "encode").
        drop = {TokenRole(r) for r in drop_roles} | {TokenRole.PAD}
        word_set = None if words is None else set(words)
        return [
            t.role not in drop
            and (word_set is None or t.role is not TokenRole.CONTENT or t.word_index in word_set)
            for t in self.tokens
        ]
