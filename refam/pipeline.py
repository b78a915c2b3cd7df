"""Image + referring expressions -> heatmaps, points and masks, whatever the backend.

expression -> capture -> heatmap -> point -> mask, in that order and only that order:
the backend knows nothing of filters, the heatmap nothing of segmenters.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from refam.attention import CapturedAttention, ImageGeometry
from refam.expression import DEFAULT_MAGNETS, TokenizedExpression, tokenize_expression
from refam.heatmap import BlockSelection, ExpressionHeatmap, HeatmapOptions, TokenMap, build_heatmap
from refam.images import MAX_PIXELS, MIN_SIDE, to_rgb_uint8
from refam.language import LanguageCues, SpatialCue, analyze_expression
from refam.mask_choice import choose_mask
from refam.noise import check_seed, check_sigma
from refam.operating_point import FROM_BACKEND, FromBackend, OperatingPoint, check_resolution
from refam.points import Point, points_to_json, upsample_heatmap
from refam.prompts import Prompt, check_point_strategy, choose_prompt
from refam.variants import (
    BRANCH_POOLED,
    DEFAULT_MASK_CHOICE,
    DEFAULT_POINT_STRATEGY,
    MASK_CHOICES,
    check_choice,
)

__all__ = [
    "AttentionBackend",
    "as_image_batch",
    "choose_points",
    "prompt_for",
    "cue_direction",
    "expression_heatmaps",
    "segment",
    "ExpressionResult",
    "RefAMOptions",
    "RefAMPipeline",
    "normalize_expressions",
    "prepare_expressions",
]

ProgressFn = Callable[[str], None]


class AttentionBackend(Protocol):
    """What a DiT backend offers the pipeline (diffusers FLUX, ComfyUI FLUX, Mochi, the toy)."""

    name: str
    operating_point: OperatingPoint  # where the paper runs this model (σ, size, guidance)

    @property
    def tokenizer(self) -> Any: ...

    @property
    def text_pad_length(self) -> int: ...

    def capture(
        self,
        images: np.ndarray,
        expressions: Sequence[TokenizedExpression],
        caption: str = "",
        *,
        sigma: float,
        seed: int,
        guidance: float,
        resolution: int | None,
        blocks: Iterable[int] | None,
        progress: ProgressFn | None,
        branch_pooled: str,
    ) -> CapturedAttention: ...


@dataclass(frozen=True)
class RefAMOptions:
    """Every knob of the method; the defaults are the paper's.

    ``sigma``, ``guidance`` and ``resolution`` left at :data:`FROM_BACKEND` come from the
    backend's operating point (:mod:`refam.operating_point`: FLUX σ 0.75 at 1024², Mochi σ 0.01 at
    480p, the toy its validated σ); :meth:`at` fills them in.
    """

    magnets: tuple[str, ...] = DEFAULT_MAGNETS
    sigma: float | FromBackend = FROM_BACKEND
    seed: int = 0
    guidance: float | None | FromBackend = FROM_BACKEND  # ignored by models without guidance
    resolution: int | None | FromBackend = FROM_BACKEND  # model sees ~resolution² pixels; None: the image's size
    capture_blocks: tuple[int, ...] | None = None  # None = all blocks
    branch_pooled: str = BRANCH_POOLED[0]  # the pooled vector modulating the branch (refam.variants)
    heatmap: HeatmapOptions = field(default_factory=HeatmapOptions)
    points: int = 1  # positive points handed to the segmenter (1 = the paper's argmax)
    point_min_distance: int = 2  # patches between peaks when points > 1 (point_strategy "argmax")
    point_strategy: str = DEFAULT_POINT_STRATEGY  # where the positive points go (refam.variants)
    negative_points: int = 0  # negative points, one per other high region of the heatmap
    box_prompt: bool = False  # also prompt with the target region's bounding box
    mask_choice: str = DEFAULT_MASK_CHOICE  # which multimask candidate is the mask (refam.variants)
    heatmap_mask: bool = False  # the mask is the heatmap's target region, not the segmenter's
    max_pixels: int | None = MAX_PIXELS  # larger images are refused (refam.images); None: no limit

    def __post_init__(self) -> None:
        # Checked here, where every front end (CLI, library, nodes) builds its options, so a bad
        # value is refused before a model loads instead of silently becoming another one.
        if not isinstance(self.sigma, FromBackend):
            check_sigma(self.sigma)
        check_seed(self.seed)
        if not isinstance(self.resolution, FromBackend):
            check_resolution(self.resolution)
        for name in ("points", "point_min_distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if isinstance(self.guidance, float | int) and not math.isfinite(self.guidance):
            raise ValueError(f"guidance must be a finite number, got {self.guidance}")
        check_point_strategy(self.point_strategy, self.points)
        check_choice("mask_choice", self.mask_choice, MASK_CHOICES)
        if isinstance(self.negative_points, bool) or not isinstance(self.negative_points, int) or self.negative_points < 0:
            raise ValueError(f"negative_points must be a whole number >= 0 (0: none), got {self.negative_points!r}")
        for name in ("box_prompt", "heatmap_mask"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def at(self, point: OperatingPoint) -> RefAMOptions:
        """These options with every value left to the backend taken from ``point``."""
        filled = point.fill(sigma=self.sigma, guidance=self.guidance, resolution=self.resolution)
        heatmap = dataclasses.replace(self.heatmap, **point.fill(score=self.heatmap.score))
        return dataclasses.replace(self, heatmap=heatmap, **filled)

    def replace(self, **changes: Any) -> RefAMOptions:
        """Copy with changes; heatmap fields (``noun_phrase=False``...) may be given flat."""
        heat: dict[str, Any] = {}
        # ``blocks`` / ``skip_fraction`` come flat (indices, fraction) and become a BlockSelection;
        # this runs before the generic heatmap fields, one of which is also called ``blocks``.
        if "skip_fraction" in changes or "blocks" in changes:
            blocks = changes.pop("blocks", ())
            heat["blocks"] = (
                blocks
                if isinstance(blocks, BlockSelection)
                else BlockSelection(
                    indices=tuple(blocks or ()), skip_fraction=changes.pop("skip_fraction", 0.0)
                )
            )
        heat_fields = {f.name for f in dataclasses.fields(HeatmapOptions)}
        heat.update({k: changes.pop(k) for k in list(changes) if k in heat_fields})
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown RefAM option(s): {', '.join(sorted(unknown))}")
        out = dataclasses.replace(self, **changes)
        return dataclasses.replace(out, heatmap=dataclasses.replace(out.heatmap, **heat)) if heat else out


@dataclass
class ExpressionResult:
    """One expression on one image."""

    expression: str
    image_index: int
    heatmap: np.ndarray  # [H, W] float32 in [0, 1], original image size
    heatmap_grid: np.ndarray  # [h, w] on the latent grid
    point: Point  # the first positive point
    points: list[Point]  # every prompt point: the positive ones, then the negative ones
    mask: np.ndarray | None  # [H, W] bool, None without a segmenter (unless heatmap_mask)
    mask_score: float | None  # the segmenter's predicted IoU of the chosen candidate
    token_maps: list[TokenMap]
    gas_tokens: list[str]
    noun_phrase: str | None
    spatial: SpatialCue | None
    blocks: list[str]
    warnings: list[str]
    parser: str | None = None  # the spaCy pipeline that read the expression
    labels: list[int] = field(default_factory=list)  # per point: 1 positive, 0 negative
    box: tuple[float, float, float, float] | None = None  # (x0, y0, x1, y1) given to the segmenter
    mask_agreement: float | None = None  # IoU of the chosen candidate with the heatmap's target region
    mask_index: int | None = None  # which of the segmenter's candidates is the mask

    def positives(self) -> list[Point]:
        """The positive prompt points (all of them when no labels were recorded)."""
        if not self.labels:
            return list(self.points)
        return [p for p, label in zip(self.points, self.labels, strict=True) if label == 1]

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no arrays)."""
        return {
            "expression": self.expression,
            "image_index": self.image_index,
            "point": {"x": self.point.x, "y": self.point.y, "score": self.point.score},
            "points": points_to_json(self.points),
            "labels": list(self.labels),
            "box": [round(v, 2) for v in self.box] if self.box is not None else None,
            "mask_area": int(self.mask.sum()) if self.mask is not None else None,
            "mask_score": self.mask_score,
            "mask_agreement": self.mask_agreement,
            "mask_index": self.mask_index,
            "noun_phrase": self.noun_phrase,
            "spatial": (
                {"horizontal": self.spatial.horizontal, "vertical": self.spatial.vertical, "rule": self.spatial.rule}
                if self.spatial
                else None
            ),
            "parser": self.parser,
            "gas_tokens": self.gas_tokens,
            "tokens": [
                {"piece": t.piece, "role": t.role.value, "kept": t.kept, "gas": t.gas}
                for t in self.token_maps
            ],
            "blocks": self.blocks,
            "warnings": self.warnings,
        }


