"""The FLUX image chain: caption -> expression -> capture -> filter -> heatmap -> point -> (segment).

Glue only: inputs are parsed, the library does the work, outputs are formatted for ComfyUI.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from refam.architectures.flux import FLUX_IMAGE
from refam.diagnostics import Diagnosis, diagnose
from refam.expression import DEFAULT_MAGNETS
from refam.expression.magnets import magnet_plan
from refam.features import (
    DEFAULT_ETA,
    DEFAULT_ETA_STOP,
    DEFAULT_GAMMA,
    DEFAULT_INVERSION_STEPS,
    FeatureOptions,
    parse_step_spec,
)
from refam.heatmap import BlockSelection, HeatmapOptions, parse_block_spec
from refam.noise import MAX_SEED
from refam.operating_point import check_resolution
from refam.pipeline import (
    as_image_batch,
    expression_heatmaps,
    normalize_expressions,
    prepare_expressions,
)
from refam.points import points_to_json, upsample_heatmap
from refam.prompts import choose_prompt
from refam.variants import (
    BRANCH_POOLED,
    DEFAULT_POINT_STRATEGY,
    DEFAULT_SCORE,
    FEATURE_MODES,
    GAS_RULES,
    MAGNET_VARIANTS,
    NP_MODES,
    POINT_STRATEGIES,
    SCORES,
    SPACES,
    SPATIAL_RULES,
    STEP_AGGREGATIONS,
)
from refam.visualize import colorize, heatmap_overlay, tile

from . import payloads as P
from .spec import Param, Result


# -- shared conversions ---------------------------------------------------------------------------
def image_batch(image: torch.Tensor) -> np.ndarray:
    """ComfyUI IMAGE ``[B, H, W, C]`` float 0..1 -> ``[B, H, W, 3]`` uint8 (what the library reads)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image must be a ComfyUI IMAGE batch [B, H, W, C]; got {type(image).__name__} {shape}")
    batch, _ = as_image_batch(image)
    return batch


