"""SAM2 video propagation (random hiera-tiny at 256 px) on the real clips and synthetic ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from refam.metrics import jf_scores
from refam.segment import SAM2_VIDEO_MODEL_OVERRIDES, build_sam2_module
from refam.segment.sam2_video import (
    ArrayFrames,
    FolderFrames,
    VideoPrompt,
    memory_window,
    propagate,
    propagate_all,
)

SMALL = 256


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return build_sam2_module("sam2.1_hiera_t", image_size=SMALL, model_overrides=SAM2_VIDEO_MODEL_OVERRIDES)


def _moving_square(n: int, h: int = 72, w: int = 96) -> np.ndarray:
    frames = np.full((n, h, w, 3), 40, dtype=np.uint8)
    for t in range(n):
        x = 5 + (t * 2) % (w - 30)
        frames[t, 20:45, x : x + 25] = (230, 60, 40)
    return frames


def test_judo_forward_and_backward_from_a_middle_frame(predictor):
    clip = shared_path("video_clips", "judo")
    frames = FolderFrames(clip / "frames")
    assert len(frames) == 16 and frames.size == (480, 854)
    order = []
    done = []
    masks = np.zeros((16, 480, 854), dtype=bool)
    for index, mask, score in propagate(
        predictor,
        frames,
        [VideoPrompt(8, ((400.0, 250.0),))],
        on_frame=lambda d, t: done.append((d, t)),
    ):
        assert mask.shape == (480, 854) and mask.dtype == bool and np.isfinite(score)
        order.append(index)
        masks[index] = mask
    assert order[0] == 8 and sorted(order) == list(range(16))  # every frame once, prompt first
    assert order[1:8] == list(range(9, 16)) and order[8:] == list(range(7, -1, -1))
    assert done[-1] == (16, 16)
    annotated = sorted(int(p.stem) for p in (clip / "masks").glob("*.png"))
    gts = []
    for i in annotated:
        gt = np.asarray(Image.open(clip / "masks" / f"{i:05d}.png")) > 0
        # The shipped 00005.png is 853 px wide for 854-px frames: pad the missing column as background.
        padded = np.zeros((480, 854), dtype=bool)
        padded[: gt.shape[0], : gt.shape[1]] = gt
        gts.append(padded)
    scores = jf_scores([masks[i] for i in annotated], gts)
    # Random weights: the numbers mean nothing, the path must run and give valid measures.
    assert 0.0 <= scores["J"] <= 1.0 and 0.0 <= scores["F"] <= 1.0


def test_bounded_memory_gives_sam2s_own_masks(predictor):
    """Dropping tracker outputs SAM2 can no longer read changes no mask (clip longer than the window)."""
    n = memory_window(predictor) + 14
    frames = ArrayFrames(_moving_square(n))
    prompt = [VideoPrompt(3, ((17.0, 32.0),))]
    bounded = propagate_all(predictor, frames, prompt)
    unbounded = propagate_all(predictor, frames, prompt, bounded_memory=False)
    assert np.array_equal(bounded, unbounded)


def test_memory_holds_only_the_window(predictor):
    n = memory_window(predictor) * 2 + 10
    frames = ArrayFrames(_moving_square(n))
    window = memory_window(predictor)
    import refam.segment.sam2_video as video

    kept = []
    original = video._forget_far_frames

    def spy(state, current, prompted, w):
        original(state, current, prompted, w)
        kept.append(len(state["output_dict_per_obj"][0]["non_cond_frame_outputs"]))

    video._forget_far_frames = spy
    try:
        propagate_all(predictor, frames, [VideoPrompt(0, ((17.0, 32.0),))], backward=False)
    finally:
        video._forget_far_frames = original
    assert max(kept) <= 2 * window + 1  # near the current frame and near the prompt, never the clip


def test_one_frame_clip_and_comfy_image_batch(predictor):
    batch = torch.from_numpy(_moving_square(1)).float() / 255.0  # a ComfyUI IMAGE of one frame
    masks = propagate_all(predictor, ArrayFrames(batch), [VideoPrompt(0, ((17.0, 32.0),))])
    assert masks.shape == (1, 72, 96)


def test_a_box_and_negative_points_reach_the_tracker(predictor, monkeypatch):
    seen = []
    original = predictor.add_new_points_or_box

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(predictor, "add_new_points_or_box", spy)
    prompt = VideoPrompt(0, ((17.0, 32.0), (80.0, 60.0)), (1, 0), box=(5.0, 20.0, 30.0, 45.0))
    masks = propagate_all(predictor, ArrayFrames(_moving_square(2)), [prompt])
    assert masks.shape == (2, 72, 96)
    assert seen[0]["box"].tolist() == [5.0, 20.0, 30.0, 45.0] and seen[0]["labels"].tolist() == [1, 0]


def test_bad_clips_fail_clearly(predictor):
    with pytest.raises(ValueError, match="one size"):
        ArrayFrames([np.zeros((10, 12, 3), np.uint8), np.zeros((12, 10, 3), np.uint8)])
    frames = ArrayFrames(_moving_square(4))
    with pytest.raises(ValueError, match="outside the clip of 4"):
        propagate_all(predictor, frames, [VideoPrompt(4, ((1.0, 1.0),))])
    with pytest.raises(ValueError, match="at least one prompt"):
        propagate_all(predictor, frames, [])


def test_bike_from_first_frame_mask_point(predictor):
    """bike (4 frames, 2 annotated objects on frame 0): a point inside object 1 tracks to every frame."""
    clip = shared_path("video_clips", "bike")
    frames = FolderFrames(clip / "frames")
    first = np.asarray(Image.open(clip / "masks" / "00000.png"))
    ys, xs = np.nonzero(first == 1)
    point = (float(np.median(xs)), float(np.median(ys)))
    masks = propagate_all(predictor, frames, [VideoPrompt(0, (point,))])
    assert masks.shape == (4, 480, 854)
    scores = jf_scores([masks[0]], [first == 1])
    assert 0.0 <= scores["J"] <= 1.0  # random weights: only the path and the measure are checked
