"""Point prompts -> masks with SAM or SAM2 behind one :class:`Segmenter` interface.

Importing this package imports neither ``segment_anything`` nor ``sam2``/``hydra``: each wrapper
imports its library when a model is built or wrapped, with an ``ImportError`` naming the pip
package when it is missing.

    seg = load_segmenter("sam2.1_hiera_large.pt", search_dirs=["models/sam2"], device="cuda")
    pred = seg.segment(image, [(x, y)])      # pred.mask: [H, W] bool at the image's resolution
"""

from refam.segment.base import MaskPrediction, Segmenter, check_box, check_points, resolve_dtype, to_rgb_uint8
from refam.segment.checkpoints import find_checkpoint, load_sam2_video, load_segmenter
from refam.segment.detect import ModelSpec, identify_model, parse_filename, parse_variant, shapes_of
from refam.segment.sam import SamSegmenter, build_sam_module
from refam.segment.sam2_image import Sam2Segmenter
from refam.segment.sam2_model import (
    SAM2_IMAGE_MODEL_OVERRIDES,
    SAM2_VARIANTS,
    SAM2_VIDEO_MODEL_OVERRIDES,
    build_sam2_module,
    sam2_config_path,
)
from refam.weights import load_state_dict_file, strip_prefixes

__all__ = [
    "SAM2_IMAGE_MODEL_OVERRIDES",
    "SAM2_VARIANTS",
    "SAM2_VIDEO_MODEL_OVERRIDES",
    "MaskPrediction",
    "ModelSpec",
    "Sam2Segmenter",
    "SamSegmenter",
    "Segmenter",
    "build_sam2_module",
    "build_sam_module",
    "check_box",
    "check_points",
    "find_checkpoint",
    "identify_model",
    "load_sam2_video",
    "load_segmenter",
    "load_state_dict_file",
    "parse_filename",
    "parse_variant",
    "resolve_dtype",
    "sam2_config_path",
    "shapes_of",
    "strip_prefixes",
    "to_rgb_uint8",
]
