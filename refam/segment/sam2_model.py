"""Building SAM2 / SAM2.1 ``nn.Module``s from the sam2 package's configs, for image or video use.

The configs are read with OmegaConf and instantiated with ``hydra.utils.instantiate`` rather than
``sam2.build_sam.build_sam2``, whose ``hydra.compose`` needs the global Hydra instance that
``import sam2`` initialises: inside ComfyUI another node pack may already own that instance,
and building twice in one process must not depend on it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from refam.install_hints import missing_package
from refam.segment.base import resolve_dtype
from refam.segment.detect import SAM2_SIZES, SAM2_VERSIONS, sam2_variant, sam2_version_of
from refam.weights import load_strict

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

__all__ = [
    "SAM2_IMAGE_MODEL_OVERRIDES",
    "SAM2_VARIANTS",
    "SAM2_VIDEO_MODEL_OVERRIDES",
    "build_sam2_module",
    "import_sam2",
    "sam2_config_path",
]

SAM2_VARIANTS = tuple(sam2_variant(s, v) for v in SAM2_VERSIONS for s in SAM2_SIZES)

# What sam2.build_sam.build_sam2(apply_postprocessing=True) adds: with one mask asked for, fall
# back to the best of the multimask outputs when the single-mask output is unstable.
SAM2_IMAGE_MODEL_OVERRIDES: dict[str, Any] = {
    "sam_mask_decoder_extra_args": {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    }
}
# What build_sam2_video_predictor(apply_postprocessing=True) adds on top, for the video predictor.
SAM2_VIDEO_MODEL_OVERRIDES: dict[str, Any] = {
    "_target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
    "binarize_mask_from_pts_for_mem_enc": True,
    "fill_hole_area": 8,
}


def import_sam2() -> Any:
    try:
        import sam2
        import sam2.modeling.sam2_base  # noqa: F401  (fails early if torch/hydra pieces are missing)
    except ImportError as exc:
        message = missing_package("SAM2", "sam2 hydra-core iopath", "sam2", cuda_note=True)
        raise ImportError(f"{message} ({exc})") from exc
    return sam2


def sam2_config_path(variant: str) -> Path:
    """The sam2 package's YAML for a variant such as ``"sam2.1_hiera_t"``."""
    if variant not in SAM2_VARIANTS:
        raise ValueError(f"unknown SAM2 variant {variant!r}; expected one of {', '.join(SAM2_VARIANTS)}")
    sam2 = import_sam2()
    folder = "sam2.1" if sam2_version_of(variant) == "2.1" else "sam2"
    path = Path(sam2.__file__).resolve().parent / "configs" / folder / f"{variant}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"the installed sam2 package has no config {path}; is it older than SAM 2.1?")
    return path


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_sam2_module(
    variant_or_config: str | Path,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    *,
    image_size: int | None = None,
    model_overrides: Mapping[str, Any] | None = None,
    postprocessing: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
) -> SAM2Base:
    """A SAM2 model (``SAM2Base``, or what ``model_overrides["_target_"]`` names), loaded
    strictly from ``state_dict`` if given, in eval mode.

    ``variant_or_config``: ``"sam2.1_hiera_l"``-style name or a path to a sam2 model YAML.
    ``image_size``: input resolution (config: 1024). Smaller sizes keep CPU tests and low-memory
    runs cheap; the weights do not depend on it, so released checkpoints load at any multiple
    of 32, with quality dropping far below 1024.
    ``model_overrides``: merged into the config's ``model`` node after the image-predictor
    post-processing (``postprocessing=True``), e.g. :data:`SAM2_VIDEO_MODEL_OVERRIDES` for the
    video predictor. ``dtype`` is float32 on CPU (see :func:`refam.segment.base.resolve_dtype`).
    """
    import_sam2()
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = Path(variant_or_config)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = sam2_config_path(str(variant_or_config))
    cfg = OmegaConf.load(path)
    if "model" not in cfg:
        raise ValueError(f"{path} is not a sam2 model config (no 'model' node)")
    overrides: dict[str, Any] = copy.deepcopy(SAM2_IMAGE_MODEL_OVERRIDES) if postprocessing else {}
    if image_size is not None:
        if image_size % 32 or image_size < 64:
            raise ValueError(f"SAM2 image_size must be a multiple of 32 and >= 64, got {image_size}")
        overrides["image_size"] = int(image_size)
    overrides = _merge(overrides, model_overrides or {})
    cfg = OmegaConf.merge(cfg, {"model": overrides})
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    if state_dict is not None:
        load_strict(model, state_dict, f"SAM2 config {path.name}")
    return model.eval().to(device=torch.device(device), dtype=resolve_dtype(dtype, device))
