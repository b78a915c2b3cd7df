"""The method's named variants, torch-free so the command line can offer them without loading a
model. The first of each list is the paper's."""

from __future__ import annotations

__all__ = [
    "BRANCH_POOLED",
    "DEFAULT_MASK_CHOICE",
    "DEFAULT_POINT_STRATEGY",
    "DEFAULT_SCORE",
    "OUTPUT_SPACE_SCORE",
    "RECORDED_SCORES",
    "FEATURE_MODES",
    "GAS_RULES",
    "MAGNET_VARIANTS",
    "MASK_CHOICES",
    "NP_MODES",
    "POINT_STRATEGIES",
    "SCORES",
    "SPACES",
    "SPATIAL_RULES",
    "STEP_AGGREGATIONS",
    "check_choice",
    "check_score",
]

#: How an image patch and an expression token are scored before the softmax over tokens.
#: ``concept_attention`` (default): ConceptAttention's cross-attention maps as its published FLUX
#: code computes them (``compute_heatmaps_from_vectors`` on the ``cross_attention_*_vectors`` its
#: double-stream block stores: image and concept *queries* after QK-norm, before RoPE, heads
#: flattened into channels, no 1/sqrt(d)); the paper: "we follow ConceptAttention" (§3.2).
#: ``scaled_dot``: the attention logits, mean over heads of <q_img, k_expr> / sqrt(d) (RoPE'd q).
#: ``attention_probs``: the expression queries' attention probabilities on each image key (mean
#: over heads; the "text-to-image attention" of the paper's Fig. 3), kept as log-probabilities so
#: the softmax over tokens renormalises them per patch.
SCORES: tuple[str, ...] = ("concept_attention", "scaled_dot", "attention_probs")
DEFAULT_SCORE = SCORES[0]