def normalize_expressions(expressions: str | Sequence[str]) -> list[str]:
    """One string (one expression) or a list; empty entries are an error, not silently dropped."""
    if isinstance(expressions, str):
        expressions = [expressions]
    if not isinstance(expressions, Sequence) or not expressions:
        raise ValueError("give at least one referring expression, e.g. 'the cat on the left'")
    out = []
    for i, e in enumerate(expressions):
        if not isinstance(e, str):
            raise TypeError(f"expression {i} must be a string, got {type(e).__name__}")
        if not e.strip():
            raise ValueError(f"expression {i} is empty: type what to segment, e.g. 'the cat on the left'")
        out.append(e.strip())
    return out


def prepare_expressions(
    texts: Sequence[str], tokenizer: Any, pad: int, magnets: Sequence[str], options: HeatmapOptions
) -> tuple[list[TokenizedExpression], list[LanguageCues]]:
    """Language cues and T5 tokens (padded to ``pad``) of every expression, the one path for the
    library and the nodes. With ``np_mode="encode"`` the head noun phrase is what gets tokenized
    (``augmented``), standing for the expression (``text``); its maps need no NP mask then."""
    cues, tokenized = [], []
    for text in texts:
        cue = analyze_expression(
            text, noun_phrase=options.noun_phrase, spatial=options.spatial_bias, spatial_rule=options.spatial_rule
        )
        encoded = text
        if options.noun_phrase and options.np_mode == "encode" and cue.noun_phrase:
            encoded = cue.noun_phrase
            cue = dataclasses.replace(cue, noun_phrase_words=None)
        tokens = tokenize_expression(encoded, tokenizer, magnets=tuple(magnets), max_length=pad, pad_to=pad)
        tokenized.append(dataclasses.replace(tokens, text=text) if encoded != text else tokens)
        cues.append(cue)
    return tokenized, cues


