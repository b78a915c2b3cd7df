"""`refam segment` end to end: image file -> mask file, on a tiny FLUX folder and a tiny SAM2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT
from refam.cli import main
from tiny_models import save_tiny_flux_folder


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory, t5_tokenizer, clip_tokenizer):
    return save_tiny_flux_folder(tmp_path_factory.mktemp("flux"), t5_tokenizer, clip_tokenizer)


@pytest.fixture(scope="module")
def sam2_ckpt(tmp_path_factory):
    from refam.segment import build_sam2_module

    torch.manual_seed(0)
    model = build_sam2_module("sam2.1_hiera_t", None, image_size=256)
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("REFAM_FLUX_MODEL", None)
    return env


@pytest.mark.slow
def test_segment_writes_masks_overlays_and_summary(tmp_path, two_cats_path, flux_dir, sam2_ckpt):
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "refam.cli", "segment", str(two_cats_path),
        "the cat on the left", "a remote control",
        "--caption", "two cats lying on a pink blanket",
        "--model", str(flux_dir), "--segmenter", str(sam2_ckpt), "--sam2-image-size", "256",
        "--resolution", "128", "--device", "cpu", "--dtype", "fp32", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "loading transformer" in proc.stderr and "capturing attention" in proc.stderr  # progress display
    summary = json.loads((out / "summary.json").read_text())
    assert summary["image_size"] == [480, 640] and len(summary["results"]) == 2
    for rec in summary["results"]:
        mask = np.asarray(Image.open(out / rec["mask"]))
        assert mask.shape == (480, 640) and set(np.unique(mask)) <= {0, 255}
        assert rec["mask_area"] == int((mask == 255).sum())
        assert 0 <= rec["point"]["x"] < 640 and 0 <= rec["point"]["y"] < 480
        overlay = np.asarray(Image.open(out / rec["heatmap_overlay"]))
        assert overlay.shape == (480, 640, 3)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["expression"] for r in lines] == ["the cat on the left", "a remote control"]


def test_empty_expression_fails_before_loading_anything(tmp_path, two_cats_path, capsys):
    assert main(["segment", str(two_cats_path), "  ", "--model", str(tmp_path / "nowhere")]) == 2
    assert "empty" in capsys.readouterr().err


def test_missing_checkpoints_name_the_paths_searched(tmp_path, two_cats_path, flux_dir, capsys, monkeypatch):
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "sam2").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(
        ["segment", str(two_cats_path), "a cat", "--model", "flux1-dev.safetensors", "--comfyui", str(comfy)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "flux1-dev.safetensors" in err
    assert str(comfy / "models" / "diffusion_models") in err and str(comfy / "models" / "unet") in err
    code = main([
        "segment", str(two_cats_path), "a cat", "--model", str(flux_dir), "--segmenter", "sam2.1_hiera_large.pt",
        "--comfyui", str(comfy), "--resolution", "64",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and str(comfy / "models" / "sam2" / "sam2.1_hiera_large.pt") in err
    assert str(comfy / "models" / "sams") in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gamma", "0.3"], "--gamma apply to --features inversion"),
        (["--collect-steps", "0-3"], "--collect-steps apply to --features inversion"),
        (["--features", "inversion", "--sigmas", "0.5,0.7"], "sigmas average single passes"),
        (["--sigmas", "0.5,high"], "--sigmas takes comma-separated numbers"),
        (["--sigmas", "0.5,1.5"], "sigma must be in (0, 1]"),
        (["--features", "inversion", "--collect-steps", "30"], "past the last denoising step (27)"),
        (["--features", "inversion", "--gamma", "2"], "gamma"),
        (["--features", "inversion", "--inversion-steps", "0"], "inversion_steps must be a whole number >= 1"),
        (["--sigma", "0.5", "--sigmas", "0.5,0.7"], "not both"),
        (["--step-aggregation", "scores"], "--step-aggregation joins several passes"),
    ],
)
def test_bad_feature_flags_fail_before_loading_anything(tmp_path, two_cats_path, capsys, flags, message):
    assert main(["segment", str(two_cats_path), "a cat", "--model", str(tmp_path / "nowhere"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refam: error:") and message in err, err


def test_segment_with_inversion_features_names_them_in_the_summary(tmp_path, two_cats_path, flux_dir, sam2_ckpt):
    out = tmp_path / "out"
    argv = [
        "segment", str(two_cats_path), "the cat on the left", "--caption", "two cats",
        "--model", str(flux_dir), "--segmenter", str(sam2_ckpt), "--sam2-image-size", "256",
        "--resolution", "64", "--device", "cpu", "--dtype", "fp32", "--out", str(out),
        "--features", "inversion", "--inversion-steps", "3", "--collect-steps", "1-2", "--gamma", "0.25",
    ]  # fmt: skip
    assert main(argv) == 0
    features = json.loads((out / "summary.json").read_text())["options"]["features"]
    assert features == {
        "mode": "inversion", "inversion_steps": 3, "gamma": 0.25, "eta": 1.0, "eta_stop": 0.25,
        "collect_steps": [1, 2], "step_aggregation": "maps",
    }  # fmt: skip
