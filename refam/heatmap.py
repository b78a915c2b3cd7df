"""Captured scores -> one heatmap per expression (paper §3.2, §3.3, Appendix B/C).

Per block and image patch, a softmax over the expression's tokens (content words, stop words,
magnets and EOS; padding never reaches the branch). The maps of filtered tokens are dropped
*after* that softmax: magnets and stop words compete for background patches, which is the
point of appending them. The rest is averaged over tokens and selected blocks, min-max
normalised and, optionally, multiplied by a positional prior from spatial words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from refam.attention import (
    DEFAULT_SCORE,
    BlockCapture,
    CapturedAttention,
    ImageGeometry,
    check_score,
    match_block_names,
)
from refam.expression import TokenizedExpression, TokenRole
from refam.language import SpatialCue
from refam.operating_point import FROM_BACKEND, FromBackend
from refam.variants import GAS_RULES, NP_MODES, OUTPUT_SPACE_SCORE, SPACES, SPATIAL_RULES, check_choice

__all__ = [
    "GAS_RULES",
    "BlockSelection",
    "ExpressionHeatmap",
    "HeatmapOptions",
    "TokenMap",
    "build_heatmap",
    "parse_block_spec",
    "MAX_BLOCK_INDEX",
    "detect_gas",
    "select_blocks",
    "hybridgl_prior",
    "prior_for",
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
    # Paper §3.4: GAS are detected and reported; its final method does not remove them ("removing
    # them has no negative effect"). Removal is the named option.
    remove_gas: bool = False
    gas_threshold: float = 10.0
    gas_rule: str = "paper"  # GAS_RULES
    noun_phrase: bool = True
    np_mode: str = NP_MODES[0]  # refam.variants.NP_MODES
    spatial_bias: bool = True
    spatial_rule: str = SPATIAL_RULES[0]  # how direction words are read and shaped (refam.variants)
    blocks: BlockSelection = field(default_factory=BlockSelection)
    # What feeds the softmax over tokens (refam.attention.SCORES); left unset, the backend's
    # operating point decides (RefAMOptions.at), else the paper's ConceptAttention scores.
    score: str | FromBackend = FROM_BACKEND
    space: str = SPACES[0]  # cross-attention maps (scored by ``score``) or the output space (Table 8)

    def __post_init__(self) -> None:
        if not isinstance(self.score, FromBackend):
            check_score(self.score)
        check_choice("space", self.space, SPACES)
        check_choice("np_mode", self.np_mode, NP_MODES)
        check_choice("spatial_rule", self.spatial_rule, SPATIAL_RULES)
        check_choice("gas_rule", self.gas_rule, GAS_RULES)
        if not (math.isfinite(self.gas_threshold) and self.gas_threshold > 0):
            raise ValueError(f"gas_threshold must be a positive multiple of the mean mass (paper: 10), got {self.gas_threshold}")

    @property
    def chosen_score(self) -> str:
        """The record key the maps are made of."""
        if self.space == "output":
            return OUTPUT_SPACE_SCORE
        return DEFAULT_SCORE if isinstance(self.score, FromBackend) else self.score


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
# No DiT has more than a few hundred blocks (FLUX.1 57, Mochi 48): a bigger index is a typo, and
# refusing it before a range is built keeps "0-999999999" from expanding a billion ints.
MAX_BLOCK_INDEX = 1023


def _block_index(text: str, part: str) -> int:
    text = text.strip().lstrip("0") or "0"
    # Length first: int() of a few thousand digits is itself slow (and refused by Python).
    if len(text) > len(str(MAX_BLOCK_INDEX)) or int(text) > MAX_BLOCK_INDEX:
        raise ValueError(
            f"block index {text} in {part!r} is above {MAX_BLOCK_INDEX}, more blocks than any model has "
            "(FLUX.1 57, Mochi 48); give indices from 0 to the model's last block"
        )
    return int(text)


def _is_index(text: str) -> bool:
    text = text.strip()
    return text.isascii() and text.isdigit()


def parse_block_spec(text: str) -> tuple[int | str, ...]:
    """``"all"`` / ``""`` -> every block; else a comma list of indices, ranges (``"0-18"``), block
    names (``"double.3"``, ``"mochi.20"``) and kinds (``"double"``, ``"single"``, ``"mochi"``).
    Indices above :data:`MAX_BLOCK_INDEX` are refused."""
    out: list[int | str] = []
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part or part.lower() == "all":
            continue
        lo, dash, hi = part.partition("-")
        if dash and _is_index(lo) and _is_index(hi):
            start, end = _block_index(lo, part), _block_index(hi, part)
            if end < start:
                raise ValueError(f"block range {part!r} runs backwards; write it as {end}-{start}")
            out.extend(range(start, end + 1))
        elif _is_index(part):
            out.append(_block_index(part, part))
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


def detect_gas(text_mass: torch.Tensor, threshold: float = 10.0, rule: str = "paper") -> torch.Tensor:
    """Global attention sinks of ``text_mass [n_blocks, B, L]`` by ``rule`` (:data:`GAS_RULES`);
    returns ``[B, L]`` bool."""
    check_choice("gas_rule", rule, GAS_RULES)
    mass = text_mass.mean(dim=0)
    n = mass.shape[-1]
    if rule == "paper":
        return mass >= threshold * mass.mean(dim=-1, keepdim=True)
    if n < 2:
        return torch.zeros_like(mass, dtype=torch.bool)
    others = (mass.sum(dim=-1, keepdim=True) - mass) / (n - 1)
    return mass >= threshold * others


_DROPPED_BY = {
    TokenRole.STOP: "drop_stop_words",
    TokenRole.MAGNET: "drop_magnets",
    TokenRole.EOS: "drop_eos",
}


def _drop_roles(options: HeatmapOptions) -> frozenset[TokenRole]:
    return frozenset(role for role, switch in _DROPPED_BY.items() if getattr(options, switch))


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


def hybridgl_prior(direction: str | None, h: int, w: int, width: int) -> torch.Tensor:
    """HybridGL's direction mask (``gen_dir_mask``) over the image's ``width`` pixel columns — left
    ``linspace(1, 0, W)``, right ``linspace(0, 1, W)``, middle ``linspace(0, 1, W//2)`` then
    ``linspace(1, 0, W - W//2)``, anything else ones — read at each patch's centre column, ``[h, w]``."""
    if direction == "left":
        columns = torch.linspace(1.0, 0.0, width)
    elif direction == "right":
        columns = torch.linspace(0.0, 1.0, width)
    elif direction == "middle":
        columns = torch.cat([torch.linspace(0.0, 1.0, width // 2), torch.linspace(1.0, 0.0, width - width // 2)])
    else:
        return torch.ones(h, w)
    centres = ((torch.arange(w, dtype=torch.float64) + 0.5) * width / w).long().clamp_(max=width - 1)
    return columns[centres][None, :].expand(h, w).clone()


def prior_for(cue: SpatialCue, geometry: ImageGeometry) -> torch.Tensor:
    """The positional prior ``[h, w]`` a spatial cue asks for, shaped by the rule that read it."""
    h, w = geometry.grid
    if cue.rule == "hybridgl":
        return hybridgl_prior(cue.horizontal, h, w, geometry.original_size[1])
    return spatial_prior(cue.horizontal, cue.vertical, h, w)


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
    spatial: SpatialCue | None = None,
) -> ExpressionHeatmap:
    """Heatmap of expression ``index`` of ``captured`` on the latent grid.

    ``noun_phrase_words`` are word indices of the head noun phrase, ``spatial`` the expression's
    spatial cue (both from :mod:`refam.language`; the prior is applied when ``spatial_bias``).
    """
    expression: TokenizedExpression = captured.expressions[index]
    blocks = select_blocks(captured, options.blocks)
    probs = captured.expression_scores(index, blocks, options.chosen_score).softmax(dim=-1)  # [nb, B, N, L]
    nb, batch, n, length = probs.shape
    h, w = captured.geometry.grid
    warnings: list[str] = []

    # Always detected and reported; removed only with remove_gas.
    gas = detect_gas(captured.expression_text_mass(index, blocks), options.gas_threshold, options.gas_rule)
    valid, drop = expression.valid_length, _drop_roles(options)
    keep_mask = expression.keep_mask(drop)[:valid]
    if options.noun_phrase and noun_phrase_words is not None:
        narrowed = expression.keep_mask(drop, words=noun_phrase_words)[:valid]
        if any(narrowed):
            keep_mask = narrowed
        else:
            warnings.append("noun-phrase filter would keep no token; it was not applied")
    keep = torch.tensor(keep_mask).expand(batch, -1).clone()
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
    if options.spatial_bias and spatial is not None and (spatial.horizontal or spatial.vertical):
        grid = _minmax(raw * prior_for(spatial, captured.geometry))

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
