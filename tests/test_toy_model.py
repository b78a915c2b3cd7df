"""The trained toy model through the real pipeline: it must find the object that was named."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT
from refam.pipeline import RefAMOptions, RefAMPipeline
from refam.toy import scenes
from refam.toy.evaluate import evaluate
from refam.toy.model import DEFAULT_WEIGHTS, load_toy
from refam.toy.segmenter import FloodFillSegmenter

# Target (issue: unique-colour point accuracy >= 85 %) minus the margin a 100-expression sample
# needs: the binomial standard error at p = 0.85 is 3.6 points, so 5 points is ~1.4 sigma.
UNIQUE_COLOUR_TARGET, MARGIN = 0.85, 0.05


@pytest.fixture(scope="module")
def toy_pipe():
    backend = load_toy()
    return RefAMPipeline(
        backend,
        FloodFillSegmenter(),
        RefAMOptions(resolution=backend.transformer_resolution, sigma=backend.default_sigma),
    )


def test_committed_weights_are_small_and_labelled():
    assert DEFAULT_WEIGHTS.stat().st_size <= 10 * 2**20
    assert "not FLUX" in load_toy().name


def test_unique_colour_point_accuracy_holds(toy_pipe):
    examples = scenes.make_eval_set(scenes.EVAL_SEED, 100, kinds=("colour",))
    res = evaluate(toy_pipe, examples)["colour"]
    assert res["n"] == 100
    assert res["pa"] >= UNIQUE_COLOUR_TARGET - MARGIN, res


def _scene_with(kind, seed, predicate=lambda s, r: True):
    rng = np.random.default_rng(seed)
    for _ in range(500):
        scene, ref = scenes.sample_referral(rng, kind)
        if predicate(scene, ref):
            return scene, ref
    raise AssertionError("no scene found")


def test_flipping_the_scene_moves_the_point(toy_pipe):
    hits = 0
    for seed in range(6):
        scene, ref = _scene_with("colour", 100 + seed)
        a = toy_pipe.segment(scenes.render(scene), ref.text)[0].point
        b = toy_pipe.segment(scenes.render(scenes.flip_lr(scene)), ref.text)[0].point
        hits += abs((48 - a.x) - b.x) <= 4.0 and abs(a.y - b.y) <= 4.0  # one patch
    assert hits >= 5


def test_left_right_spatial_bias_picks_the_matching_object(toy_pipe):
    def two_same_shapes(scene, ref):
        return (
            len(scene.objects) == 2
            and scene.objects[0].shape == scene.objects[1].shape
            and abs(scene.objects[0].cx - scene.objects[1].cx) > 0.3
        )

    correct = 0
    trials = 0
    for seed in range(8):
        scene, _ = _scene_with("spatial", 300 + seed, two_same_shapes)
        shape = scene.objects[0].shape
        left = min(range(2), key=lambda i: scene.objects[i].cx)
        m = scenes.masks(scene)
        image = scenes.render(scene)
        for side, target in (("left", left), ("right", 1 - left)):
            point = toy_pipe.segment(image, f"the {shape} on the {side}")[0].point
            correct += bool(m[target][int(point.y), int(point.x)])
            trials += 1
    assert correct >= trials - 2


def test_cli_on_a_non_square_toy_image_not_a_multiple_of_16(tmp_path):
    """End to end through the CLI with the embedded default (no FLUX given): a 123x77 render,
    resized by the pipeline, gives a mask at 123x77 that overlaps the named object."""
    scene, ref = _scene_with("colour", 7)
    height, width = 77, 123
    Image.fromarray(scenes.render(scene, height, width)).save(tmp_path / "scene.png")
    env = {"PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "refam.cli", "segment", str(tmp_path / "scene.png"), ref.text, "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "TOY model" in proc.stderr and "--model" in proc.stderr  # labelled, and says where weights go
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    mask = np.asarray(Image.open(tmp_path / "o" / summary["results"][0]["mask"])) > 0
    target = scenes.masks(scene, height, width)[ref.target]
    assert mask.shape == (height, width)
    assert (mask & target).sum() > 0.5 * target.sum()