def _batch_items(images: Any) -> list[Any]:
    """A batch -> its images: a list / tuple, or the first dim of a 4-D array or tensor (split
    before any conversion, so a bfloat16 or float batch is converted one image at a time)."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


def as_image_batch(images: Any, *, max_pixels: int | None = MAX_PIXELS) -> tuple[np.ndarray, list[str]]:
    """One image or a batch -> ``[B, H, W, 3]`` uint8 and warnings about the input.

    An image is what :func:`refam.images.to_rgb_uint8` accepts (file path, PIL image, array or
    tensor; its docstring states the HWC / CHW layout rule); a batch is a list / tuple of them or
    a 4-D array / tensor ``[B, H, W, C]``. All images must share one size. ``max_pixels`` (None: no
    limit) applies to each image. One uint8 RGB image is not copied.
    """
    items = _batch_items(images)
    if not items:
        raise ValueError("the image batch is empty: give at least one image")
    arrays = [
        to_rgb_uint8(im, name="image" if len(items) == 1 else f"image {i}", max_pixels=max_pixels)
        for i, im in enumerate(items)
    ]
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"all images of a batch must have one size; got {sorted(sizes)}")
    h, w = arrays[0].shape[:2]
    warnings: list[str] = []
    if min(h, w) < MIN_SIDE:
        warnings.append(f"image is {w}x{h} px; below {MIN_SIDE} px the heatmap is coarse")
    return (arrays[0][None] if len(arrays) == 1 else np.stack(arrays)), warnings


def cue_direction(cue: LanguageCues, options: HeatmapOptions) -> SpatialCue | None:
    """The spatial cue the prior is made from, or None when the spatial bias is off."""
    if not options.spatial_bias or not cue.spatial:
        return None
    return cue.spatial


def expression_heatmaps(
    captured: CapturedAttention, cues: Sequence[LanguageCues], options: HeatmapOptions
) -> list[ExpressionHeatmap]:
    """One heatmap per captured expression (in capture order), each over the whole image batch."""
    if len(cues) != len(captured.expressions):
        raise ValueError(f"{len(cues)} language cues for {len(captured.expressions)} captured expressions")
    return [
        build_heatmap(
            captured,
            e,
            options,
            noun_phrase_words=cue.noun_phrase_words,
            spatial=cue_direction(cue, options),
        )
        for e, cue in enumerate(cues)
    ]


def choose_points(
    grid: torch.Tensor,
    geometry: ImageGeometry,
    count: int = 1,
    min_distance: int = 2,
    strategy: str = DEFAULT_POINT_STRATEGY,
) -> list[Point]:
    """The segmenter's positive points for one heatmap grid by ``strategy`` (refam.prompts): with
    ``argmax`` the argmax, or ``count`` separated peaks."""
    return list(choose_prompt(grid, geometry, strategy=strategy, count=count, min_distance=min_distance).points)


def prompt_for(grid: torch.Tensor, geometry: ImageGeometry, opts: RefAMOptions) -> Prompt:
    """The segmenter's prompt for one heatmap grid as ``opts`` ask for it."""
    return choose_prompt(
        grid,
        geometry,
        strategy=opts.point_strategy,
        count=opts.points,
        min_distance=opts.point_min_distance,
        negatives=opts.negative_points,
        box=opts.box_prompt,
    )


