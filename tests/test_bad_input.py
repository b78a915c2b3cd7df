"""Mistakes and faults at the command line and in evaluation runs: one ``refam: error:`` line with
exit code 2 before any model loads, resumes that never report another run's numbers, one writer
per folder, nothing written outside ``--out`` (issue 13)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT
from refam.cli import main
from refam.data import safe_component
from refam.eval import evaluate_refer, predict_ytvos
from refam.run_folder import claim, clear_previous_run
from refam.toy import scenes


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test: the bad input must be refused before it."""
    import refam.loading
    import refam.segment
    from refam.pipeline import RefAMPipeline

    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(RefAMPipeline, "from_pretrained", refuse)
    for name in ("load_flux", "load_mochi"):
        monkeypatch.setattr(refam.loading, name, refuse)
    for name in ("load_segmenter", "load_sam2_video"):
        monkeypatch.setattr(refam.segment, name, refuse)


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "scene.png"
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(path)
    return path


def _fails(argv, capsys, *fragments):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    # pytest's capture can leave a logging handler on a closed stream ("--- Logging error ---");
    # that is the test harness, not the CLI.
    assert "Traceback" not in err or "--- Logging error ---" in err, err
    assert "refam: error: " in err, err
    message = err[err.rindex("refam: error: ") :]
    assert "Traceback" not in message, err
    for fragment in fragments:
        assert fragment in message, err
    return message


BAD_OPTIONS = [
    (["--sigma", "1.5"], "sigma must be in (0, 1]"),
    (["--sigma", "nan"], "sigma must be in (0, 1]"),
    (["--points", "0"], "points must be a whole number >= 1, got 0"),
    (["--points", "-3"], "points must be a whole number >= 1, got -3"),
    (["--resolution", "0"], "resolution must be at least 32"),
    (["--resolution", "-64"], "resolution must be at least 32"),
    (["--seed", str(2**70)], "seed must be a whole number from 0 to"),
    (["--seed", "-1"], "seed must be a whole number from 0 to"),
    (["--gas-threshold", "0"], "gas_threshold must be a positive"),
    (["--skip-fraction", "1"], "skip_fraction must be in [0, 1)"),
    (["--device", "tpu:3"], "--device 'tpu:3'"),
    (["--dtype", "int8"], "dtype must be one of"),
    (["--max-pixels", "0"], "--max-pixels must be at least 1"),
    (["--segmenter", "no_such_sam.pt"], "no_such_sam.pt"),
    (["--out", ""], "--out is empty"),
]


