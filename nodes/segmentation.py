"""Segmenter loaders, point-prompted segmentation and the all-in-one node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from refam.architectures.flux import FLUX_IMAGE
from refam.mask_choice import choose_mask
from refam.points import point_dict
from refam.variants import DEFAULT_MASK_CHOICE, MASK_CHOICES, check_choice
from refam.visualize import draw_points, mask_overlay

from . import payloads as P
from .image_chain import (
    CAPTURE_INPUTS,
    EXPRESSION_INPUTS,
    MAX_SEED,
    image_batch,
    split_lines,
    to_comfy_image,
)
from .spec import Param, Result

DEVICES = ("auto", "gpu", "cpu")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class LoadedSegmenter:
    """A segmenter and where it should run: ``auto`` keeps it on the CPU between runs.

    For SAM2 checkpoints the video tracker (same weights, sam2's video predictor) is built from
    ``path`` the first time a Propagate node asks for it, then kept with the segmenter.
    """

    segmenter: Any
    placement: str
    path: str = ""
    family: str = ""
    _tracker: Any = None

    @contextmanager
    def running(self) -> Iterator[Any]:
        with _placed(self.segmenter, self.placement):
            yield self.segmenter

    @contextmanager
    def tracking(self) -> Iterator[Any]:
        from refam.backends.comfy_runtime import offload_device, torch_device
        from refam.segment import load_sam2_video

        if self.family != "sam2":
            raise ValueError(f"video propagation needs a SAM2 checkpoint (RefAM Load SAM2); got {self.segmenter.name}")
        if self._tracker is None:
            home = torch.device("cpu") if self.placement == "cpu" else (
                torch_device() if self.placement == "gpu" else offload_device()
            )
            self._tracker = load_sam2_video(self.path, device=home, dtype=self.segmenter.dtype)
        with _placed(self._tracker, self.placement):
            yield self._tracker


@contextmanager
def _placed(module: Any, placement: str) -> Iterator[None]:
    """On the compute device for the block; back to the offload device after it in ``auto``."""
    from refam.backends.comfy_runtime import offload_device, torch_device

    if placement == "cpu":
        yield
        return
    module.to(torch_device())
    try:
        yield
    finally:
        if placement == "auto":
            module.to(offload_device())
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


# Where each family's checkpoints are looked for: SAM2 files also in models/sams, where other
# packs keep them.
FAMILY_FOLDERS = {"sam": ("sams",), "sam2": ("sam2", "sams")}


def _checkpoints(family: str):
    def names() -> list[str]:
        from refam.backends.comfy_runtime import list_checkpoints

        return list_checkpoints(FAMILY_FOLDERS[family], family)

    return names


def _load(checkpoint: str, family: str, device: str, dtype: str) -> tuple:
    from refam.backends.comfy_runtime import checkpoint_path, offload_device, torch_device
    from refam.segment import load_segmenter

    folders = FAMILY_FOLDERS[family]
    if not checkpoint:
        checkpoint_path("(none selected)", *folders)  # raises, listing the folders searched
    path = checkpoint_path(checkpoint, *folders)
    home = torch.device("cpu") if device == "cpu" else (torch_device() if device == "gpu" else offload_device())
    compute = torch.device("cpu") if device == "cpu" else torch_device()
    chosen = dtype if dtype != "auto" else ("bfloat16" if compute.type == "cuda" else "float32")
    segmenter = load_segmenter(path, family=family, device=home, dtype=chosen)
    return (LoadedSegmenter(segmenter, device, path=path, family=family),)


def load_sam(checkpoint: str, device: str, dtype: str) -> tuple:
    return _load(checkpoint, "sam", device, dtype)


def load_sam2(checkpoint: str, device: str, dtype: str) -> tuple:
    return _load(checkpoint, "sam2", device, dtype)


def _masks(segmenter: LoadedSegmenter, batch: np.ndarray, points: P.Points, mask_choice: str):
    from refam.backends.comfy_runtime import throw_if_interrupted

    n_expr = len(points.texts)
    if mask_choice != "sam_score" and points.prompts is None:
        raise ValueError(f"mask_choice {mask_choice!r} needs the heatmap regions: connect RefAM Point's points output")
    masks, overlays = [], []
    with segmenter.running() as seg:
        for b in range(batch.shape[0]):
            throw_if_interrupted()
            seg.set_image(batch[b])
            for e in range(n_expr):
                i = b * n_expr + e
                entry, labels = points.points[i], points.labels(i)
                prediction = seg.predict([(p.x, p.y) for p in entry], labels, box=points.box(i))
                mask = (
                    prediction.mask
                    if points.prompts is None
                    else choose_mask(prediction, points.prompts[i].regions, mask_choice).mask
                )
                masks.append(torch.from_numpy(np.asarray(mask, dtype=np.float32)))
                shown = [(p.x, p.y) for p, label in zip(entry, labels, strict=True) if label == 1]
                overlays.append(draw_points(mask_overlay(batch[b], mask), shown))
        seg.reset_image()
    return torch.stack(masks), to_comfy_image(overlays)


def segment(segmenter: LoadedSegmenter, image, points: P.Points, mask_choice: str = DEFAULT_MASK_CHOICE) -> tuple:
    batch = image_batch(image)
    if batch.shape[0] != points.n_images or tuple(batch.shape[1:3]) != tuple(points.image_size):
        raise ValueError(
            f"image batch is {batch.shape[0]} x {batch.shape[1]}x{batch.shape[2]} but the points were found on "
            f"{points.n_images} x {points.image_size[0]}x{points.image_size[1]}: connect the same IMAGE"
        )
    check_choice("mask_choice", mask_choice, MASK_CHOICES)
    return _masks(segmenter, batch, points, mask_choice)


def segment_all_in_one(
    model,
    clip,
    vae,
    segmenter: LoadedSegmenter,
    image,
    expressions: str,
    caption: str,
    magnets: str,
    noun_phrase: bool,
    spatial_bias: bool,
    sigma: float,
    seed: int,
    guidance: float,
    resolution: int,
) -> tuple:
    from refam.backends.comfy_flux import ComfyFlux, joint_block_count
    from refam.backends.comfy_runtime import block_progress
    from refam.options import RefAMOptions
    from refam.pipeline import RefAMPipeline, normalize_expressions

    from .image_chain import parse_magnets

    texts = normalize_expressions(split_lines(expressions) or [""])
    batch = image_batch(image)
    backend = ComfyFlux(model, clip, vae, progress=block_progress(joint_block_count(model)))
    options = RefAMOptions(magnets=parse_magnets(magnets)).replace(
        sigma=sigma,
        seed=seed,
        guidance=guidance,
        resolution=resolution or None,
        noun_phrase=noun_phrase,
        spatial_bias=spatial_bias,
    )
    with segmenter.running() as seg:
        results = RefAMPipeline(backend, seg, options).segment_batch(batch, texts, caption)
    entries = [r for per_image in results for r in per_image]
    masks = torch.stack([torch.from_numpy(r.mask.astype(np.float32)) for r in entries])
    heat = torch.stack([torch.from_numpy(r.heatmap) for r in entries])
    points = [
        {**point_dict(p), "image": r.image_index, "expression": i % len(texts)}
        for i, r in enumerate(entries)
        for p in r.positives()
    ]
    return masks, heat, json.dumps(points)


# -- declarations ----------------------------------------------------------------------------------
def loader_inputs(family: str) -> tuple[Param, ...]:
    folders, what = FAMILY_FOLDERS[family], family.upper()
    return (
        Param(
            "checkpoint",
            "COMBO",
            f"{what} checkpoint from {' / '.join('models/' + f for f in folders)} (extra_model_paths.yaml honoured); "
            ".pt, .pth or .safetensors. The family and size are read off the weights.",
            options=_checkpoints(family),
        ),
        Param("device", "COMBO", "auto: GPU while segmenting, CPU in between (low VRAM friendly); gpu: stay on the GPU; cpu.", default="auto", options=DEVICES),
        Param("dtype", "COMBO", "auto: bfloat16 on GPU, float32 on CPU.", default="auto", options=DTYPES),
    )


SEGMENTER_OUTPUTS = (Result("segmenter", P.SEGMENTER, "A point-prompted segmenter for RefAM Segment."),)
SEGMENT_INPUTS = (
    Param("segmenter", P.SEGMENTER, "RefAM Load SAM / Load SAM2."),
    Param("image", "IMAGE", "The same image batch the points were found on."),
    Param("points", P.POINTS, "Points from RefAM Point."),
    Param(
        "mask_choice", "COMBO",
        "Which of the segmenter's candidate masks: sam_score (the paper's: its own best) or agreement "
        "(the best IoU with the heatmap's target region).",
        default=DEFAULT_MASK_CHOICE, options=MASK_CHOICES,
    ),
)
SEGMENT_OUTPUTS = (
    Result("mask", "MASK", f"One mask per (image, expression) at the image's size. {P.BATCH_ORDER}."),
    Result("preview", "IMAGE", "Masks and points over the image."),
)
_caption = Param(
    "caption", "STRING", "Optional caption of the whole image; empty = the empty prompt.", default="", multiline=True
)
_by_name = {p.name: p for p in (*EXPRESSION_INPUTS, *CAPTURE_INPUTS)}
ALL_IN_ONE_INPUTS = (
    _by_name["model"],
    EXPRESSION_INPUTS[0],
    _by_name["vae"],
    Param("segmenter", P.SEGMENTER, "RefAM Load SAM / Load SAM2."),
    _by_name["image"],
    _by_name["expressions"],
    _caption,
    _by_name["magnets"],
    Param("noun_phrase", "BOOLEAN", "Keep only the head noun phrase's tokens (spaCy).", default=True),
    Param("spatial_bias", "BOOLEAN", "Positional prior from direction words.", default=True),
    _by_name["sigma"],
    Param("seed", "INT", "Seed of the noise.", default=0, min=0, max=MAX_SEED),
    Param("guidance", "FLOAT", "FLUX distilled guidance.", default=FLUX_IMAGE.guidance, min=0.0, max=100.0, step=0.1),
    _by_name["resolution"],
)
ALL_IN_ONE_OUTPUTS = (
    Result("mask", "MASK", f"One mask per (image, expression). {P.BATCH_ORDER}."),
    Result("heatmap", "MASK", "The RefAM heatmaps at the image's size, same order."),
    Result("points_json", "STRING", 'Points as JSON [{"x":..,"y":..}] (kijai-compatible).'),
)
