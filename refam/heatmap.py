"""Captured logits -> one heatmap per expression (paper §3.2, §3.3, Appendix B/C).

Per block and image patch, a softmax over the expression's tokens (content words, stop words,
magnets and EOS; padding never reaches the branch). The maps of filtered tokens are dropped
*after* that softmax: magnets and stop words compete for background patches, which is the
point of appending them. The rest is averaged over tokens and selected blocks, min-max
normalised and, optionally, multiplied by a positional prior from spatial words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from refam.attention import BlockCapture, CapturedAttention, match_block_names
from refam.expression import TokenizedExpression, TokenRole

__all__ = [
    "BlockSelection",
    "ExpressionHeatmap",
    "HeatmapOptions",
    "TokenMap",
    "build_heatmap",
    "parse_block_spec",
    "detect_gas",
    "select_blocks",
    "spatial_prior",
]


@dataclass(frozen=True)
class BlockSelection:
    """Which captured blocks feed the heatmap.

    ``indices`` are model block indices (doubles first, then singles) or names like
    ``"double.3"``; ``skip_fraction`` drops that leading fraction of the model's blocks (the
    paper's Table 1: dropping the first 60 % does not hurt). Both empty: every captured block.
    """

    indices: tuple[int | str, ...] = ()
    skip_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.skip_fraction < 1.0:
            raise ValueError(f"skip_fraction must be in [0, 1), got {self.skip_fraction}")


@dataclass(frozen=True)
class HeatmapOptions:
    """The method's filters and priors; defaults are the paper's full RefAM."""

    drop_stop_words: bool = True
    drop_magnets: bool = True
    drop_eos: bool = True
    remove_gas: bool = True
    gas_threshold: float = 10.0
    noun_phrase: bool = True
    spatial_bias: bool = True
    blocks: BlockSelection = field(default_factory=BlockSelection)


@dataclass
class TokenMap:
    """One token's block-averaged softmax map, for diagnostics."""

    piece: str
    role: TokenRole
    word: str
    kept: bool
    gas: bool
    grid: torch.Tensor  # [h, w]


@dataclass
class ExpressionHeatmap:
    grid: torch.Tensor  # [B, h, w] in [0, 1], after the spatial prior
    raw_grid: torch.Tensor  # [B, h, w] in [0, 1], before it
    token_maps: list[list[TokenMap]]  # per image, per token
    gas_tokens: list[list[str]]  # per image
    blocks: list[str]
    warnings: list[str]


BLOCK_KINDS = ("double", "single", "mochi")


def parse_block_spec(text: str) -> tuple[int | str, ...]:
    """``"all"`` / ``""`` -> every block; else a comma list of indices, ranges (``"0-18"``), block
    names (``"double.3"``, ``"mochi.20"``) and kinds (``"double"``, ``"single"``, ``"mochi"``)."""
    out: list[int | str] = []
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part or part.lower() == "all":
            continue
        lo, dash, hi = part.partition("-")
        if dash and lo.strip().isdigit() and hi.strip().isdigit():
            start, end = int(lo), int(hi)
            if end < start:
                raise ValueError(f"block range {part!r} runs backwards; write it as {end}-{start}")
            out.extend(range(start, end + 1))
        elif part.isdigit():
            out.append(int(part))
        elif part.split(".")[0] in BLOCK_KINDS:
            out.append(part)
        else:
            raise ValueError(
                f"cannot read block {part!r}: use indices (3), ranges (0-18), names (double.3) or kinds (single)"
            )
    return tuple(out)


def select_blocks(captured: CapturedAttention, selection: BlockSelection) -> list[BlockCapture]:
    available = {b.index: b for b in captured.blocks}
    if selection.indices:
        chosen = []
        for key in selection.indices:
            if isinstance(key, str):
                group = [captured.blocks[i] for i in match_block_names(key, captured.block_names())]
            else:
                group = [available[key]] if key in available else []
            if not group:
                raise ValueError(
                    f"block {key!r} was not captured; captured blocks: {', '.join(captured.block_names())}"
                )
            chosen.extend(b for b in group if b not in chosen)
    else:
        chosen = list(captured.blocks)
    first_kept = int(selection.skip_fraction * captured.num_blocks)
    chosen = [b for b in chosen if b.index >= first_kept]
    if not chosen:
        raise ValueError(
            f"no captured block left after skipping the first {first_kept} of {captured.num_blocks} blocks"
        )
    return chosen


def detect_gas(text_mass: torch.Tensor, threshold: float = 10.0) -> torch.Tensor:
    """Global attention sinks: tokens whose text-to-text mass, averaged over blocks, is at least
    ``threshold`` times the mean mass of the expression's other tokens.

    ``text_mass`` is ``[n_blocks, B, L]``; returns ``[B, L]`` bool.

    The paper compares with the mean over all tokens. That mean contains the sink itself, so a
    token can never exceed ``L`` times it: the paper's long padded sequences hide this, but a
    pad-free expression of 10 tokens could never reach 10x. Leaving the token out of its own
    reference keeps the paper's intent (a sink dwarfs the rest) at every length.
    """
    mass = text_mass.mean(dim=0)
    n = mass.shape[-1]
    if n < 2:
        return torch.zeros_like(mass, dtype=torch.bool)
    others = (mass.sum(dim=-1, keepdim=True) - mass) / (n - 1)
    return mass >= threshold * others


