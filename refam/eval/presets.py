"""The method settings an eval run can be named by (``refam eval --preset``): the library's
defaults, the paper's prompt, the ablations of Tables 4-6 and Table 7's inversion row."""

from __future__ import annotations

from typing import Any

__all__ = ["PAPER_PROMPT", "PRESETS"]

# The paper's prompt ("identify the argmax location, and apply SAM", Fig. 2): the argmax point and
# SAM's own best mask, whatever the library's defaults are (refam.variants: DEFAULT_POINT_STRATEGY).
PAPER_PROMPT: dict[str, Any] = {
    "point_strategy": "argmax", "points": 1, "negative_points": 0, "box_prompt": False,
    "mask_choice": "sam_score", "heatmap_mask": False,
}
# ``full``: the library's defaults. ``paper``: Table 2 as published. Tables 4-6 switch attention
# magnets (AM), the noun-phrase filter (NP) and the spatial bias (SB) off, with the paper's prompt,
# so each row compares with ``paper``.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "paper": PAPER_PROMPT,
    "no-am": {**PAPER_PROMPT, "magnets": ()},
    "no-np": {**PAPER_PROMPT, "noun_phrase": False},
    "no-sb": {**PAPER_PROMPT, "spatial_bias": False},
    "no-am-np-sb": {**PAPER_PROMPT, "magnets": (), "noun_phrase": False, "spatial_bias": False},
    "am-only": {**PAPER_PROMPT, "noun_phrase": False, "spatial_bias": False},
    # Table 5: the magnet variants ("none" is no-am; random_* draw with --magnet-seed, the paper
    # averages five seeds).
    "am-stop-words": {**PAPER_PROMPT, "magnet_variant": "stop_words"},
    "am-random-stop-words": {**PAPER_PROMPT, "magnet_variant": "random_stop_words"},
    "am-random-vectors": {**PAPER_PROMPT, "magnet_variant": "random_vectors"},
    # Table 8: the maps in ConceptAttention's attention-output space instead of cross-attention.
    "output-space": {**PAPER_PROMPT, "space": "output"},
    # Table 7: "REFAM + Inversion", the paper's prompt on RF-inversion features (refam.features).
    "inversion": {**PAPER_PROMPT, "features": "inversion"},
}