#: Which representation the maps are read in (Table 8). ``cross_attention``: the paper's
#: ("For referral tasks, REFAM use cross attention", Fig. 7), scored as ``score`` says.
#: ``output``: ConceptAttention's output space, the expression branch's attention outputs against
#: the image tokens' attention outputs of the real joint attention (both before the output
#: projection, heads flattened, a plain dot product: ``output_space_*_vectors`` in its code).
SPACES: tuple[str, ...] = ("cross_attention", "output")
#: The record key of the output space's scores, beside those of SCORES.
OUTPUT_SPACE_SCORE = "output_space"
RECORDED_SCORES: tuple[str, ...] = (*SCORES, OUTPUT_SPACE_SCORE)


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices``; else a ValueError naming ``option`` and the choices."""
    if value not in choices:
        raise ValueError(f"unknown {option} {value!r}; choose one of {', '.join(choices)}")
    return value


def check_score(score: str) -> str:
    return check_choice("score", score, SCORES)


#: ``paper``: a token whose text-to-text mass, averaged over blocks, is at least ``threshold`` times
#: the mean over all tokens and blocks (§3.3). ``others``: ... times the mean of the expression's
#: *other* tokens. The paper's mean contains the sink itself, so on an L-token expression a token
#: can never exceed L times it: a pad-free expression of 10 tokens or fewer never reaches 10x. The
#: paper's own sequences are long; ``others`` keeps its intent (a sink dwarfs the rest) at any length.
GAS_RULES: tuple[str, ...] = ("paper", "others")


#: The pooled CLIP vector in the expression branch's modulation (FLUX). ``zero``: ConceptAttention's
#: concept stream is modulated from a zero pooled vector (``embed_concepts``: ``vec =
#: torch.zeros_like(vec)``), which the paper follows (§3.2); ``caption``: the caption's, as the image
#: stream has it.
BRANCH_POOLED: tuple[str, ...] = ("zero", "caption")


#: Where direction words put the spatial prior. ``hybridgl``: HybridGL's rule, whose preprocessing
#: the paper uses ("We use the same preprocessing strategy as HybridGL ... to extract noun phrases
#: (NP) and spatial bias (SB)", §4): the direction word whose syntactic head comes first, horizontal
#: masks only (left / right ramps, a middle triangle; a winning vertical word leaves no prior).
#: ``absolute``: keywords on both axes, "top left" a product of two ramps (Appendix C's absolute terms).
SPATIAL_RULES: tuple[str, ...] = ("hybridgl", "absolute")


#: How the head noun phrase narrows an expression. ``mask``: only the noun phrase's tokens of the
#: full expression feed the heatmap — the paper defines its NP component as "filtering of
#: everything but noun phrase" (Table 4). ``encode``: the noun phrase is encoded as its own text
#: (with the magnets) and its maps stand for the expression, as HybridGL encodes it separately
#: (Appendix C: "The noun phrases are then encoded with the text encoder").
NP_MODES: tuple[str, ...] = ("mask", "encode")


#: Where the segmenter's positive point(s) go on the heatmap (:mod:`refam.prompts`). ``argmax``: the
#: centre of the grid's best patch, the paper's ("identify the argmax location, and apply SAM",
#: Fig. 2). ``upsampled_argmax``: the best pixel of the bilinearly upsampled heatmap. ``interior``: the deepest point (distance to
#: the edge) of the target region, the connected high part of the heatmap holding its maximum — on a
#: coarse grid the maximum often sits on the object's edge, where a click selects the background.
#: ``centroid``: the target region's centroid when it lies well inside the region (in its core, at
#: least half as deep as the deepest point), else ``interior``.
#: ``spread``: ``points`` positive points inside the region, the interior point first.
#: DEFAULT_POINT_STRATEGY is the one place the default lives (options, command line, nodes).
POINT_STRATEGIES: tuple[str, ...] = ("argmax", "upsampled_argmax", "interior", "centroid", "spread")
# Not the paper's argmax ("identify the argmax location", Fig. 2): on 300 validation scenes per kind
# (`refam bench toy --prompts`, VALIDATION_SEED) the argmax misses unique-colour targets by less than
# a patch 4-9 % of the time and loses 3 points of PA off the native size (90.0 -> 87.0); ``interior``
# keeps 94.7 / 94.3 / 94.0 at 48x48 / 72x100 / 130x90, lifts relational PA 21 -> 28 and is at most
# 2 points lower on any kind (the model card's table). The paper's prompt stays one option away
# (``--preset paper``, ``point_strategy="argmax"``).
DEFAULT_POINT_STRATEGY = "interior"


#: Which of the segmenter's multimask candidates is the mask (:mod:`refam.mask_choice`).
#: ``sam_score``: the one the segmenter rates best (its predicted IoU), SAM's own pick, which the
#: paper keeps (it says only that SAM turns the point into the mask, Fig. 2);
#: ``agreement``: the one that overlaps the heatmap's target region best.
MASK_CHOICES: tuple[str, ...] = ("sam_score", "agreement")
DEFAULT_MASK_CHOICE = MASK_CHOICES[0]


#: Which diffusion features the maps come from (:mod:`refam.features`). ``single``: one noised
#: pass at σ, the paper's main setting ("we extract diffusion features without applying
#: inversion", App. A.1), or one pass per σ of ``sigmas``, maps averaged. ``inversion``: the clean
#: latent is inverted with RF-inversion and denoised again, the expression branch riding the
#: denoising steps (App. A.1, Table 7's "REFAM + Inversion"). FLUX only: the paper's video numbers
#: (Table 3) come from one Mochi pass; inversion appears for video only in Fig. 10's qualitative maps.
FEATURE_MODES: tuple[str, ...] = ("single", "inversion")

#: How maps of several passes (σ values, denoising steps) become one. ``maps``: each pass's
#: per-block attention maps (the softmax over the expression's tokens) are averaged, as blocks are
#: averaged within a pass — the paper's "avg. attention map" of the inversion features (Fig. 10).
#: ``scores``: the scores are averaged before the one softmax, as ConceptAttention reduces its
#: timesteps and layers with a mean before its softmax over concepts.
STEP_AGGREGATIONS: tuple[str, ...] = ("maps", "scores")


#: Which attention magnets are appended (Table 5; :mod:`refam.expression.magnets`). ``default``:
#: the configured magnets, the paper's four stop words and "pink" ("stop words + color");
#: ``stop_words``: their stop words only; ``random_stop_words``: the stop words drawn with a seed
#: from the paper's list; ``random_vectors``: random input embeddings in their place;
#: ``none``: no magnets.
MAGNET_VARIANTS: tuple[str, ...] = ("default", "stop_words", "random_stop_words", "random_vectors", "none")
