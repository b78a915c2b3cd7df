"""The paper's word lists: the attention magnets it appends and the stop words it filters.

Data only; :mod:`refam.expression.tokenize` turns them into token roles.
"""

from __future__ import annotations

__all__ = [
    "COLOUR_WORDS",
    "DEFAULT_MAGNETS",
    "NLTK_STOP_WORDS",
    "PAPER_STOP_WORD_LIST",
    "STOP_WORDS",
    "TOKENIZER_SYMBOL_STOP_WORDS",
]

#: The paper's attention magnets, appended to the expression in this order (Sec. 4, "Implementation
#: Details"): four stop words plus the colour "pink", which soaks up attention-sink mass that would
#: otherwise land on the expression's own tokens.
DEFAULT_MAGNETS: tuple[str, ...] = ("_", "with", "to", "and", "pink")

#: Appendix B of the paper, copied verbatim (same line breaks, trailing spaces dropped) so it can be
#: diffed against the PDF text. It is NLTK's older English stop-word list (127 words) followed by the
#: tokenizer symbols. The PDF rendering lost the underscore: the tail reads ``now; ; .; -;`` where the
#: source had ``_`` (the prose above the list: "extended by symbols “_”, “;”, “.” to account for the
#: special symbols from the tokenization", and the list itself ends in ``-``). Since ";" is also the
#: separator, the symbols cannot be recovered by splitting; they are restored explicitly in
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

#: Symbols the paper adds "to account for the special symbols from the tokenization".
TOKENIZER_SYMBOL_STOP_WORDS: frozenset[str] = frozenset({"_", ";", ".", "-"})

#: The paper's full stop-word list: 127 NLTK words + 4 symbols = 131 entries, all lower case.
#: Matching is case-insensitive (a word matches when ``word.lower()`` is in the set).
STOP_WORDS: frozenset[str] = NLTK_STOP_WORDS | TOKENIZER_SYMBOL_STOP_WORDS


#: Basic colour terms, for the diagnostics' GAS statistics: the paper's "color-GAS tokens" (§3.4,
#: "when they occur on meaningful tokens such as colors") are GAS on words of this list.
COLOUR_WORDS: frozenset[str] = frozenset(
    ["red", "orange", "yellow", "green", "blue", "purple", "violet", "pink", "brown", "black", "white", "gray", "grey", "beige", "tan", "gold", "golden", "silver", "navy", "maroon", "cyan", "magenta", "turquoise", "teal", "olive", "lime", "indigo", "crimson", "scarlet", "blond", "blonde"]
)
