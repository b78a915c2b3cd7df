"""The analysis behind the paper's Figs. 1, 3 and 4 and its GAS statistics, read off one capture.

* **Entropy per block** (Fig. 4): each expression token's attention over the image keys,
  renormalised over the patches, has an entropy; divided by log N it is 1 for a uniform map. A
  block's mean and minimum over the expression's tokens tell whether it localises anything.
* **Text-to-text attention per block** (Fig. 3, top): the expression tokens' attention on each
  other, heads averaged.
* **Per-token mass** (Fig. 1): text-to-text, the attention a token receives from the expression's
  queries (what GAS detection reads); text-to-image, the token's mean share of each patch's softmax
  over the expression's tokens (what the heatmap averages: a sink takes a large, even share).
  Both averaged over the heatmap's blocks, with the GAS the heatmap flags.
* **GAS statistics** over many expressions (§3.4): which kind of word the sinks fall on, and how
  often a colour-word sink stops being one and a magnet becomes one when magnets are appended
  (the paper's "in ~89% of cases, color-GAS tokens reassign their mass to the magnets").
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from refam.attention import CapturedAttention
from refam.expression import TokenizedExpression, TokenRole
from refam.expression.word_lists import COLOUR_WORDS
from refam.heatmap import HeatmapOptions, detect_gas, select_blocks

__all__ = [
    "GAS_CATEGORIES",
    "Diagnosis",
    "GasStatistics",
    "colour_gas_moved",
    "diagnose",
    "gas_category",
]

#: What a GAS token is, for the statistics.
GAS_CATEGORIES: tuple[str, ...] = ("stop_word", "colour_word", "other_content", "magnet", "eos")


def gas_category(expression: TokenizedExpression, position: int) -> str:
    token = expression.tokens[position]
    if token.role is TokenRole.MAGNET:
        return "magnet"
    if token.role is TokenRole.EOS:
        return "eos"
    if token.role is TokenRole.STOP:
        return "stop_word"
    return "colour_word" if token.word.lower().strip(".,;:!?'\"") in COLOUR_WORDS else "other_content"


@dataclass
class Diagnosis:
    """One expression on one image of a capture; every list runs over blocks or tokens in order."""

    expression: str
    pieces: list[str]
    roles: list[str]
    blocks: list[str]  # names of the heatmap's blocks
    entropy_mean: list[float]  # per block, normalised to [0, 1]
    entropy_min: list[float]
    text_attention: list[list[list[float]]]  # per block, [L, L] (query rows)
    text_mass: list[float]  # per token, block-averaged
    image_share: list[float]  # per token, block-averaged, sums to 1 over the tokens
    gas: list[bool]  # per token, the heatmap's GAS flags
    gas_categories: list[str] = field(default_factory=list)  # one per GAS token

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _normalised_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """``[..., N, L]`` log attention on image keys -> ``[..., L]`` entropy over N, divided by log N."""
    n = log_probs.shape[-2]
    p = log_probs.softmax(dim=-2)
    entropy = -(p * p.clamp_min(1e-30).log()).sum(dim=-2)
    return entropy / math.log(n) if n > 1 else torch.zeros_like(entropy)


@torch.no_grad()
def diagnose(
    captured: CapturedAttention, index: int, options: HeatmapOptions | None = None, image: int = 0
) -> Diagnosis:
    """The figures' numbers for expression ``index`` on image ``image`` of ``captured``, over the
    blocks ``options`` select (all by default) and with its GAS rule."""
    if not 0 <= image < captured.batch_size:
        raise ValueError(f"image {image} is outside the batch of {captured.batch_size}")
    options = options or HeatmapOptions()
    expression: TokenizedExpression = captured.expressions[index]
    blocks = select_blocks(captured, options.blocks)
    start, end = captured.layout.spans[index]
    length = end - start

    entropy = _normalised_entropy(captured.expression_scores(index, blocks, "attention_probs")[:, image])  # [nb, L]
    scores = captured.expression_scores(index, blocks, options.chosen_score)[:, image]  # [nb, N, L]
    image_share = scores.softmax(dim=-1).mean(dim=(0, 1))  # [L]
    mass = captured.expression_text_mass(index, blocks)  # [nb, B, L]
    gas = detect_gas(mass, options.gas_threshold, options.gas_rule)[image]
    attention = [
        (b.text_attention[image, start:end, start:end] if b.text_attention is not None else torch.zeros(length, length))
        for b in blocks
    ]
    tokens = expression.tokens[:length]
    return Diagnosis(
        expression=expression.text,
        pieces=[t.piece for t in tokens],
        roles=[t.role.value for t in tokens],
        blocks=[b.name for b in blocks],
        entropy_mean=entropy.mean(dim=-1).tolist(),
        entropy_min=entropy.min(dim=-1).values.tolist(),
        text_attention=[a.tolist() for a in attention],
        text_mass=mass[:, image].mean(dim=0).tolist(),
        image_share=image_share.tolist(),
        gas=gas.tolist(),
        gas_categories=[gas_category(expression, i) for i in range(length) if gas[i]],
    )


def colour_gas_moved(without_magnets: Diagnosis, with_magnets: Diagnosis) -> bool | None:
    """For an expression whose run without magnets has a colour-word GAS: whether, with magnets,
    none of those colour words is a GAS any more and a magnet is (the mass moved to a magnet).
    None when the run without magnets has no colour-word GAS. The user's tokens come first in
    both runs, so their positions match."""
    sinks = [i for i, g in enumerate(without_magnets.gas) if g]
    colour = [i for i, c in zip(sinks, without_magnets.gas_categories, strict=True) if c == "colour_word"]
    if not colour:
        return None
    still = any(with_magnets.gas[i] for i in colour)
    magnet = any(g and r == TokenRole.MAGNET.value for g, r in zip(with_magnets.gas, with_magnets.roles, strict=True))
    return magnet and not still


@dataclass
class GasStatistics:
    """GAS over a dataset run: where they fall, and how colour-word sinks move to magnets."""

    expressions: int = 0
    with_gas: int = 0
    categories: Counter = field(default_factory=Counter)  # GAS tokens per category, magnets appended
    categories_without_magnets: Counter = field(default_factory=Counter)
    colour_gas: int = 0  # expressions with a colour-word GAS when no magnets are appended
    colour_gas_moved: int = 0  # ... of which the magnets took it over

    def add(self, with_magnets: Diagnosis, without_magnets: Diagnosis | None = None) -> None:
        self.expressions += 1
        self.with_gas += any(with_magnets.gas)
        self.categories.update(with_magnets.gas_categories)
        if without_magnets is None:
            return
        self.categories_without_magnets.update(without_magnets.gas_categories)
        moved = colour_gas_moved(without_magnets, with_magnets)
        if moved is not None:
            self.colour_gas += 1
            self.colour_gas_moved += moved

    @staticmethod
    def shares(counts: Counter) -> dict[str, float]:
        total = sum(counts.values())
        return {c: (counts[c] / total if total else 0.0) for c in GAS_CATEGORIES}

    def to_json(self) -> dict[str, Any]:
        return {
            "expressions": self.expressions,
            "expressions_with_gas": self.with_gas,
            "gas_tokens": {c: self.categories[c] for c in GAS_CATEGORIES},
            "gas_share": self.shares(self.categories),
            "gas_tokens_without_magnets": {c: self.categories_without_magnets[c] for c in GAS_CATEGORIES},
            "gas_share_without_magnets": self.shares(self.categories_without_magnets),
            "colour_gas_without_magnets": self.colour_gas,
            "colour_gas_moved_to_magnets": self.colour_gas_moved,
            "colour_gas_moved_share": self.colour_gas_moved / self.colour_gas if self.colour_gas else None,
        }
