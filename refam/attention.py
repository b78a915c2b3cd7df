"""The separate expression branch and the record of what it captured.

RefAM reads grounding from a branch that pushes the referring expression through the
*text-stream* weights of every joint block of a DiT (ConceptAttention, Helbling et al. 2025).
The branch is one-way: expression tokens attend to ``[expression ; image]``; the caption and the
image streams never see them, so the denoising output is untouched.

The math lives here once. A backend only supplies a :class:`JointBlockAdapter` per block (the
text-stream pieces: modulation, norms, q/k/v with QK-norm, output projection, MLP) and the image
queries/keys/values of the real attention call, after QK-norm and RoPE.

Several expressions share one pass: their tokens are concatenated along the token axis and a
block-diagonal mask keeps each expression to itself, so the image keys/values are never copied.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from refam.variants import (
    DEFAULT_SCORE,
    OUTPUT_SPACE_SCORE,
    RECORDED_SCORES,
    SCORES,
    check_choice,
    check_score,
)

__all__ = [
    "DEFAULT_SCORE",
    "SCORES",
    "BlockCapture",
    "CaptureComplete",
    "BranchOutput",
    "CapturedAttention",
    "ExpressionLayout",
    "ImageAttention",
    "ImageGeometry",
    "JointBlockAdapter",
    "check_score",
    "expression_branch",
    "match_block_names",
    "pack_expressions",
    "resolve_capture_blocks",
]


class CaptureComplete(Exception):
    """Raised by a backend after the last selected block: the remaining blocks are not needed."""


class JointBlockAdapter(Protocol):
    """Text-stream pieces of one joint block, as the expression branch needs them."""

    kind: str  # "double" (separate text weights) or "single" (shared weights)

    def expression_qkv(
        self, expr: torch.Tensor, vec: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """``expr [B, L, D]`` -> q, k, v ``[B, H, L, Dh]`` after QK-norm, plus state for the update."""
        ...

    def expression_update(self, expr: torch.Tensor, attn_out: torch.Tensor, state: Any) -> torch.Tensor:
        """``attn_out [B, L, H*Dh]`` -> the expression stream after this block (residuals and MLP)."""
        ...


def match_block_names(key: str, names: Sequence[str]) -> list[int]:
    """Indices of ``names`` that ``key`` picks: an exact name (``"double.3"``) or a kind (``"single"``)."""
    return [i for i, n in enumerate(names) if n == key or n.split(".")[0] == key]


def resolve_capture_blocks(
    blocks: Iterable[int | str] | None, num_blocks: int, names: Sequence[str] | None = None
) -> list[int]:
    """Sorted model block indices to capture (``None`` = all), checked against the model's depth.

    Items are indices (doubles first, then singles) or, when ``names`` are given, block names
    and kinds (``"double.3"``, ``"single"``).
    """
    if blocks is None:
        return list(range(num_blocks))
    chosen: set[int] = set()
    for item in blocks:
        if isinstance(item, str) and not item.strip().lstrip("-").isdigit():
            found = match_block_names(item.strip(), names or [])
            if not found:
                raise ValueError(f"unknown block {item!r}; blocks are {', '.join(names or [])}")
            chosen.update(found)
        else:
            chosen.add(int(item))
    selected = sorted(chosen)
    bad = [i for i in selected if not 0 <= i < num_blocks]
    if bad or not selected:
        raise ValueError(
            f"block indices {bad or selected} out of range: the model has {num_blocks} blocks "
            f"(0..{num_blocks - 1}, doubles first, then singles)"
        )
    return selected


@dataclass
class ImageAttention:
    """Image-token q/k/v of the block's real attention call, ``[B, H, N, Dh]``, after QK-norm and
    RoPE; ``q_plain``: the same queries before RoPE (what ConceptAttention stores); ``out``: the
    image tokens' output of that call (before the output projection), laid out like ``v``;
    ``text_rotation``: for a model whose RoPE moves text tokens (FLUX.2, Z-Image),
    ``(x [B, H, L, Dh], layout) -> x`` rotated as that block rotates text, each expression's tokens
    where they would be as a caption; None where RoPE leaves text unchanged (FLUX.1)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q_plain: torch.Tensor
    out: torch.Tensor
    text_rotation: Callable[[torch.Tensor, ExpressionLayout], torch.Tensor] | None = None

    def rows(self, index: torch.Tensor) -> ImageAttention:
        return ImageAttention(
            self.q[index], self.k[index], self.v[index], self.q_plain[index], self.out[index], self.text_rotation
        )


