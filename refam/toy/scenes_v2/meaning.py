"""What a world-v2 referral means, as data: its kind and the attributes that pick out the target.
The generator, the text parser and the pixel resolver each produce or read this, independently."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALL_KINDS", "SIDES", "Meaning"]

# The five referral kinds of the v2 world (issue 19): a unique colour, a unique noun, colour and
# noun where each alone is ambiguous, a horizontal position among same-noun objects, and a noun
# placed relative to an anchor object.
ALL_KINDS: tuple[str, ...] = ("colour", "noun", "colour_noun", "spatial", "relational")
# Horizontal only: RefAM's spatial cue (HybridGL's rule) reads "on the left", "the left X" and
# "in the middle"; vertical words get the same treatment, but one axis is enough to measure it.
SIDES: tuple[str, ...] = ("left", "right", "middle")


@dataclass(frozen=True)
class Meaning:
    """``kind`` with the fields it uses: colour and/or noun of the target; ``relation`` is a side
    (spatial) or "left of" / "right of" / "above" / "below" (relational); ``anchor_colour`` and
    ``anchor_noun`` name a relational referral's anchor."""

    kind: str
    colour: str | None = None
    noun: str | None = None
    relation: str | None = None
    anchor_colour: str | None = None
    anchor_noun: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ALL_KINDS:
            raise ValueError(f"unknown referral kind {self.kind!r}; expected one of {ALL_KINDS}")
