"""Image + referring expressions -> heatmaps, points and masks, whatever the backend.

expression -> capture -> heatmap -> point -> mask, in that order and only that order:
the backend knows nothing of filters, the heatmap nothing of segmenters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from refam.attention import CapturedAttention, ImageGeometry
from refam.expression import TokenizedExpression, tokenize_expression
from refam.expression.magnets import MagnetPlan
from refam.features import FeatureOptions
from refam.heatmap import ExpressionHeatmap, HeatmapOptions, build_heatmap
from refam.images import MAX_PIXELS, MIN_SIDE, to_rgb_uint8
from refam.language import LanguageCues, SpatialCue, analyze_expression
from refam.mask_choice import choose_mask
from refam.operating_point import OperatingPoint
from refam.options import RefAMOptions
from refam.points import upsample_heatmap
from refam.prompts import Prompt, choose_prompt
from refam.results import ExpressionResult

__all__ = [
    "AttentionBackend",
    "RefAMPipeline",
    "as_image_batch",
    "cue_direction",
    "expression_heatmaps",
    "feature_arguments",
    "normalize_expressions",
    "prepare_expressions",
    "prompt_for",
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


def feature_arguments(backend: Any, options: RefAMOptions) -> dict[str, Any]:
    """``features=`` for a backend that reads other features than one pass (FLUX: ``takes_features``);
    nothing for the others, which are refused anything but the default."""
    if getattr(backend, "takes_features", False):
        return {"features": options.features}
    if options.features != FeatureOptions():
        raise ValueError(
            f"{backend.name} reads one pass at σ (the paper's video setting); --features inversion and "
            "--sigmas are for FLUX image models: leave them unset for this model"
        )
    return {}


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
    texts: Sequence[str],
    tokenizer: Any,
    pad: int | None,
    magnets: Sequence[str] | MagnetPlan,
    options: HeatmapOptions,
    template: tuple[str, str] | None = None,
) -> tuple[list[TokenizedExpression], list[LanguageCues]]:
    """Language cues and tokens (padded to ``pad``: T5; None: an LLM encoder, whose causal
    attention padding cannot reach, at most 512 tokens) of every expression, in the text
    encoder's chat ``template`` if it has one: the one path for the library and the nodes. With
    ``np_mode="encode"`` the head noun phrase is what gets tokenized (``augmented``), standing for
    the expression (``text``); its maps need no NP mask then. ``magnets``: words, or a
    :class:`MagnetPlan` (Table 5's variants, random vectors included)."""
    plan = magnets if isinstance(magnets, MagnetPlan) else MagnetPlan(tuple(magnets))
    cues, tokenized = [], []
    for text in texts:
        cue = analyze_expression(
            text, noun_phrase=options.noun_phrase, spatial=options.spatial_bias, spatial_rule=options.spatial_rule
        )
        encoded = text
        if options.noun_phrase and options.np_mode == "encode" and cue.noun_phrase:
            encoded = cue.noun_phrase
            cue = dataclasses.replace(cue, noun_phrase_words=None)
        tokens = tokenize_expression(
            encoded, tokenizer, magnets=plan.words, max_length=pad or 512, pad_to=pad, template=template
        )
        tokens = dataclasses.replace(tokens, text=text, vector_magnets=plan.vectors, vector_seed=plan.seed)
        tokenized.append(tokens)
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

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        *,
        architecture: str | None = None,
        segmenter: str | Path | None = None,
        segmenter_variant: str | None = None,
        segmenter_image_size: int | None = None,
        t5: str | Path | None = None,
        clip_l: str | Path | None = None,
        vae: str | Path | None = None,
        comfyui_path: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = torch.float32,
        offload: bool = False,
        options: RefAMOptions | None = None,
        progress: ProgressFn | None = None,
    ) -> RefAMPipeline:
        """A ready pipeline from files, offline.

        ``model`` is a diffusers folder, a hub id in the Hugging Face cache or a FLUX transformer
        single file (``t5`` / ``clip_l`` / ``vae`` then default to ComfyUI's usual names under
        ``comfyui_path`` or ``COMFYUI_PATH``); without it ``REFAM_FLUX_MODEL``, then a cached
        FLUX.1, else the embedded toy model (announced through ``progress``, with where real
        weights go; it brings its own flood-fill segmenter and operating point).
        ``architecture`` is ``"flux"``, ``"flux2"`` (FLUX.2 klein), ``"chroma"``, ``"qwen_image"``, ``"z_image"``, ``"mochi"`` or None (read off
        the folder's ``transformer/config.json``; FLUX.1 when it names nothing else). ``segmenter`` is a SAM / SAM2
        checkpoint (a path or a file name in ComfyUI's ``models/sam2`` / ``models/sams``); it is
        loaded first, so a wrong one is refused before the diffusion model's long load.
        """
        from refam.assembly import load_parts

        backend, seg = load_parts(
            model, architecture=architecture, segmenter=segmenter, segmenter_variant=segmenter_variant,
            segmenter_image_size=segmenter_image_size, t5=t5, clip_l=clip_l, vae=vae, comfyui_path=comfyui_path,
            device=device, dtype=dtype, offload=offload, progress=progress,
        )  # fmt: skip
        return cls(backend, seg, options or RefAMOptions())

    def resolved(self, options: RefAMOptions | None = None, **overrides: Any) -> RefAMOptions:
        """``options`` (default: the pipeline's) with ``overrides``, unset values from the backend;
        features the backend cannot read are refused here, before any pass runs."""
        opts = options or self.options
        opts = opts.replace(**overrides) if overrides else opts
        feature_arguments(self.backend, opts)
        return opts.at(self.backend.operating_point)

    def tokenize(
        self, expressions: str | Sequence[str], options: RefAMOptions | None = None
    ) -> tuple[list[TokenizedExpression], list[LanguageCues]]:
        opts = options or self.options
        return prepare_expressions(
            normalize_expressions(expressions),
            self.backend.tokenizer,
            self.backend.text_pad_length,
            opts.magnet_plan(),
            opts.heatmap,
            getattr(self.backend, "text_template", None),
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
            **feature_arguments(self.backend, opts),
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