@dataclass(frozen=True)
class ExpressionLayout:
    """Where each expression sits on the concatenated token axis of the branch."""

    lengths: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.lengths or any(n <= 0 for n in self.lengths):
            raise ValueError(f"every expression needs at least one token, got lengths {self.lengths}")

    @property
    def total(self) -> int:
        return sum(self.lengths)

    @property
    def spans(self) -> list[tuple[int, int]]:
        out, start = [], 0
        for n in self.lengths:
            out.append((start, start + n))
            start += n
        return out

    def group_ids(self, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.repeat_interleave(
            torch.arange(len(self.lengths), device=device), torch.tensor(self.lengths, device=device)
        )

    def positions(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[L]`` long: each token's index within its own expression (its text position as a caption)."""
        return torch.cat([torch.arange(n, device=device) for n in self.lengths])

    def text_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[L, L]`` bool: True where expression query i may attend expression key j."""
        g = self.group_ids(device)
        return g[:, None] == g[None, :]


def pack_expressions(rows: torch.Tensor, lengths: Sequence[int]) -> tuple[torch.Tensor, ExpressionLayout]:
    """Per-expression encoder rows ``[E, T, D]`` -> their first ``lengths[e]`` tokens back to back,
    ``[1, L, D]``, and the layout that keeps them apart in the branch."""
    layout = ExpressionLayout(tuple(int(n) for n in lengths))
    return torch.cat([rows[i, :n] for i, n in enumerate(layout.lengths)], dim=0)[None], layout


@dataclass
class BranchOutput:
    expr: torch.Tensor  # [B, L, D] the expression stream after the block
    scores: dict[str, torch.Tensor]  # RECORDED_SCORES -> [B, N, L] float32
    text_mass: (
        torch.Tensor
    )  # [B, L] float32: attention mass each expression token receives from its own expression's queries
    text_attention: torch.Tensor  # [B, L, L] float32: query -> key attention among the expression tokens


def expression_branch(
    adapter: JointBlockAdapter,
    expr: torch.Tensor,
    vec: torch.Tensor,
    image: ImageAttention,
    layout: ExpressionLayout,
) -> BranchOutput:
    """Run one block of the expression branch and read its maps.

    ``vec`` is whatever the block's modulation takes (the timestep/guidance/pooled embedding).
    """
    q_e, k_e, v_e, state = adapter.expression_qkv(expr, vec)
    # ConceptAttention compares queries before RoPE; the attention itself sees them rotated.
    q_rot, k_rot = q_e, k_e
    if image.text_rotation is not None:
        q_rot, k_rot = image.text_rotation(q_e, layout), image.text_rotation(k_e, layout)
    b, h, n_expr, dh = q_e.shape
    if n_expr != layout.total:
        raise ValueError(f"expression stream has {n_expr} tokens, layout expects {layout.total}")
    if image.q.shape[0] != b:
        raise ValueError(f"batch mismatch: image stream {image.q.shape[0]} vs expression stream {b}")
    scale = 1.0 / math.sqrt(dh)

    # The grounding maps, in float32 because downstream softmaxes over tokens amplify bf16
    # rounding of near-equal scores.
    scaled_dot = torch.matmul(image.q.float(), k_rot.float().transpose(-1, -2)).mul_(scale).mean(dim=1)
    # ConceptAttention's heads-flattened dot product, as per-head products summed over heads: the
    # same sum without the copy of the image queries that flattening the heads would make.
    concept = torch.matmul(image.q_plain.float(), q_e.float().transpose(-1, -2)).sum(dim=1)
    if not (bool(torch.isfinite(scaled_dot).all()) and bool(torch.isfinite(concept).all())):
        raise FloatingPointError(
            "the model produced non-finite attention (NaN/inf) — usually fp16 overflow or broken weights; "
            "run the model in bfloat16 or float32"
        )

    # The branch's own attention over [expression ; image] keys, explicit rather than SDPA because
    # its probabilities are needed for the text-to-text mass that detects global attention sinks.
    # The two key blocks are scored separately and only the small [L, L + N] score matrix is
    # joined: concatenating the image keys and values would copy them in every block.
    q32 = q_rot.float()
    to_text = torch.matmul(q32, k_rot.float().transpose(-1, -2)).mul_(scale)
    to_text.masked_fill_(~layout.text_mask(to_text.device), float("-inf"))
    scores = torch.cat([to_text, torch.matmul(q32, image.k.float().transpose(-1, -2)).mul_(scale)], dim=-1)
    probs = scores.softmax(dim=-1)

    # Each key's mass from the queries of its own expression (the mask zeroes the others),
    # averaged over heads and those queries.
    lengths = torch.tensor(layout.lengths, device=probs.device, dtype=probs.dtype)
    text_attention = probs[..., :n_expr].mean(dim=1)  # [B, L, L], heads averaged (Fig. 3, top)
    text_mass = text_attention.sum(dim=1) / torch.repeat_interleave(lengths, lengths.long())

    # The expression queries' probability on each image key, heads averaged; a fully masked-out
    # probability would be 0, hence the floor before the log.
    to_image = probs[..., n_expr:].mean(dim=1).transpose(1, 2)  # [B, N, L]
    scores = {
        "concept_attention": concept,
        "scaled_dot": scaled_dot,
        "attention_probs": to_image.clamp_min(1e-30).log(),
    }

    p_values = probs.to(v_e.dtype)
    out = torch.matmul(p_values[..., :n_expr], v_e) + torch.matmul(p_values[..., n_expr:], image.v)  # [B, H, L, Dh]
    # ConceptAttention's output space: the same heads-summed product as ``concept``, on the
    # attention outputs instead of the queries.
    scores[OUTPUT_SPACE_SCORE] = torch.matmul(image.out.float(), out.float().transpose(-1, -2)).sum(dim=1)
    out = out.transpose(1, 2).reshape(b, n_expr, h * dh)
    new_expr = adapter.expression_update(expr, out, state)
    return BranchOutput(expr=new_expr, scores=scores, text_mass=text_mass, text_attention=text_attention)


@dataclass(frozen=True)
class ImageGeometry:
    """How the patch grid maps back to the caller's pixels.

    The image is stretched (never cropped) from ``original_size`` to ``model_size``; the model's
    patch grid is ``grid``. A patch centre therefore maps to the original image exactly, whatever
    the aspect ratio or divisibility of the input.
    """

    original_size: tuple[int, int]  # (H, W) of the image the user gave
    model_size: tuple[int, int]  # (H, W) the model saw
    grid: tuple[int, int]  # (h, w) latent patch grid, row-major token order

    def patch_centre(self, row: float, col: float) -> tuple[float, float]:
        """(x, y) in original-image pixels of the centre of patch (row, col)."""
        h, w = self.grid
        height, width = self.original_size
        return (col + 0.5) * width / w, (row + 0.5) * height / h

    def to_dict(self) -> dict[str, list[int]]:
        return {
            "original_size": list(self.original_size),
            "model_size": list(self.model_size),
            "grid": list(self.grid),
        }


@dataclass
class BlockCapture:
    """What one block gave: every score of every (patch, expression token) and the text-to-text mass."""

    name: str  # e.g. "double.3", "single.10"
    index: int  # position in the model's block order (doubles first, then singles)
    scores: dict[str, torch.Tensor]  # RECORDED_SCORES -> [B, N_img, L] float32, CPU
    text_mass: torch.Tensor  # [B, L] float32, CPU
    # [B, L, L] float32, CPU: each expression token's attention on the expression's tokens (zero
    # across expressions), heads averaged; for diagnostics (refam.diagnostics).
    text_attention: torch.Tensor | None = None

    @property
    def logits(self) -> torch.Tensor:
        """The attention logits (``scaled_dot``)."""
        return self.scores["scaled_dot"]


@dataclass
class CapturedAttention:
    """Everything downstream needs: captured maps, token bookkeeping and image geometry.

    ``expressions`` are :class:`refam.expression.TokenizedExpression`; the token axis ``L`` of every
    block holds their non-padding tokens back to back, in ``layout`` order.
    """

    blocks: list[BlockCapture]
    expressions: list[Any]
    layout: ExpressionLayout
    geometry: ImageGeometry
    num_blocks: int  # blocks in the model (the branch may stop early)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.blocks[0].text_mass.shape[0] if self.blocks else 0

    def block_names(self) -> list[str]:
        return [b.name for b in self.blocks]

    def expression_scores(
        self, index: int, blocks: Sequence[BlockCapture] | None = None, score: str = DEFAULT_SCORE
    ) -> torch.Tensor:
        """``[n_blocks, B, N, L_e]`` scores (one of :data:`RECORDED_SCORES`) of expression ``index``."""
        check_choice("score", score, RECORDED_SCORES)
        start, end = self.layout.spans[index]
        chosen = self.blocks if blocks is None else blocks
        return torch.stack([b.scores[score][..., start:end] for b in chosen])

    def expression_text_mass(self, index: int, blocks: Sequence[BlockCapture] | None = None) -> torch.Tensor:
        """``[n_blocks, B, L_e]`` text-to-text mass of expression ``index``."""
        start, end = self.layout.spans[index]
        chosen = self.blocks if blocks is None else blocks
        return torch.stack([b.text_mass[..., start:end] for b in chosen])