_DROPPED_BY = {
    TokenRole.STOP: "drop_stop_words",
    TokenRole.MAGNET: "drop_magnets",
    TokenRole.EOS: "drop_eos",
}


def _role_keep(expression: TokenizedExpression, options: HeatmapOptions) -> torch.Tensor:
    roles = expression.roles[: expression.valid_length]
    return torch.tensor(
        [not getattr(options, _DROPPED_BY[r], False) if r in _DROPPED_BY else True for r in roles]
    )


def _noun_phrase_keep(expression: TokenizedExpression, words: Sequence[int] | None) -> torch.Tensor | None:
    if words is None:
        return None
    chosen = set(words)
    return torch.tensor(
        [
            t.role is not TokenRole.CONTENT or t.word_index in chosen
            for t in expression.tokens[: expression.valid_length]
        ]
    )


def spatial_prior(horizontal: str | None, vertical: str | None, h: int, w: int) -> torch.Tensor:
    """Positional prior ``[h, w]`` sampled at patch centres.

    left: 1 -> 0 across the width, right: 0 -> 1, middle: a triangle peaking at the centre;
    top/bottom the same vertically; a combination ("top left") is the product.
    """

    def ramp(kind: str | None, n: int) -> torch.Tensor:
        pos = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        if kind is None:
            return torch.ones(n)
        if kind in ("left", "top"):
            return 1.0 - pos
        if kind in ("right", "bottom"):
            return pos
        if kind == "middle":
            return 1.0 - (2.0 * pos - 1.0).abs()
        raise ValueError(f"unknown spatial direction {kind!r}")

    return ramp(vertical, h)[:, None] * ramp(horizontal, w)[None, :]


def _minmax(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(x)


def build_heatmap(
    captured: CapturedAttention,
    index: int,
    options: HeatmapOptions = HeatmapOptions(),
    *,
    noun_phrase_words: Sequence[int] | None = None,
    spatial: tuple[str | None, str | None] | None = None,
) -> ExpressionHeatmap:
    """Heatmap of expression ``index`` of ``captured`` on the latent grid.

    ``noun_phrase_words`` are word indices of the head noun phrase (from :mod:`refam.language`);
    ``spatial`` is ``(horizontal, vertical)`` direction words or ``None``.
    """
    expression: TokenizedExpression = captured.expressions[index]
    blocks = select_blocks(captured, options.blocks)
    logits = captured.expression_logits(index, blocks)  # [nb, B, N, L]
    probs = logits.softmax(dim=-1)
    nb, batch, n, length = probs.shape
    h, w = captured.geometry.grid
    warnings: list[str] = []

    gas = (
        detect_gas(captured.expression_text_mass(index, blocks), options.gas_threshold)
        if options.remove_gas
        else torch.zeros(batch, length, dtype=torch.bool)
    )
    keep_roles = _role_keep(expression, options)
    np_keep = _noun_phrase_keep(expression, noun_phrase_words) if options.noun_phrase else None
    keep = keep_roles.expand(batch, -1).clone()
    if np_keep is not None:
        narrowed = keep & np_keep
        if narrowed.any(dim=1).all():
            keep = narrowed
        else:
            warnings.append("noun-phrase filter would keep no token; it was not applied")
    if options.remove_gas:
        without_gas = keep & ~gas
        emptied = ~without_gas.any(dim=1)
        if emptied.any():
            warnings.append("every kept token was a global attention sink; sinks were kept for those images")
        keep = torch.where(emptied[:, None], keep, without_gas)
    empty = ~keep.any(dim=1)
    if empty.any():
        # Every token filtered (e.g. all filters on an all-magnet input): fall back to the
        # non-magnet tokens rather than average nothing.
        fallback = torch.tensor([r is not TokenRole.MAGNET for r in expression.roles[:length]])
        keep[empty] = fallback
        warnings.append("the filters removed every token; using all non-magnet tokens")

    per_token = probs.mean(dim=0)  # [B, N, L]
    weights = keep.to(per_token.dtype)
    heat = (per_token * weights[:, None, :]).sum(-1) / weights.sum(-1, keepdim=True)
    raw = _minmax(heat.view(batch, h, w))
    grid = raw
    if options.spatial_bias and spatial is not None and any(spatial):
        grid = _minmax(raw * spatial_prior(spatial[0], spatial[1], h, w))

    token_maps = []
    gas_tokens = []
    tokens = expression.tokens[:length]
    for b in range(batch):
        maps = per_token[b].T.reshape(length, h, w)
        token_maps.append(
            [
                TokenMap(t.piece, t.role, t.word, bool(keep[b, i]), bool(gas[b, i]), maps[i])
                for i, t in enumerate(tokens)
            ]
        )
        gas_tokens.append([t.piece for i, t in enumerate(tokens) if gas[b, i]])
    return ExpressionHeatmap(
        grid=grid,
        raw_grid=raw,
        token_maps=token_maps,
        gas_tokens=gas_tokens,
        blocks=[b.name for b in blocks],
        warnings=warnings,
    )
