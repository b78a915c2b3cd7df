"""FLUX-on-a-frame video segmentation with the trained toy model and a random SAM2 tracker."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from refam.attention import ImageGeometry
from refam.points import Point
from refam.segment import SAM2_VIDEO_MODEL_OVERRIDES, build_sam2_module
from refam.segment.sam2_video import ArrayFrames
from refam.toy import scenes
from refam.video import FrameFinding, candidate_frames, frame_evidence, prompt_and_track, segment_video

H, W, T = 96, 96, 8  # square, as the toy model was trained


@pytest.fixture(scope="module")
def toy_pipe():
    from refam.options import RefAMOptions
    from refam.pipeline import RefAMPipeline
    from refam.toy.model import load_toy, weights_for

    backend = load_toy(weights_for("v1"))  # renders v1 scenes
    return RefAMPipeline(backend, None, RefAMOptions(sigma=backend.default_sigma))


@pytest.fixture(scope="module")
def tracker():
    torch.manual_seed(0)
    return build_sam2_module("sam2.1_hiera_t", image_size=256, model_overrides=SAM2_VIDEO_MODEL_OVERRIDES)


def _clip():
    """A big red circle drifting right past a still blue square (toy world, exact masks)."""
    frames, targets = [], []
    for t in range(T):
        red = scenes.ToyObject("circle", "red", "big", 0.22 + 0.05 * t, 0.35, 0.16)
        blue = scenes.ToyObject("square", "blue", "big", 0.75, 0.72, 0.14)
        scene = scenes.Scene((red, blue))
        frames.append(scenes.render(scene, H, W))
        targets.append(scenes.masks(scene, H, W)[0])
    return np.stack(frames), np.stack(targets)


def test_candidates_and_evidence():
    assert candidate_frames(10, "first", 8) == [0]
    assert candidate_frames(10, 7, 8) == [7]
    assert candidate_frames(10, "best", 4) == [0, 3, 6, 9]
    assert candidate_frames(3, "best", 8) == [0, 1, 2]
    with pytest.raises(ValueError, match="outside the clip of 10"):
        candidate_frames(10, 10, 8)
    peaked = np.zeros((8, 8))
    peaked[3, 4] = 1.0
    assert frame_evidence(peaked) > frame_evidence(np.random.default_rng(0).random((8, 8))) > 0
    assert frame_evidence(np.ones((8, 8))) == 0.0


@pytest.mark.parametrize("prompt_frame", ["first", "best"])
def test_prompt_point_on_the_named_object_and_masks_for_every_frame(toy_pipe, tracker, prompt_frame):
    frames, targets = _clip()
    (result,) = segment_video(
        toy_pipe, tracker, ArrayFrames(frames), "the red circle", prompt_frame=prompt_frame, candidates=4
    )
    assert result.masks.shape == (T, H, W) and result.masks.dtype == bool
    f = result.prompt_frame
    (x, y), = result.prompts[0].points
    assert targets[f][int(y), int(x)], f"point ({x:.0f}, {y:.0f}) on frame {f} misses the red circle"
    if prompt_frame == "first":
        assert f == 0 and list(result.evidence) == [0]
    else:
        assert sorted(result.evidence) == [0, 2, 5, 7] and result.evidence[f] == max(result.evidence.values())


def test_points_from_several_frames(toy_pipe, tracker):
    frames, targets = _clip()
    (result,) = segment_video(
        toy_pipe, tracker, ArrayFrames(frames), "the red circle", prompt_frame="best", candidates=4, points_from=2
    )
    assert len(result.prompts) == 2 and len({p.frame for p in result.prompts}) == 2


def test_found_points_alone_prompt_and_track(tracker):
    """What the Propagate node hands over (points and evidence per frame, no heatmap): the most
    evident frame prompts, the masks cover the clip."""
    frames, targets = _clip()
    ys, xs = np.nonzero(targets[5])
    on_circle = Point(float(xs.mean()), float(ys.mean()), 1.0, 0, 0)
    findings = {0: FrameFinding(0.2, [on_circle]), 5: FrameFinding(0.9, [on_circle], labels=[1])}
    result = prompt_and_track(tracker, ArrayFrames(frames), "the red circle", findings)
    assert result.prompt_frame == 5 and [p.frame for p in result.prompts] == [5] and result.heatmap is None
    assert result.evidence == {0: 0.2, 5: 0.9} and result.masks.shape == (T, H, W) and result.masks.dtype == bool
    with pytest.raises(ValueError, match="no candidate frame"):
        prompt_and_track(tracker, ArrayFrames(frames), "the red circle", {})


def test_points_never_leave_the_frame():
    """Patch centres map inside the original frame for any size and grid (no clamping needed)."""
    rng = np.random.default_rng(1)
    for _ in range(500):
        h, w = (int(v) for v in rng.integers(1, 3000, size=2))
        gh, gw = (int(v) for v in rng.integers(1, 200, size=2))
        geo = ImageGeometry((h, w), (gh * 16, gw * 16), (gh, gw))
        for row, col in ((0, 0), (gh - 1, gw - 1), (0, gw - 1), (gh - 1, 0)):
            x, y = geo.patch_centre(row, col)
            assert 0 <= x < w and 0 <= y < h


def test_cli_segment_video_writes_davis_layout(tmp_path, tracker):
    from safetensors.torch import save_file

    from refam.cli import main

    frames, _ = _clip()
    folder = tmp_path / "clip"
    folder.mkdir()
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    ckpt = tmp_path / "sam2.1_hiera_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tracker.state_dict().items()}, str(ckpt))
    out = tmp_path / "out"
    rc = main(
        [
            "segment-video",
            str(folder),
            "the red circle",
            "--segmenter",
            str(ckpt),
            "--sam2-image-size",
            "256",
            "--prompt-frame",
            "best",
            "--candidates",
            "3",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    pngs = sorted((out / "00_the-red-circle").glob("*.png"))
    assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(T)]
    first = Image.open(pngs[0])
    assert first.mode == "P" and first.size == (W, H) and set(np.unique(np.asarray(first))) <= {0, 1}
    assert (out / "00_the-red-circle_overlay.gif").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == T and summary["results"][0]["prompt_frame"] in (0, 4, 7)


def test_cli_video_needs_sam2(tmp_path):
    from refam.cli import main

    assert main(["segment-video", str(tmp_path), "a dog", "--quiet"]) == 2