@pytest.mark.parametrize("extra,message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_refused_before_any_model_loads(extra, message, picture, capsys, no_model_loads):
    _fails(["segment", str(picture), "the red circle", "--quiet", *extra], capsys, message)


def test_a_device_this_machine_lacks_is_named(picture, capsys, no_model_loads):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _fails(["segment", str(picture), "a cat", "--device", "cuda"], capsys, "--device cuda", "sees no CUDA GPU", "--device cpu")


def test_out_that_is_a_file_or_unwritable_is_refused_first(picture, tmp_path, capsys, no_model_loads):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    _fails(["segment", str(picture), "a cat", "--out", str(existing)], capsys, "is an existing file")
    _fails(["segment", str(picture), "a cat", "--out", str(existing / "sub")], capsys, "is a file")
    assert existing.read_text() == "keep me"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: folder permissions are not enforced")
        _fails(["segment", str(picture), "a cat", "--out", str(locked / "run")], capsys, "cannot be written")
    finally:
        locked.chmod(0o700)


def test_interrupt_is_one_line_not_a_traceback(picture, capsys, monkeypatch):
    import refam.images

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(refam.images, "load_image", interrupted)
    assert main(["segment", str(picture), "a cat", "--out", str(picture.parent / "o")]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_segment_rewrites_its_folder_and_leaves_the_users_files(tmp_path, capsys):
    """A reused --out holds the new run's files only (plus what the user put there)."""
    image = REPO_ROOT / "examples" / "toy_scene.png"
    out = tmp_path / "out"
    assert main(["segment", str(image), "the red one", "the blue one", "--out", str(out), "--quiet"]) == 0
    first = json.loads((out / "summary.json").read_text())
    assert len(first["files"]) == 8 and all((out / f).is_file() for f in first["files"])
    (out / "notes.txt").write_text("mine")
    assert main(["segment", str(image), "the green one", "--out", str(out), "--quiet"]) == 0
    second = json.loads((out / "summary.json").read_text())
    left = sorted(p.name for p in out.iterdir())
    assert left == sorted([*second["files"], "summary.json", "notes.txt"])
    assert [r["expression"] for r in second["results"]] == ["the green one"]
    capsys.readouterr()


def test_a_summary_naming_outside_paths_is_not_followed(tmp_path):
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("keep")
    (out / "summary.json").write_text(json.dumps({"files": ["../victim.txt", "/etc/passwd", "00_a_mask.png"]}))
    (out / "00_a_mask.png").write_bytes(b"x")
    assert clear_previous_run(out) == 2  # the listed mask and the summary itself
    assert victim.read_text() == "keep" and not any(out.iterdir())


@pytest.mark.parametrize("name", ["../../../../x", "a/b", "..", "", "C:evil", "/abs", "a\\b", "nul\0"])
def test_names_from_data_stay_inside_the_folder(name):
    with pytest.raises(ValueError, match="would leave the output folder"):
        safe_component(name, "expression id", "meta.json")


def test_traversal_ids_write_nothing_outside_out(tmp_path):
    """A dataset (any object with samples) whose ids climb out of --out is refused before any pass."""
    from refam.data.video_datasets import VideoSample

    class Hostile:
        root = tmp_path / "data"
        split = "valid"
        samples = [VideoSample("bike", "../../../../escaped", "a bike", (), ("00000",))]

        def frame_dir(self, video):
            raise AssertionError("no frame may be read for a refused record")

    class NeverRuns:
        def segment(self, *a, **k):
            raise AssertionError("no pass may run for a refused record")

    with pytest.raises(ValueError, match="would leave the output folder"):
        predict_ytvos(NeverRuns(), object(), Hostile(), tmp_path / "deep" / "er" / "out")
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.rglob("escaped"))


# ----- evaluation runs: configuration, skips, limits, concurrency -----


@pytest.fixture(scope="module")
def toy_refer(tmp_path_factory):
    from refam.toy.export import export_refer

    examples = scenes.make_eval_set(scenes.EVAL_SEED, 4, kinds=("colour",))
    return export_refer(tmp_path_factory.mktemp("toyref"), examples)


def _eval_args(root, out, *extra):
    return ["eval", "toyref", "--split", "val", "--data-root", str(root), "--split-by", "toy",
            "--captions", str(root / "captions.json"), "--out", str(out), "--quiet", *extra]  # fmt: skip


def test_resuming_with_another_configuration_is_refused(toy_refer, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(_eval_args(toy_refer, out, "--limit", "2")) == 0
    table = capsys.readouterr().out
    stored = json.loads((out / "run.json").read_text())
    assert stored["preset"] == "full" and stored["options"]["sigma"] > 0
    # The same command again resumes (nothing new) to the same table.
    assert main(_eval_args(toy_refer, out, "--limit", "2")) == 0
    assert capsys.readouterr().out == table
    # Another preset is known before the model loads: refused without loading it.
    from refam.pipeline import RefAMPipeline

    real = RefAMPipeline.__dict__["from_pretrained"]
    monkeypatch.setattr(RefAMPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded a model"))
    _fails(_eval_args(toy_refer, out, "--preset", "no-am"), capsys, "another configuration", "preset: full -> no-am")
    monkeypatch.setattr(RefAMPipeline, "from_pretrained", real)
    # Another σ is only known once the model has resolved its options: refused before any pass.
    before = (out / "records.rank0.jsonl").read_text()
    _fails(_eval_args(toy_refer, out, "--sigma", "0.9"), capsys, "another configuration", "sigma")
    assert (out / "records.rank0.jsonl").read_text() == before
    assert json.loads((out / "results.json").read_text())["configuration"] == stored


def test_records_without_a_configuration_are_not_resumed(toy_refer, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "records.rank0.jsonl").write_text('{"key": "1:1", "iou": 1.0, "inter": 1, "union": 1, "pa": true}\n')
    _fails(_eval_args(toy_refer, out, "--limit", "1"), capsys, "no run.json", "new --out")


def test_a_second_writer_on_the_same_folder_is_refused(toy_refer, tmp_path):
    from refam.data.refer import ReferDataset

    class NeverRuns:
        def segment(self, *a, **k):
            raise AssertionError("a refused run must not compute")

    ds = ReferDataset(toy_refer, "toyref", "toy")
    out = tmp_path / "shared"
    out.mkdir()
    with claim(out, 0), pytest.raises(ValueError, match="another refam run is writing"):
        evaluate_refer(NeverRuns(), ds, "val", out)
    assert not list(out.glob("records.rank*.jsonl"))


def test_eval_limits_and_merge_only_fail_clearly(toy_refer, tmp_path, capsys, no_model_loads):
    from refam.data.refer import ReferDataset

    _fails(_eval_args(toy_refer, tmp_path / "a", "--limit", "-1"), capsys, "--limit must be at least 1")
    _fails(_eval_args(toy_refer, tmp_path / "a", "--limit", "0"), capsys, "--limit must be at least 1")
    _fails(_eval_args(toy_refer, tmp_path / "empty", "--merge-only"), capsys, "holds no records", "without --merge-only")
    _fails([*_eval_args(toy_refer, tmp_path / "a")[:2], "--split", "tset", *_eval_args(toy_refer, tmp_path / "a")[4:]],
           capsys, "--split 'tset'", "has splits")
    with pytest.raises(ValueError, match="limit must be a positive"):
        evaluate_refer(object(), ReferDataset(toy_refer, "toyref", "toy"), "val", tmp_path / "b", limit=-1)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ----- video clips -----


def _clip(folder, sizes):
    folder.mkdir()
    for t, (h, w) in enumerate(sizes):
        Image.fromarray(np.full((h, w, 3), 90 + t, np.uint8)).save(folder / f"{t:05d}.png")
    return folder


def test_clip_problems_are_found_before_any_pass(tmp_path, capsys, no_model_loads):
    ckpt = tmp_path / "sam2.1_hiera_tiny.pt"
    ckpt.write_bytes(b"never read: the clip is refused first")
    out = tmp_path / "out"
    leftover = out / ".refam_frames"
    leftover.mkdir(parents=True)
    (leftover / "00000.png").write_bytes(b"from a killed run")
    clip = _clip(tmp_path / "clip", [(32, 48)] * 3)
    common = ["--segmenter", str(ckpt), "--out", str(out), "--quiet"]
    _fails(["segment-video", str(clip), "a dog", "--prompt-frame", "7", *common], capsys, "--prompt-frame 7", "3 frames")
    assert not leftover.exists()  # the next run into the folder removed the killed run's frames
    _fails(["segment-video", str(clip), "a dog", "--prompt-frame", "-1", *common], capsys, "--prompt-frame must be")
    mixed = _clip(tmp_path / "mixed", [(32, 48), (32, 48), (40, 48)])
    _fails(["segment-video", str(mixed), "a dog", *common], capsys, "00002.png", "one size")


def test_a_clip_without_a_text_encoder_refam_reads_is_named_with_the_loaders_that_give_one():
    from types import SimpleNamespace

    from refam.backends.comfy_text import text_part

    class SD3Tokenizer:  # e.g. a CLIP loaded with the wrong type
        pass

    with pytest.raises(TypeError) as err:
        text_part(SimpleNamespace(tokenizer=SD3Tokenizer()))
    message = str(err.value)
    assert "SD3Tokenizer" in message
    assert all(hint in message for hint in ("DualCLIPLoader type 'flux'", "CLIPLoader type 'flux2'", "'qwen_image'", "'lumina2'"))