class RefAMPipeline:
    """RefAM on one backend with an optional point-prompted segmenter."""

    def __init__(
        self, backend: AttentionBackend, segmenter: Any | None = None, options: RefAMOptions | None = None
    ):
        self.backend = backend
        self.segmenter = segmenter
        self.options = options or RefAMOptions()

    def resolved(self, options: RefAMOptions | None = None, **overrides: Any) -> RefAMOptions:
        """``options`` (default: the pipeline's) with ``overrides``, unset values from the backend."""
        opts = options or self.options
        opts = opts.replace(**overrides) if overrides else opts
        return opts.at(self.backend.operating_point)

    def tokenize(
        self, expressions: str | Sequence[str], options: RefAMOptions | None = None
    ) -> tuple[list[TokenizedExpression], list[LanguageCues]]:
        opts = options or self.options
        return prepare_expressions(
            normalize_expressions(expressions),
            self.backend.tokenizer,
            self.backend.text_pad_length,
            opts.magnets,
            opts.heatmap,
        )

    def capture(
        self,
        images: Any,
        expressions: Sequence[TokenizedExpression],
        caption: str = "",
        options: RefAMOptions | None = None,
        progress: ProgressFn | None = None,
    ) -> CapturedAttention:
        """The backend's captured attention for ``images`` (one pass for all ``expressions``)."""
        opts = self.resolved(options)
        batch, _ = as_image_batch(images, max_pixels=opts.max_pixels)
        return self._capture(batch, expressions, caption, opts, progress)

    def _capture(
        self,
        batch: np.ndarray,
        expressions: Sequence[TokenizedExpression],
        caption: str,
        opts: RefAMOptions,
        progress: ProgressFn | None,
    ) -> CapturedAttention:
        return self.backend.capture(
            batch,
            expressions,
            caption or "",
            sigma=opts.sigma,
            seed=opts.seed,
            guidance=opts.guidance,
            resolution=opts.resolution,
            blocks=opts.capture_blocks,
            progress=progress,
            branch_pooled=opts.branch_pooled,
        )

    def segment_batch(
        self,
        images: Any,
        expressions: str | Sequence[str],
        caption: str = "",
        *,
        progress: ProgressFn | None = None,
        **overrides: Any,
    ) -> list[list[ExpressionResult]]:
        """Results ``[image][expression]``; one DiT pass serves every expression of the batch."""
        opts = self.resolved(**overrides)
        batch, image_warnings = as_image_batch(images, max_pixels=opts.max_pixels)
        tokenized, cues = self.tokenize(expressions, opts)
        captured = self._capture(batch, tokenized, caption, opts, progress)

        heatmaps = expression_heatmaps(captured, cues, opts.heatmap)
        results: list[list[ExpressionResult]] = [[] for _ in range(batch.shape[0])]
        prompts: list[list[Prompt]] = [[] for _ in range(batch.shape[0])]
        for expr, cue, heat in zip(tokenized, cues, heatmaps, strict=True):
            spatial = cue_direction(cue, opts.heatmap)
            warnings = [*image_warnings, *expr.warnings, *cue.warnings, *heat.warnings]
            for b in range(batch.shape[0]):
                grid = heat.grid[b]
                prompt = prompt_for(grid, captured.geometry, opts)
                prompts[b].append(prompt)
                results[b].append(
                    ExpressionResult(
                        expression=expr.text,
                        image_index=b,
                        # One image at a time, so each result owns just its own full-size map.
                        heatmap=upsample_heatmap(heat.grid[b], captured.geometry).numpy(),
                        heatmap_grid=grid.numpy(),
                        point=prompt.points[0],
                        points=list(prompt.points),
                        labels=list(prompt.labels),
                        box=prompt.box,
                        mask=prompt.regions.mask() if opts.heatmap_mask else None,
                        mask_score=None,
                        token_maps=heat.token_maps[b],
                        gas_tokens=heat.gas_tokens[b],
                        noun_phrase=cue.noun_phrase,
                        spatial=spatial,
                        parser=cue.parser,
                        blocks=heat.blocks,
                        warnings=list(warnings),
                    )
                )
        if self.segmenter is not None and not opts.heatmap_mask:
            if progress:
                progress("segmenting")
            for b, per_image in enumerate(results):
                self.segmenter.set_image(batch[b], max_pixels=opts.max_pixels)
                for res, prompt in zip(per_image, prompts[b], strict=True):
                    pred = self.segmenter.predict(prompt.xy(), list(prompt.labels), box=prompt.box)
                    chosen = choose_mask(pred, prompt.regions, opts.mask_choice)
                    res.mask, res.mask_score, res.mask_agreement = chosen.mask, chosen.score, chosen.agreement
                    res.mask_index = chosen.index
        return results

    def segment(
        self,
        image: Any,
        expressions: str | Sequence[str],
        caption: str = "",
        *,
        progress: ProgressFn | None = None,
        **overrides: Any,
    ) -> list[ExpressionResult]:
        """Per expression: heatmap, point, mask, per-token maps, GAS tokens, warnings."""
        return self.segment_batch([image], expressions, caption, progress=progress, **overrides)[0]


_default_pipeline: RefAMPipeline | None = None


def segment(
    image: Any,
    expressions: str | Sequence[str],
    caption: str = "",
    *,
    pipeline: RefAMPipeline | None = None,
    **options: Any,
) -> list[ExpressionResult]:
    """Per expression: heatmap, point, mask, per-token maps, GAS tokens and warnings.

    Without ``pipeline`` a default one is loaded once (FLUX.1 from ``REFAM_FLUX_MODEL`` or the
    Hugging Face cache, else the embedded toy model; see :func:`refam.loading.load_pipeline`).
    """
    global _default_pipeline
    if pipeline is None:
        if _default_pipeline is None:
            import torch

            from refam.loading import load_pipeline

            _default_pipeline = load_pipeline(device="cuda" if torch.cuda.is_available() else "cpu")
        pipeline = _default_pipeline
    return pipeline.segment(image, expressions, caption, **options)
