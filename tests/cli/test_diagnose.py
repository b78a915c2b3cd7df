"""`refam diagnose` on the embedded toy model: the figures render and their numbers are in range."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT
from refam.cli import main
from refam.toy import scenes

TOY_SCENE = REPO_ROOT / "examples" / "toy_scene.png"


@pytest.fixture(autouse=True)
def _toy_only(monkeypatch):
    monkeypatch.delenv("REFAM_FLUX_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _is_png(path):
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG" and min(image.size) > 100


def test_one_image_writes_three_figures_and_numbers_in_range_per_expression(tmp_path):
    out = tmp_path / "out"
    assert main(["diagnose", str(TOY_SCENE), "the red circle", "a blue square", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["expression"] for r in summary["results"]] == ["the red circle", "a blue square"]
    assert sorted(summary["files"]) == sorted(p.name for p in out.iterdir() if p.name != "summary.json")
    for result in summary["results"]:
        for figure in ("entropy", "text_attention", "token_mass"):
            assert _is_png(out / f"{result['stem']}_{figure}.png")
        d = json.loads((out / f"{result['stem']}_diagnosis.json").read_text())
        blocks, length = len(d["blocks"]), len(d["pieces"])
        assert blocks > 0 and len(d["entropy_mean"]) == len(d["entropy_min"]) == len(d["text_attention"]) == blocks
        assert all(0.0 <= lo <= mean <= 1.0 for lo, mean in zip(d["entropy_min"], d["entropy_mean"], strict=True))
        # a trained model localises: no block spreads the expression evenly over the image
        assert min(d["entropy_min"]) < 0.95
        assert np.asarray(d["text_attention"]).shape == (blocks, length, length)
        rows = np.asarray(d["text_attention"]).sum(axis=-1)
        assert (rows > 0).all() and (rows <= 1.0 + 1e-4).all()  # a share of each query's softmax
        assert sum(d["image_share"]) == pytest.approx(1.0, abs=1e-4)
        assert len(d["text_mass"]) == len(d["gas"]) == len(d["roles"]) == length
        assert len(d["gas_categories"]) == sum(d["gas"])
        assert "magnet" in d["roles"] and "eos" in d["roles"]


def test_pairs_give_gas_statistics_with_and_without_magnets(tmp_path):
    rng = np.random.default_rng(3)
    lines = []
    for i in range(2):
        scene, ref = scenes.sample_referral(rng, "colour")
        Image.fromarray(scenes.render(scene)).save(tmp_path / f"scene{i}.png")
        lines.append(json.dumps({"image": f"scene{i}.png", "expression": ref.text}))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(lines) + "\n\n")
    out = tmp_path / "out"
    assert main(["diagnose", "--pairs", str(pairs), "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "gas_statistics.json").read_text())
    assert data["expressions"] == 2 and 0 <= data["expressions_with_gas"] <= 2
    for key in ("gas_share", "gas_share_without_magnets"):
        total = sum(data[key].values())
        assert total == pytest.approx(1.0) or total == 0.0
    assert data["gas_tokens_without_magnets"]["magnet"] == 0  # the bare run has none
    moved = data["colour_gas_moved_share"]
    assert (moved is None) == (data["colour_gas_without_magnets"] == 0)
    assert _is_png(out / "gas_statistics.png")
    assert json.loads((out / "summary.json").read_text())["expressions"] == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"image": "a.png"}\n', "line 1 lacks an 'image' or 'expression'"),
        ('{"image": "a.png", "expression": "x"}\nnot json\n', "line 2 is not JSON"),
        ("\n\n", "holds no pairs"),
    ],
)
def test_bad_pairs_files_are_named_before_any_model_loads(tmp_path, capsys, content, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(content)
    assert main(["diagnose", "--pairs", str(pairs), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refam: error:") and message in err and str(pairs) in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["diagnose", str(TOY_SCENE), "the red circle", "--pairs", "p.jsonl"], "not both"),
        (["diagnose", str(TOY_SCENE)], "at least one expression"),
        (["diagnose"], "at least one expression"),
        (["diagnose", "--pairs", "missing.jsonl"], "not found"),
        (["diagnose", "missing.png", "the cat"], "missing.png"),
    ],
)
def test_bad_arguments_fail_with_a_named_error(tmp_path, capsys, argv, message):
    assert main([*argv, "--model", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refam: error:") and message in err, err
