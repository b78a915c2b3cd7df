"""SAM2 / SAM2.1 (Hiera tiny, small, base+, large) through ``sam2.SAM2ImagePredictor``."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch

from refam.segment.base import Segmenter, resolve_dtype
from refam.segment.detect import detect_variant, shapes_of
from refam.segment.sam2_model import import_sam2

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

__all__ = ["Sam2Segmenter"]


class Sam2Segmenter(Segmenter):
    """SAM2 through ``SAM2ImagePredictor``; build with :meth:`from_model` or
    :func:`refam.segment.load_segmenter`."""

    family = "sam2"

    def __init__(
        self, model: SAM2Base, name: str | None = None, dtype: torch.dtype | str = torch.float32
    ) -> None:
        import_sam2()
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        if name is None:
            variant, _ = detect_variant(shapes_of(model.state_dict()), "sam2")
            name = variant or "sam2"
        super().__init__(name=name, dtype=resolve_dtype(dtype, next(model.parameters()).device))
        with warnings.catch_warnings():
            # sam2 1.1.0 scripts its image transforms with torch.jit.script, which recent torch
            # deprecates with a FutureWarning on every predictor: nothing a user can act on.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
            self._predictor = SAM2ImagePredictor(model.eval())
        size = int(model.image_size)
        # SAM2ImagePredictor hardcodes the backbone feature sizes of a 1024 input; they are the
        # image size over the strides of the three levels the mask decoder reads.
        self._predictor._bb_feat_sizes = [
            (size // 4, size // 4),
            (size // 8, size // 8),
            (size // 16, size // 16),
        ]

    @classmethod
    def from_model(
        cls, model: SAM2Base, name: str | None = None, dtype: torch.dtype | str = torch.float32
    ) -> Sam2Segmenter:
        """Wrap an in-memory SAM2 model (e.g. from ``sam2.build_sam.build_sam2`` or
        :func:`refam.segment.build_sam2_module`).

        The name (``"sam2.1_hiera_t"``...) is read off the weights' shapes unless given;
        ``dtype`` is the autocast dtype on CUDA (the weights are not converted).
        """
        return cls(model, name=name, dtype=dtype)

    @property
    def module(self) -> SAM2Base:
        return self._predictor.model

    @property
    def image_size(self) -> int:
        """The model's square input size (images are stretched to it)."""
        return int(self._predictor.model.image_size)

    def _encode(self, image: np.ndarray) -> None:
        # sam2's transform copies the array into a tensor anyway; a read-only one (a decoded file is
        # not copied on the way in) would make torch warn on every call.
        self._predictor.set_image(image if image.flags.writeable else np.array(image))

    def _decode(
        self, points: np.ndarray, labels: np.ndarray, multimask: bool, box: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        masks, scores, _ = self._predictor.predict(
            point_coords=points, point_labels=labels, box=box, multimask_output=multimask
        )
        return masks, scores

    def _forget_image(self) -> None:
        self._predictor.reset_predictor()