def to_comfy_image(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> IMAGE float 0..1."""
    return torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)


def split_lines(text: str) -> list[str]:
    """One expression per line; blank lines are ignored (an all-blank text is an error later)."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def parse_magnets(text: str) -> tuple[str, ...]:
    """Magnet words separated by spaces or commas (``_`` is a magnet itself)."""
    return tuple(w for w in text.replace(",", " ").split() if w)


# -- run functions -----------------------------------------------------------------------------------
def caption_conditioning(clip, caption: str, guidance: float) -> tuple:
    from refam.backends.comfy_text import encode_caption

    return (encode_caption(clip, caption, guidance),)


def referring_expression(
    clip,
    expressions: str,
    magnets: str,
    noun_phrase: bool,
    spatial_bias: bool,
    t5_length: int,
    np_mode: str,
    spatial_rule: str,
    magnet_variant: str = MAGNET_VARIANTS[0],
    magnet_seed: int = 0,
) -> tuple:
    from refam.backends.comfy_text import encode_expressions, text_part

    texts = normalize_expressions(split_lines(expressions) or [""])
    options = HeatmapOptions(
        noun_phrase=noun_phrase, np_mode=np_mode, spatial_bias=spatial_bias, spatial_rule=spatial_rule
    )
    plan = magnet_plan(magnet_variant, parse_magnets(magnets), int(magnet_seed))
    text = text_part(clip)
    # t5_length pads T5 (FLUX.1, Mochi); an LLM encoder (FLUX.2) is causal and takes no padding.
    pad = int(t5_length) if text.pad_length is not None else None
    tokenized, cues = prepare_expressions(texts, text.tokenizer, pad, plan, options, text.template)
    embeds, layout = encode_expressions(clip, tokenized)
    return (P.Expressions(tokenized=tokenized, cues=cues, embeds=embeds, layout=layout),)


def capture_attention(
    model,
    vae,
    image,
    conditioning,
    expression: P.Expressions,
    sigma: float,
    seed: int,
    blocks: str,
    resolution: int,
    branch_pooled: str,
    features: FeatureOptions | None = None,
) -> tuple:
    from refam.backends.comfy_flux import capture_flux, joint_block_count
    from refam.backends.comfy_runtime import block_progress

    batch = image_batch(image)
    blocks_per_pass = joint_block_count(model)
    features = features or FeatureOptions()
    # The bar counts blocks of the one pass, or with inversion the steps of both stages.
    total = 2 * features.inversion_steps if features.mode == "inversion" else blocks_per_pass
    captured = capture_flux(
        model,
        vae,
        batch,
        conditioning,
        expression.embeds,
        expression.layout,
        expression.tokenized,
        sigma=sigma,
        seed=seed,
        blocks=parse_block_spec(blocks) or None,
        resolution=check_resolution(resolution or None),
        progress=block_progress(total),
        branch_pooled=branch_pooled,
        features=features,
    )
    return (P.Attention(captured=captured, expressions=expression),)


def feature_mode(
    features: str,
    sigmas: str,
    inversion_steps: int,
    gamma: float,
    eta: float,
    eta_stop: float,
    collect_steps: str,
    step_aggregation: str,
) -> tuple:
    if features == "inversion":
        if sigmas.strip():
            raise ValueError("sigmas average single passes; clear it for inversion (collect_steps picks its steps)")
        options = FeatureOptions(
            mode="inversion",
            inversion_steps=inversion_steps,
            gamma=gamma,
            eta=eta,
            eta_stop=eta_stop,
            collect_steps=parse_step_spec(collect_steps),
            step_aggregation=step_aggregation,
        )
    else:
        try:
            levels = tuple(float(x) for x in sigmas.replace(";", ",").split(",") if x.strip())
        except ValueError:
            raise ValueError(f"sigmas takes comma-separated noise levels such as 0.5, 0.75, 0.9; got {sigmas!r}") from None
        options = FeatureOptions(sigmas=levels or None, step_aggregation=step_aggregation)
    return (options,)


def filter_tokens(
    attention: P.Attention,
    score: str,
    drop_stop_words: bool,
    drop_magnets: bool,
    drop_eos: bool,
    remove_gas: bool,
    gas_threshold: float,
    gas_rule: str,
    noun_phrase: bool,
    space: str = SPACES[0],
) -> tuple:
    return (
        attention.with_options(
            score=score,
            space=space,
            drop_stop_words=drop_stop_words,
            drop_magnets=drop_magnets,
            drop_eos=drop_eos,
            remove_gas=remove_gas,
            gas_threshold=gas_threshold,
            gas_rule=gas_rule,
            noun_phrase=noun_phrase,
        ),
    )


def _entries(per_expression: list[torch.Tensor], n_images: int) -> torch.Tensor:
    """Per-expression ``[B, ...]`` tensors -> one batch in :data:`payloads.BATCH_ORDER`."""
    return torch.stack([per_expression[e][b] for b in range(n_images) for e in range(len(per_expression))])


def heatmap(attention: P.Attention, image, blocks: str, skip_fraction: float, spatial_bias: bool) -> tuple:
    selection = BlockSelection(indices=parse_block_spec(blocks), skip_fraction=skip_fraction)
    options = attention.with_options(blocks=selection, spatial_bias=spatial_bias).options
    captured = attention.captured
    heats = expression_heatmaps(captured, attention.expressions.cues, options)
    n_images = captured.batch_size
    grids = _entries([h.grid for h in heats], n_images)
    full = upsample_heatmap(grids, captured.geometry)
    batch = image_batch(image)
    if batch.shape[:3] != (n_images, *captured.geometry.original_size):
        raise ValueError(
            f"image batch {tuple(batch.shape[:3])} is not the one captured "
            f"({n_images}, {captured.geometry.original_size[0]}, {captured.geometry.original_size[1]})"
        )
    n_expr = len(heats)
    overlays = [heatmap_overlay(batch[i // n_expr], full[i].numpy()) for i in range(full.shape[0])]
    warnings = sorted({w for h in heats for w in h.warnings})
    payload = P.Heatmaps(
        grids=grids,
        geometry=captured.geometry,
        texts=attention.expressions.texts,
        n_images=n_images,
        warnings=warnings,
    )
    return full.float(), to_comfy_image(overlays), payload


def point(
    heatmaps: P.Heatmaps, mode: str, count: int, min_distance: int, negative_points: int = 0, box: bool = False
) -> tuple:
    # "top_k" is the node's older name for separated argmax peaks; the other modes are strategies.
    strategy, n = ("argmax", count) if mode == "top_k" else (mode, count if mode == "spread" else 1)
    prompts = [
        choose_prompt(g, heatmaps.geometry, strategy=strategy, count=n, min_distance=min_distance,
                      negatives=negative_points, box=box)
        for g in heatmaps.grids
    ]
    typed = P.Points(
        points=[list(p.points) for p in prompts],
        texts=heatmaps.texts,
        n_images=heatmaps.n_images,
        image_size=heatmaps.geometry.original_size,
        prompts=prompts,
    )
    positive, negative = sam3_coords(typed)
    return points_json(typed), typed, positive, negative, sam3_boxes(typed)


def sam3_coords(points: P.Points) -> tuple[str, str]:
    """Positive and negative points as ComfyUI core's SAM3 Detect reads them: JSON lists of
    ``{"x": int, "y": int}`` in image pixels (every entry of the batch, in batch order)."""
    lists: tuple[list[dict[str, int]], list[dict[str, int]]] = ([], [])
    for i, entry in enumerate(points.points):
        for p, label in zip(entry, points.labels(i), strict=True):
            lists[0 if label == 1 else 1].append({"x": int(p.x), "y": int(p.y)})
    return json.dumps(lists[0]), json.dumps(lists[1])


def sam3_boxes(points: P.Points) -> list[list[dict[str, int]]]:
    """Per image, the boxes of its entries as ComfyUI's BOUNDING_BOX type holds them
    (``{"x", "y", "width", "height"}`` in pixels; SAM3 Detect reads a list per frame)."""
    n_expr = len(points.texts)
    per_image: list[list[dict[str, int]]] = [[] for _ in range(points.n_images)]
    for i in range(len(points.points)):
        box = points.box(i)
        if box is not None:
            x0, y0, x1, y1 = box
            per_image[i // n_expr].append(
                {"x": int(x0), "y": int(y0), "width": max(1, round(x1 - x0)), "height": max(1, round(y1 - y0))}
            )
    return per_image


def points_json(points: P.Points) -> str:
    """kijai-style ``[{"x":..,"y":..}]`` of the positive points (all entries, in batch order; extra
    keys say whose point)."""
    n_expr = len(points.texts)
    rows = []
    for i, entry in enumerate(points.points):
        positive = [p for p, label in zip(entry, points.labels(i), strict=True) if label == 1]
        for p in points_to_json(positive):
            rows.append({**p, "image": i // n_expr, "expression": i % n_expr})
    return json.dumps(rows)


def token_maps(attention: P.Attention, image_index: int) -> tuple:
    captured = attention.captured
    if not 0 <= image_index < captured.batch_size:
        raise ValueError(f"image_index {image_index} is outside the batch of {captured.batch_size}")
    heats = expression_heatmaps(captured, attention.expressions.cues, attention.options)
    tiles, labels = [], []
    report = [f"model: {captured.meta['architecture']}"] if "architecture" in captured.meta else []
    for text, heat in zip(attention.expressions.texts, heats, strict=True):
        report.append(f"{text!r}: GAS {heat.gas_tokens[image_index] or 'none'}")
        for tm in heat.token_maps[image_index]:
            tiles.append(_token_tile(tm.grid.numpy()))
            state = "GAS" if tm.gas else ("kept" if tm.kept else "dropped")
            labels.append(f"{tm.piece} [{tm.role.value}, {state}]")
            report.append(f"  {tm.piece!r:14} role={tm.role.value:8} {state}")
    grid = tile(tiles, columns=min(8, len(tiles)), labels=labels)
    analyses = [diagnose(captured, e, attention.options, image=image_index) for e in range(len(heats))]
    return (
        to_comfy_image(grid[None]),
        "\n".join(report),
        to_comfy_image(_text_attention_tiles(analyses)[None]),
        json.dumps([d.to_json() for d in analyses]),
    )


def _text_attention_tiles(analyses: list[Diagnosis]) -> np.ndarray:
    """Fig. 3 (top): each expression's text-to-text attention, one tile per block (rows: queries)."""
    tiles, labels = [], []
    for e, d in enumerate(analyses):
        for name, matrix in zip(d.blocks, d.text_attention, strict=True):
            tiles.append(_token_tile(np.asarray(matrix, dtype=np.float32), width=96))
            labels.append(f"#{e} {name}")
    return tile(tiles, columns=min(8, len(tiles)), labels=labels)


def _token_tile(grid: np.ndarray, width: int = 160) -> np.ndarray:
    """A token's map, min-max scaled and enlarged (nearest) so a label fits under it."""
    from PIL import Image

    scaled = (grid - grid.min()) / max(float(np.ptp(grid)), 1e-12)
    factor = max(1, width // grid.shape[1])
    image = Image.fromarray(colorize(scaled))
    return np.asarray(image.resize((grid.shape[1] * factor, grid.shape[0] * factor), Image.NEAREST))


# -- declarations ----------------------------------------------------------------------------------
_EXPRESSIONS_TIP = "One referring expression per line (e.g. 'the cat on the left'); each gives its own mask. Taken literally: (word:1.2) is not weight syntax."
_BATCH_TIP = f"Batch order: {P.BATCH_ORDER}."

CAPTION_INPUTS = (
    Param("clip", "CLIP", "FLUX's text encoders (DualCLIPLoader, type flux: T5-XXL + CLIP-L)."),
    Param(
        "caption",
        "STRING",
        "A caption of the whole image (optional; the paper uses the dataset caption). Empty = the empty prompt.",
        default="",
        multiline=True,
    ),
    Param("guidance", "FLOAT", "FLUX distilled guidance (ignored by schnell).", default=FLUX_IMAGE.guidance, min=0.0, max=100.0, step=0.1),
)
EXPRESSION_INPUTS = (
    Param("clip", "CLIP", "FLUX's text encoders: the expression is encoded by the model's own T5."),
    Param("expressions", "STRING", _EXPRESSIONS_TIP, default="", multiline=True),
    Param(
        "magnets",
        "STRING",
        "Attention magnets appended to every expression (space separated). They soak up background attention and are filtered out afterwards. Empty = off.",
        default=" ".join(DEFAULT_MAGNETS),
    ),
    Param("noun_phrase", "BOOLEAN", "Find the head noun phrase with spaCy (used by Filter Tokens).", default=True),
    Param("spatial_bias", "BOOLEAN", "Read direction words (left, right, top, ...) for the Heatmap's positional prior.", default=True),
    Param(
        "t5_length",
        "INT",
        "T5 length the expressions are padded to, as BFL pads FLUX prompts: 512 for FLUX.1-dev, 256 for schnell. "
        "FLUX's T5 has no attention mask, so the padding shapes every token (Mochi's T5 masks it).",
        default=FLUX_IMAGE.text_length,
        min=16,
        max=1024,
        step=16,
    ),
    Param(
        "np_mode",
        "COMBO",
        "mask (the paper): keep the noun phrase's tokens of the whole expression (Filter Tokens' noun_phrase); "
        "encode: encode the noun phrase as its own text instead, as HybridGL does.",
        default=NP_MODES[0],
        options=NP_MODES,
    ),
    Param(
        "spatial_rule",
        "COMBO",
        "hybridgl (the paper uses HybridGL's preprocessing): the direction word whose syntactic head comes first, "
        "left/right/middle only; absolute: both axes, 'top left' included.",
        default=SPATIAL_RULES[0],
        options=SPATIAL_RULES,
    ),
    Param(
        "magnet_variant",
        "COMBO",
        "Table 5. default: the magnets above (the paper's four stop words and pink); stop_words: their stop words "
        "only; random_stop_words: the stop words drawn from the paper's list with magnet_seed; random_vectors: random "
        "embeddings in their place; none: no magnets.",
        default=MAGNET_VARIANTS[0],
        options=MAGNET_VARIANTS,
    ),
    Param("magnet_seed", "INT", "Seed of the random stop words / vectors (random_* variants only).", default=0, min=0, max=2**31 - 1),
)
CAPTURE_INPUTS = (
    Param("model", "MODEL", "The FLUX model you already loaded (UNETLoader, CheckpointLoaderSimple, GGUF, fp8). Not copied, not modified."),
    Param("vae", "VAE", "FLUX's VAE (ae.safetensors)."),
    Param("image", "IMAGE", "Image batch; any size (resized for the model, results come back at this size)."),
    Param("conditioning", "CONDITIONING", "Caption conditioning (RefAM Caption Conditioning)."),
    Param("expression", P.EXPRESSION, "Encoded referring expressions (RefAM Referring Expression)."),
    Param("sigma", "FLOAT", "Noise level of the single denoising pass (paper: 0.75 = timestep 750).", default=FLUX_IMAGE.sigma, min=0.01, max=1.0, step=0.01),
    Param("seed", "INT", "Seed of the noise; fixed for reproducible masks.", default=0, min=0, max=MAX_SEED),
    Param("blocks", "STRING", "Blocks to capture: 'all', indices/ranges (0-18), names (double.3) or kinds (single). Fewer blocks stop the pass early.", default="all"),
    Param("resolution", "INT", "The model sees about resolution² pixels (aspect kept, multiple of 16). 0 = the image's own size.", default=FLUX_IMAGE.resolution, min=0, max=4096, step=16),
    Param(
        "branch_pooled",
        "COMBO",
        "Pooled CLIP vector modulating the expression branch: zero (ConceptAttention's, the paper) or the caption's.",
        default=BRANCH_POOLED[0],
        options=BRANCH_POOLED,
    ),
    Param("features", P.FEATURES, "RefAM Feature Mode: several sigmas or RF-inversion. Without it: one pass at sigma.", optional=True),
)
FILTER_INPUTS = (
    Param("attention", P.ATTENTION, "Captured attention (RefAM Capture Attention)."),
    Param(
        "score",
        "COMBO",
        "What each token's map is made of. concept_attention (the paper, following ConceptAttention): image and "
        "expression queries; scaled_dot: the attention logits; attention_probs: the expression's attention on the image.",
        default=DEFAULT_SCORE,
        options=SCORES,
    ),
    Param("drop_stop_words", "BOOLEAN", "Drop stop-word maps (the paper's Appendix-B list).", default=True),
    Param("drop_magnets", "BOOLEAN", "Drop the magnets' maps (they exist to absorb attention).", default=True),
    Param("drop_eos", "BOOLEAN", "Drop the end-of-sequence token's map.", default=True),
    Param("remove_gas", "BOOLEAN", "Drop global attention sinks' maps. The paper only reports them (Token Maps flags them).", default=False),
    Param("gas_threshold", "FLOAT", "GAS threshold (paper: 10).", default=10.0, min=1.0, max=1000.0, step=0.5),
    Param(
        "gas_rule",
        "COMBO",
        "GAS reference: paper = the mean text attention over all tokens and blocks; others = over the other tokens.",
        default=GAS_RULES[0],
        options=GAS_RULES,
    ),
    Param("noun_phrase", "BOOLEAN", "Keep only the head noun phrase's tokens (needs spaCy; off with a warning without it).", default=True),
    Param(
        "space",
        "COMBO",
        "Table 8. cross_attention (the paper's, scored as score says) or output: ConceptAttention's attention-output "
        "space (the expression's and the image's attention outputs; score is then not used).",
        default=SPACES[0],
        options=SPACES,
    ),
)
HEATMAP_INPUTS = (
    Param("attention", P.ATTENTION, "Captured (and filtered) attention."),
    Param("image", "IMAGE", "The captured image batch, for the overlay preview."),
    Param("blocks", "STRING", "Blocks averaged into the heatmap: 'all', indices/ranges, names or kinds.", default="all"),
    Param("skip_fraction", "FLOAT", "Drop this leading fraction of the model's blocks (paper Table 1: 0.6 does not hurt).", default=0.0, min=0.0, max=0.95, step=0.05),
    Param("spatial_bias", "BOOLEAN", "Multiply a positional prior from direction words into the heatmap.", default=True),
)
POINT_INPUTS = (
    Param("heatmaps", P.HEATMAP, "Heatmaps (RefAM Heatmap)."),
    Param(
        "mode", "COMBO",
        "Where the point goes. argmax: the paper's (the best patch's centre, often on the object's edge); "
        "upsampled_argmax: the best pixel of the smooth heatmap; interior: the deepest point of the heatmap's "
        "high region holding its maximum; centroid: that region's centroid, else interior; spread: count points "
        "inside that region; top_k: count separated argmax peaks.",
        default=DEFAULT_POINT_STRATEGY, options=(*POINT_STRATEGIES, "top_k"),
    ),
    Param("count", "INT", "Points per entry with spread and top_k.", default=3, min=1, max=16),
    Param("min_distance", "INT", "Minimum distance between top_k peaks, in latent patches.", default=2, min=1, max=64),
    Param("negative_points", "INT", "Negative points from the heatmap's other high regions (0: none, the paper).", default=0, min=0, max=16),
    Param("box", "BOOLEAN", "Also give the segmenter the target region's bounding box.", default=False),
)
FEATURE_INPUTS = (
    Param(
        "features",
        "COMBO",
        "single: noised passes at sigma (the paper's main setting). inversion: RF-inversion of the image, then "
        "denoising with the maps read on the denoising steps (the paper's App. A.1 / Table 7; ~2x steps passes).",
        default=FEATURE_MODES[0],
        options=FEATURE_MODES,
    ),
    Param("sigmas", "STRING", "single: comma-separated noise levels, one pass each, maps averaged (e.g. 0.5, 0.75, 0.9). Empty: the capture node's sigma.", default=""),
    Param("inversion_steps", "INT", "inversion: steps of the inversion and of the denoising (28 in the paper's timing).", default=DEFAULT_INVERSION_STEPS, min=1, max=200),
    Param("gamma", "FLOAT", "inversion: controller of the forward ODE, 0 plain inversion .. 1 the noise sample (RF-inversion: 0.5).", default=DEFAULT_GAMMA, min=0.0, max=1.0, step=0.05),
    Param("eta", "FLOAT", "inversion: pull of the first denoising steps back to the image; 0 = plain denoising (RF-inversion: 1.0).", default=DEFAULT_ETA, min=0.0, max=1.0, step=0.05),
    Param("eta_stop", "FLOAT", "inversion: fraction of the denoising steps eta applies to (RF-inversion: 0.25).", default=DEFAULT_ETA_STOP, min=0.0, max=1.0, step=0.05),
    Param("collect_steps", "STRING", "inversion: denoising steps whose maps are read: 'all' or indices/ranges from 0 (the noisiest), e.g. 0-13.", default="all"),
    Param(
        "step_aggregation",
        "COMBO",
        "Several passes: average the attention maps (maps) or the scores before one softmax (scores, ConceptAttention's order).",
        default=STEP_AGGREGATIONS[0],
        options=STEP_AGGREGATIONS,
    ),
)
FEATURE_OUTPUTS = (Result("features", P.FEATURES, "Feature mode for RefAM Capture Attention (FLUX)'s features input."),)
TOKEN_MAP_INPUTS = (
    Param("attention", P.ATTENTION, "Captured attention; the Filter Tokens settings decide which maps are kept."),
    Param("image_index", "INT", "Which image of the batch to show.", default=0, min=0, max=4096),
)

CAPTION_OUTPUTS = (Result("conditioning", "CONDITIONING", "Caption conditioning with FLUX guidance."),)
EXPRESSION_OUTPUTS = (Result("expression", P.EXPRESSION, "Tokens with roles, language cues and T5 embeddings."),)
ATTENTION_OUTPUTS = (Result("attention", P.ATTENTION, "Per-block attention of every expression token to every image patch."),)
HEATMAP_OUTPUTS = (
    Result("heatmap", "MASK", f"Heatmaps at the image's size, 0..1. {_BATCH_TIP}"),
    Result("overlay", "IMAGE", f"Heatmaps over the image. {_BATCH_TIP}"),
    Result("heatmaps", P.HEATMAP, "Heatmaps on the latent grid, for RefAM Point."),
)
POINT_OUTPUTS = (
    Result("points_json", "STRING", 'Points as JSON [{"x":..,"y":..}] in image pixels (kijai-compatible).'),
    Result("points", P.POINTS, "Typed points for RefAM Segment."),
    Result("positive_coords", "STRING", 'Positive points as JSON [{"x": int, "y": int}] (ComfyUI SAM3 Detect\'s positive_coords).'),
    Result("negative_coords", "STRING", "Negative points, same format (SAM3 Detect's negative_coords)."),
    Result("bboxes", "BOUNDING_BOX", "The target regions' boxes per image (SAM3 Detect's bboxes); empty unless box is on."),
)
TOKEN_MAP_OUTPUTS = (
    Result("token_maps", "IMAGE", "One tile per token with its role and whether it was kept or flagged as GAS."),
    Result("report", "STRING", "Tokens, roles, kept/dropped and GAS tokens as text."),
    Result("text_attention", "IMAGE", "Fig. 3 (top): each expression's text-to-text attention per block (rows: query tokens)."),
    Result(
        "diagnostics",
        "STRING",
        "JSON per expression: entropy per block (mean / min, Fig. 4), text-to-text attention, per-token text-to-text "
        "and text-to-image mass with the GAS (Fig. 1).",
    ),
)
