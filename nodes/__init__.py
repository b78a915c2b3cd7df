"""ComfyUI-RefAM nodes. ``NODE_SPECS`` declares them; ``extension`` builds the V3 nodes in ComfyUI."""

from __future__ import annotations

from . import image_chain as chain
from . import payloads
from . import segmentation as seg
from . import video_nodes as video
from .spec import CATEGORY, NodeSpec

__all__ = ["CATEGORY", "NODE_SPECS", "payloads"]

NODE_SPECS: tuple[NodeSpec, ...] = (
    NodeSpec(
        "RefAMCaptionConditioning",
        "RefAM Caption Conditioning",
        "Encode an optional caption of the whole image for the denoising pass (empty allowed).",
        chain.CAPTION_INPUTS,
        chain.CAPTION_OUTPUTS,
        chain.caption_conditioning,
    ),
    NodeSpec(
        "RefAMReferringExpression",
        "RefAM Referring Expression",
        "Tokenize referring expressions with token roles, append attention magnets and encode them with the "
        "model's text encoder (FLUX.1, Chroma: T5; FLUX.2 klein, Z-Image: Qwen3; Qwen-Image: Qwen2.5-VL; the "
        "LLMs in their chat templates).",
        chain.EXPRESSION_INPUTS,
        chain.EXPRESSION_OUTPUTS,
        chain.referring_expression,
    ),
    NodeSpec(
        "RefAMCaptureAttentionFlux",
        "RefAM Capture Attention (FLUX)",
        "One pass of the image model (FLUX.1 / Kontext, FLUX.2, Chroma, Qwen-Image, Z-Image) at sigma on the "
        "image (or the passes RefAM Feature Mode asks for); every expression rides along in a separate branch "
        "that reads the model's attention without changing its output. The model found is named in RefAM Token "
        "Maps' report.",
        chain.CAPTURE_INPUTS,
        chain.ATTENTION_OUTPUTS,
        chain.capture_attention,
    ),
    NodeSpec(
        "RefAMFeatureMode",
        "RefAM Feature Mode",
        "Which diffusion features the capture reads: one pass per sigma, or RF-inversion of the image and its "
        "denoising steps (the paper's best variant, Table 7). Plug into RefAM Capture Attention (FLUX).",
        chain.FEATURE_INPUTS,
        chain.FEATURE_OUTPUTS,
        chain.feature_mode,
    ),
    NodeSpec(
        "RefAMFilterTokens",
        "RefAM Filter Tokens",
        "Choose which token maps form the heatmap: stop words, magnets, EOS, global attention sinks, noun phrase.",
        chain.FILTER_INPUTS,
        chain.ATTENTION_OUTPUTS,
        chain.filter_tokens,
    ),
    NodeSpec(
        "RefAMHeatmap",
        "RefAM Heatmap",
        "Average the kept token maps over the selected blocks, with the optional spatial prior.",
        chain.HEATMAP_INPUTS,
        chain.HEATMAP_OUTPUTS,
        chain.heatmap,
        preview="overlay",
    ),
    NodeSpec(
        "RefAMPoint",
        "RefAM Point",
        "Where to prompt the segmenter: the heatmap's argmax (the paper), a point inside its target region, "
        "several points, negative points and a box; also in the format of ComfyUI's SAM3 Detect.",
        chain.POINT_INPUTS,
        chain.POINT_OUTPUTS,
        chain.point,
    ),
    NodeSpec(
        "RefAMLoadSAM",
        "RefAM Load SAM",
        "Load a SAM (ViT-B/L/H) checkpoint from models/sams.",
        seg.loader_inputs("sam"),
        seg.SEGMENTER_OUTPUTS,
        seg.load_sam,
    ),
    NodeSpec(
        "RefAMLoadSAM2",
        "RefAM Load SAM2",
        "Load a SAM2 / SAM2.1 checkpoint from models/sam2 (or models/sams).",
        seg.loader_inputs("sam2"),
        seg.SEGMENTER_OUTPUTS,
        seg.load_sam2,
    ),
    NodeSpec(
        "RefAMSegment",
        "RefAM Segment",
        "Point-prompted masks: the best-scoring of the segmenter's multimask outputs per entry.",
        seg.SEGMENT_INPUTS,
        seg.SEGMENT_OUTPUTS,
        seg.segment,
        preview="preview",
    ),
    NodeSpec(
        "RefAMTokenMaps",
        "RefAM Token Maps",
        "Diagnostics: every token's map with its role, kept or dropped, GAS tokens flagged; the text-to-text "
        "attention per block and the entropy / per-token mass numbers of the paper's Figs. 1, 3 and 4.",
        chain.TOKEN_MAP_INPUTS,
        chain.TOKEN_MAP_OUTPUTS,
        chain.token_maps,
        preview="token_maps",
    ),
    NodeSpec(
        "RefAMCaptureAttentionMochi",
        "RefAM Capture Attention (Mochi)",
        "One Mochi pass on the clip at sigma (paper: 0.01); every expression rides along in a separate branch. "
        "Each latent frame becomes one image of the RefAM chain.",
        video.MOCHI_INPUTS,
        video.MOCHI_OUTPUTS,
        video.capture_attention_mochi,
    ),
    NodeSpec(
        "RefAMPickFrame",
        "RefAM Pick Frame",
        "Choose the clip frames that go through the image chain: the first (paper), one index, or candidates "
        "spread over the clip so the frame where the object is most evident can prompt SAM2.",
        video.PICK_INPUTS,
        video.PICK_OUTPUTS,
        video.pick_frame,
    ),
    NodeSpec(
        "RefAMPropagateSAM2Video",
        "RefAM Propagate (SAM2 video)",
        "SAM2 tracks the object from the RefAM point(s) forward and backward through the clip; memory stays flat "
        "with clip length.",
        video.PROPAGATE_INPUTS,
        video.PROPAGATE_OUTPUTS,
        video.propagate_masks,
        preview="preview",
    ),
    NodeSpec(
        "RefAMSegmentAllInOne",
        "RefAM Segment (all-in-one)",
        "Referring segmentation in one node: FLUX attention, RefAM heatmap, argmax point, SAM/SAM2 mask.",
        seg.ALL_IN_ONE_INPUTS,
        seg.ALL_IN_ONE_OUTPUTS,
        seg.segment_all_in_one,
    ),
)
