"""THE word segmentation of RefAM: token roles (:mod:`refam.expression.tokenize`) and the spaCy
noun phrase / spatial cues (:mod:`refam.language`) refer to the same word indices."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Word", "check_expression", "split_words", "words_overlapping"]


@dataclass(frozen=True)
class Word:
    """A word of an expression: its text and its ``[start, end)`` character span."""

    text: str
    start: int
    end: int


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


def check_expression(expression: object) -> str:
    """``expression`` stripped; a TypeError / ValueError that says what to type when it is not a
    non-empty string."""
    if not isinstance(expression, str):
        raise TypeError(f"expression must be a str, got {type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise ValueError("expression is empty: type what to segment, e.g. 'the cat on the left'")
    return text
