"""Referring expressions -> tokens with roles (content / stop / magnet / eos / pad) and word alignment.

- :mod:`~refam.expression.word_lists`: the paper's magnets and stop words (data).
- :mod:`~refam.expression.words`: the word segmentation shared with :mod:`refam.language`.
- :mod:`~refam.expression.alignment`: tokenizer output aligned to those words.
- :mod:`~refam.expression.tokens`: tokens, roles and the keep rule the heatmap applies.
- :mod:`~refam.expression.tokenize`: expression + magnets -> role-labelled tokens.

Imports neither torch nor spaCy; the tokenizer is passed in (a Hugging Face tokenizer, ideally a fast
one, whose ``__call__`` supports ``return_offsets_mapping=True``).
"""

from refam.expression.tokenize import tokenize_expression
from refam.expression.tokens import DEFAULT_DROP_ROLES, Token, TokenizedExpression, TokenRole
from refam.expression.word_lists import (
    DEFAULT_MAGNETS,
    NLTK_STOP_WORDS,
    PAPER_STOP_WORD_LIST,
    STOP_WORDS,
    TOKENIZER_SYMBOL_STOP_WORDS,
)
from refam.expression.words import Word, check_expression, split_words, words_overlapping

__all__ = [
    "DEFAULT_DROP_ROLES",
    "DEFAULT_MAGNETS",
    "NLTK_STOP_WORDS",
    "PAPER_STOP_WORD_LIST",
    "STOP_WORDS",
    "TOKENIZER_SYMBOL_STOP_WORDS",
    "Token",
    "TokenRole",
    "TokenizedExpression",
    "Word",
    "check_expression",
    "split_words",
    "tokenize_expression",
    "words_overlapping",
]
