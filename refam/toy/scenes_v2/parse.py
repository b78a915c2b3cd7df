"""Read a world-v2 referring expression back into its :class:`Meaning`, from the words alone.

Written apart from the generator's templates on purpose: a referral is kept only when this parser
recovers the meaning the generator intended, so a template that says something else is caught.
"""

from __future__ import annotations

import re

from refam.toy.scenes_v2.meaning import Meaning
from refam.toy.scenes_v2.world import COLOURS, NOUNS, RELATIONS

__all__ = ["parse_referral"]

_C = "(?P<colour>" + "|".join(COLOURS) + ")"
_N = "(?P<noun>" + "|".join(NOUNS) + ")"
_AC = "(?P<anchor_colour>" + "|".join(COLOURS) + ")"
_AN = "(?P<anchor_noun>" + "|".join(NOUNS) + ")"
_REL = "(?P<relation>" + "|".join(RELATIONS) + ")"

_PATTERNS: tuple[tuple[str, re.Pattern[str], dict[str, str]], ...] = tuple(
    (kind, re.compile(rf"^the {pattern}$"), fixed)
    for kind, pattern, fixed in (
        ("colour", rf"{_C} (?:one|shape|object)", {}),
        ("noun", _N, {}),
        ("colour_noun", rf"{_C} {_N}", {}),
        ("spatial", rf"{_N} on the (?P<relation>left|right)", {}),
        ("spatial", rf"(?P<relation>left|right) {_N}", {}),
        ("spatial", rf"{_N} in the middle", {"relation": "middle"}),
        ("relational", rf"{_N} {_REL} the {_AC} {_AN}", {}),
    )
)


def parse_referral(text: str) -> Meaning | None:
    """The meaning of ``text``, or None when it is not a v2 referral."""
    words = " ".join(text.lower().split())
    for kind, pattern, fixed in _PATTERNS:
        m = pattern.match(words)
        if m:
            return Meaning(kind, **{**m.groupdict(), **fixed})
    return None
