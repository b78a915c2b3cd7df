"""SAM (Segment Anything, ViT-B / ViT-L / ViT-H) through ``segment_anything.SamPredictor``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from refam.install_hints import missing_package
from refam.segment.base import Segmenter, resolve_dtype
from refam.segment.detect import SAM_VARIANTS, detect_variant, shapes_of
from refam.weights import load_strict

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

__all__ = ["SAM_IMAGE_SIZE", "SamSegmenter", "build_sam_module", "import_segment_anything"]

SAM_IMAGE_SIZE = 1024  # what the released checkpoints were trained at

# variant -> global-attention block indexes (heads follow from the width: 64 channels each)
_GLOBAL_ATTN = {"vit_b": (2, 5, 8, 11), "vit_l": (5, 11, 17, 23), "vit_h": (7, 15, 23, 31)}
_HEADS = {"vit_b": 12, "vit_l": 16, "vit_h": 16}


def import_segment_anything() -> Any:
    try:
        import segment_anything
    except ImportError as exc:
        raise ImportError(missing_package("SAM", "segment-anything", "sam")) from exc
    return segment_anything


def build_sam_module(
    variant: str,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    *,
    image_size: int = SAM_IMAGE_SIZE,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
) -> Sam:
    """A ``segment_anything`` ``Sam`` module, loaded strictly from ``state_dict`` if given.

    The architecture is the one of ``segment_anything.sam_model_registry[variant]``;
    ``image_size`` other than 1024 only suits weights made at that size (the encoder's absolute
    position embedding and global relative positions are sized by it): a small random model for
    tests. ``dtype`` is float32 on CPU (see :func:`refam.segment.base.resolve_dtype`).
    """
    import_segment_anything()
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if variant not in SAM_VARIANTS:
        raise ValueError(f"unknown SAM variant {variant!r}; expected one of {', '.join(SAM_VARIANTS)}")
    if image_size % 16 or image_size < 64:
        raise ValueError(f"SAM image_size must be a multiple of 16 and >= 64, got {image_size}")
    embed_dim, depth = SAM_VARIANTS[variant]
    prompt_dim, patch = 256, 16
    grid = image_size // patch
    model = Sam(
        image_encoder=ImageEncoderViT(
            depth=depth,
            embed_dim=embed_dim,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=_HEADS[variant],
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=_GLOBAL_ATTN[variant],
            window_size=14,
            out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    if state_dict is not None:
        load_strict(model, state_dict, f"SAM {variant} (image size {image_size})")
    return model.eval().to(device=torch.device(device), dtype=resolve_dtype(dtype, device))


class SamSegmenter(Segmenter):
    """SAM through ``SamPredictor``; build with :meth:`from_model` or
    :func:`refam.segment.load_segmenter`."""

    family = "sam"

    def __init__(self, model: Sam, name: str | None = None, dtype: torch.dtype | str = torch.float32) -> None:
        import_segment_anything()
        from segment_anything import SamPredictor

        if name is None:
            variant, _ = detect_variant(shapes_of(model.state_dict()), "sam")
            name = f"sam_{variant}" if variant else "sam"
        super().__init__(name=name, dtype=resolve_dtype(dtype, next(model.parameters()).device))
        self._predictor = SamPredictor(model.eval())

    @classmethod
    def from_model(
        cls, model: Sam, name: str | None = None, dtype: torch.dtype | str = torch.float32
    ) -> SamSegmenter:
        """Wrap an in-memory ``Sam`` (e.g. ``sam_model_registry["vit_b"](checkpoint=None)``).

        The name (``"sam_vit_b"``...) is read off the weights' shapes unless given; ``dtype`` is
        the autocast dtype on CUDA (the weights are not converted).
        """
        return cls(model, name=name, dtype=dtype)

    @property
    def module(self) -> Sam:
        return self._predictor.model

    @property
    def image_size(self) -> int:
        """The model's square input size (images are resized to it, long side first)."""
        return int(self._predictor.model.image_encoder.img_size)

    def _encode(self, image: np.ndarray) -> None:
        self._predictor.set_image(image, image_format="RGB")

    def _decode(
        self, points: np.ndarray, labels: np.ndarray, multimask: bool, box: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        # predict_torch rather than predict: SamPredictor.predict calls .numpy() on the scores,
        # which fails for the bf16 tensors autocast produces.
        predictor = self._predictor
        coords = predictor.transform.apply_coords(points, predictor.original_size)
        device = predictor.device
        boxes = None
        if box is not None:
            boxes = predictor.transform.apply_boxes_torch(
                torch.as_tensor(box, dtype=torch.float32, device=device)[None], predictor.original_size
            )
        masks, scores, _ = predictor.predict_torch(
            torch.as_tensor(coords, dtype=torch.float32, device=device)[None],
            torch.as_tensor(labels, dtype=torch.int32, device=device)[None],
            boxes=boxes,
            multimask_output=multimask,
        )
        return masks[0].cpu().numpy(), scores[0].float().cpu().numpy()

    def _forget_image(self) -> None:
        self._predictor.reset_image()
