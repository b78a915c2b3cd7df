"""``refam eval``: the refer loader on the real RefCOCOg excerpt, and end to end on the toy world
exported in the refer format (same numbers as the toy benchmark, resume, 2-process sharding)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, shared_path
from refam.data.refer import ReferDataset
from refam.eval import Shard, evaluate_refer, load_records, results_table, summarize
from refam.toy import scenes

N_TOY = 16


@pytest.fixture(scope="module")
def fixture_dataset():
    root = shared_path("refcocog_fixture").parent
    return ReferDataset(root, "refcocog_fixture", "umd")


def test_refcocog_fixture_loader(fixture_dataset, tmp_path):
    ds = fixture_dataset
    assert ds.splits() == ["test", "train", "val"]
    val = ds.samples("val")
    assert len(val) >= 5 and all(s.sentence == s.sentence.lower() for s in val)
    groups = ds.by_image("val")
    assert sum(len(v) for v in groups.values()) == len(val) and list(groups) == sorted(groups)
    for s in val:
        mask = ds.mask(s)
        assert mask.shape == (s.height, s.width) and mask.any()
        assert np.array_equal(ds.mask(s, overlap="exactly_one") & ~mask, np.zeros_like(mask))
    assert ds.image_path(val[0]).name.startswith("COCO_train2014_")


def test_missing_files_name_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"refs\(unc\)\.p not found; expected the refer layout"):
        ReferDataset(tmp_path, "refcoco")


def test_missing_images_are_reported_and_counted(fixture_dataset, tmp_path):
    """No COCO images: every sentence is recorded as skipped (never dropped); with rendered
    stand-ins of the right size the same run scores every sentence."""

    class FixedPoint:
        """A pipeline stand-in that points at the image centre (the loader, not RefAM, is under test)."""

        def segment(self, image, sentences, caption="", **_):
            from refam.points import Point

            h, w = image.shape[:2]
            mask = np.zeros((h, w), dtype=bool)
            mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
            fields = {"point": Point(w / 2, h / 2, 1.0, 0, 0), "mask": mask, "noun_phrase": None, "parser": None}
            return [type("R", (), fields)() for _ in sentences]

    missing = evaluate_refer(FixedPoint(), fixture_dataset, "val", tmp_path / "a")
    records = load_records(tmp_path / "a")
    assert missing["skipped"] == len(records) == len(fixture_dataset.samples("val"))
    assert all("unreadable image" in r["skipped"] for r in records)
    assert summarize(records)["n"] == 0

    images = tmp_path / "images"
    images.mkdir()
    for s in fixture_dataset.samples("val"):
        Image.new("RGB", (s.width, s.height), (90, 120, 150)).save(images / s.file_name, format="JPEG")
    ds = ReferDataset(shared_path("refcocog_fixture").parent, "refcocog_fixture", "umd", images=images)
    evaluate_refer(FixedPoint(), ds, "val", tmp_path / "b")
    summary = summarize(load_records(tmp_path / "b"))
    assert summary["n"] == len(ds.samples("val")) and summary["skipped"] == 0
    # Skips are not completion: the first run, resumed once the images are there, scores them all.
    again = evaluate_refer(FixedPoint(), ds, "val", tmp_path / "a")
    assert again["written"] == len(ds.samples("val")) and summarize(load_records(tmp_path / "a")) == summary
    assert 0 <= summary["mIoU"] <= 100 and "refcocog" in results_table(summary, "refcocog", "val")


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory):
    from refam.toy.export import export_refer

    examples = scenes.make_eval_set(scenes.EVAL_SEED, N_TOY, kinds=("colour",))
    root = export_refer(tmp_path_factory.mktemp("toyref"), examples)
    return root, examples


@pytest.fixture(scope="module")
def toy_pipeline():
    from refam.pipeline import RefAMPipeline

    return RefAMPipeline.from_pretrained(None)  # no FLUX here: the embedded toy model with its flood-fill segmenter


def _toy_dataset(root):
    return ReferDataset(root, "toyref", "toy", captions=root / "captions.json")


def test_eval_on_exported_toy_world_matches_the_toy_benchmark(toy_export, toy_pipeline, tmp_path):
    from refam.eval import write_report
    from refam.toy.evaluate import evaluate

    root, examples = toy_export
    evaluate_refer(toy_pipeline, _toy_dataset(root), "val", tmp_path, visuals=True)
    records = load_records(tmp_path)
    summary = summarize(records)
    assert all(r["parser"].startswith("en_core_web") for r in records)  # which parser read each sentence
    report = write_report(tmp_path, k=3).read_text()
    assert report.count("<img ") == 6 and len(list((tmp_path / "visuals").glob("*.jpg"))) == N_TOY
    bench = evaluate(toy_pipeline, examples)["colour"]
    assert summary["n"] == bench["n"] == N_TOY
    assert math.isclose(summary["PA"], 100 * bench["pa"], abs_tol=1e-9)
    assert math.isclose(summary["mIoU"], 100 * bench["miou"], abs_tol=1e-9)
    assert math.isclose(summary["oIoU"], 100 * bench["oiou"], abs_tol=1e-9)


def test_killed_run_resumes_to_the_same_table(toy_export, toy_pipeline, tmp_path):
    root, _ = toy_export
    ds = _toy_dataset(root)
    evaluate_refer(toy_pipeline, ds, "val", tmp_path / "full")
    reference = summarize(load_records(tmp_path / "full"))

    evaluate_refer(toy_pipeline, ds, "val", tmp_path / "killed")
    path = tmp_path / "killed" / "records.rank0.jsonl"
    lines = path.read_text().splitlines()
    # A kill mid-run: the last 6 records never written, the one before cut mid-line.
    path.write_text("\n".join(lines[:-7]) + "\n" + lines[-7][:25])
    assert len(load_records(tmp_path / "killed")) == N_TOY - 7
    again = evaluate_refer(toy_pipeline, ds, "val", tmp_path / "killed")
    assert again["written"] == 7  # only the lost sentences were redone
    assert summarize(load_records(tmp_path / "killed")) == reference


def test_sharding_splits_images_deterministically():
    items = list(range(10))
    parts = [Shard(r, 3).take(items) for r in range(3)]
    assert sorted(sum(parts, [])) == items and parts[0] == [0, 3, 6, 9]


@pytest.mark.slow
def test_two_process_torchrun_gives_the_one_process_table(toy_export, tmp_path):
    root, _ = toy_export
    common = [
        "eval", "toyref", "--split", "val", "--data-root", str(root), "--split-by", "toy",
        "--captions", str(root / "captions.json"), "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "refam.cli", *common, "--out", str(tmp_path / "one")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "refam.cli",
         *common, "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert len(list((tmp_path / "two").glob("records.rank*.jsonl"))) == 2
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert a == b and a["n"] == N_TOY


def _davis_layout(root):
    """A DAVIS-2017 layout built from the shipped clips (judo: 4 annotated frames; bike: the first)."""
    import shutil

    for video in ("judo", "bike"):
        clip = shared_path("video_clips", video)
        shutil.copytree(clip / "frames", root / "JPEGImages" / "480p" / video)
        shutil.copytree(clip / "masks", root / "Annotations_unsupervised" / "480p" / video)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("bike\njudo\n")
    (root / "davis_text_annotations").mkdir()
    (root / "davis_text_annotations" / "Davis17_annot1.txt").write_text(
        'judo 1 "The person in white"\njudo 2 "the person in blue"\nbike 1 "a bike"\nunknown 1 "ignored"\n'
    )
    return root


@pytest.fixture(scope="module")
def tracker():
    import torch

    from refam.segment import SAM2_VIDEO_MODEL_OVERRIDES, build_sam2_module

    torch.manual_seed(0)
    return build_sam2_module("sam2.1_hiera_t", image_size=256, model_overrides=SAM2_VIDEO_MODEL_OVERRIDES)


def test_ref_davis_layout_and_unsupervised_protocol(tmp_path, toy_pipeline, tracker):
    """Ref-DAVIS17 as the literature scores it: one record per ground-truth object of each video,
    predicted objects matched to it by davis2017's unsupervised task on the annotated frames."""
    from refam.data.video_datasets import RefDavisDataset
    from refam.eval import davis_results_table, evaluate_ref_davis, summarize_video

    ds = RefDavisDataset(_davis_layout(tmp_path / "davis"), "annot1", "val")
    assert [s.key for s in ds.samples] == ["judo:1-1", "judo:2-1", "bike:1-1"]
    assert ds.samples[0].expression == "the person in white" and len(ds.samples[0].frames) == 16
    gts = ds.masks(ds.samples[0])
    assert sorted(gts) == [0, 5, 8, 13]  # scored on the annotated frames only
    counts = evaluate_ref_davis(toy_pipeline, tracker, ds, tmp_path / "out")
    records = {r["key"]: r for r in load_records(tmp_path / "out")}
    labels = {video: sorted({int(v) for m in ds.labels(video, ds.samples[i].frames).values() for v in np.unique(m)} - {0})
              for video, i in (("judo", 0), ("bike", 2))}
    assert set(records) == {f"{v}:object-{o}" for v, objects in labels.items() for o in objects}
    assert counts["written"] == len(records)
    assert {r["frames_scored"] for r in records.values()} == {4, 1}
    assert all(0.0 <= r["J&F"] <= 1.0 for r in records.values())
    # bike names one object; its other ground-truth objects meet an empty mask or a spare label
    bike = [r for r in records.values() if r["video"] == "bike"]
    assert sum(r["matched"] is not None for r in bike) == 1
    summary = summarize_video(records.values())
    assert summary["n"] == len(records)
    table = davis_results_table({"annot1": summary, "annot2": summary})
    assert "mean of 2 sets" in table and "paper 57.6" in table
    # Resume: nothing left to do.
    assert evaluate_ref_davis(toy_pipeline, tracker, ds, tmp_path / "out")["written"] == 0


def test_ref_davis_all_annotator_sets_from_the_cli(tmp_path, tracker):
    """``refam eval ref-davis17`` scores each of the four annotator sets and reports their mean."""
    import shutil

    from safetensors.torch import save_file

    from refam.cli import main

    root = _davis_layout(tmp_path / "davis")
    notes = root / "davis_text_annotations"
    for name in ("annot1_full_video", "annot2", "annot2_full_video"):
        shutil.copy(notes / "Davis17_annot1.txt", notes / f"Davis17_{name}.txt")
    ckpt = tmp_path / "sam2.1_hiera_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tracker.state_dict().items()}, str(ckpt))
    out = tmp_path / "runs"
    rc = main([
        "eval", "ref-davis17", "--split", "val", "--data-root", str(root), "--segmenter", str(ckpt),
        "--sam2-image-size", "256", "--limit", "1", "--out", str(out), "--quiet",
    ])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["annotator_sets"]) == ["annot1", "annot1_full_video", "annot2", "annot2_full_video"]
    assert results["mean"]["J&F"] == pytest.approx(np.mean([s["J&F"] for s in results["annotator_sets"].values()]))
    assert "mean of 4 sets" in (out / "results.md").read_text()


def test_mevis_layout(tmp_path):
    import shutil

    from pycocotools import mask as mask_utils

    from refam.data.video_datasets import MevisDataset

    root = tmp_path / "mevis"
    clip = shared_path("video_clips", "bike")
    shutil.copytree(clip / "frames", root / "valid_u" / "JPEGImages" / "bike")
    first = np.asarray(Image.open(clip / "masks" / "00000.png"))
    rles = []
    for obj in (1, 2):
        rle = mask_utils.encode(np.asfortranarray((first == obj).astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        rles.append(rle)
    frames = [p.stem for p in sorted((clip / "frames").glob("*.jpg"))]
    meta = {"videos": {"bike": {"frames": frames, "expressions": {
        "0": {"exp": "The Rider", "obj_id": [1], "anno_id": [7]},
        "1": {"exp": "both objects", "obj_id": [1, 2], "anno_id": [7, 8]},
    }}}}
    (root / "valid_u" / "meta_expressions.json").write_text(json.dumps(meta))
    (root / "valid_u" / "mask_dict.json").write_text(
        json.dumps({"7": [rles[0]] + [None] * 3, "8": [rles[1]] + [None] * 3})
    )
    ds = MevisDataset(root, "valid_u")
    assert [s.expression for s in ds.samples] == ["the rider", "both objects"]
    one, both = (ds.masks(s) for s in ds.samples)
    assert np.array_equal(one[0], first == 1) and np.array_equal(both[0], (first == 1) | (first == 2))
    assert not one[3].any()


def test_ref_youtube_vos_submission_layout(tmp_path, toy_pipeline, tracker):
    import shutil
    import zipfile

    from refam.data.video_datasets import RefYoutubeVosDataset
    from refam.eval import predict_ytvos, zip_submission

    root = tmp_path / "ytvos"
    clip = shared_path("video_clips", "bike")
    shutil.copytree(clip / "frames", root / "valid" / "JPEGImages" / "bike")
    frames = [p.stem for p in sorted((clip / "frames").glob("*.jpg"))]
    (root / "meta_expressions" / "valid").mkdir(parents=True)
    (root / "meta_expressions" / "valid" / "meta_expressions.json").write_text(
        json.dumps({"videos": {"bike": {"frames": frames, "expressions": {"0": {"exp": "a person on a bike"}}}}})
    )
    ds = RefYoutubeVosDataset(root, "valid")
    assert predict_ytvos(toy_pipeline, tracker, ds, tmp_path / "out")["written"] == 1
    pngs = sorted((tmp_path / "out" / "Annotations" / "bike" / "0").glob("*.png"))
    assert [p.stem for p in pngs] == frames and Image.open(pngs[0]).size == (854, 480)
    assert predict_ytvos(toy_pipeline, tracker, ds, tmp_path / "out")["written"] == 0  # resumed: complete
    with zipfile.ZipFile(zip_submission(tmp_path / "out")) as z:
        assert sorted(z.namelist()) == [f"Annotations/bike/0/{f}.png" for f in frames]


def test_captions_from_coco_or_a_map(tmp_path):
    from refam.data.captions import load_captions

    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"annotations": [
        {"image_id": 7, "caption": " two cats on a couch "}, {"image_id": 7, "caption": "second"},
    ]}))
    assert load_captions(coco) == {"7": "two cats on a couch"}  # the first caption, stripped
    plain = tmp_path / "videos.json"
    plain.write_text(json.dumps({"bike": "a person rides a bike on a dirt path", "judo": "two people in judo suits"}))
    assert load_captions(plain)["bike"].startswith("a person")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="neither COCO captions nor"):
        load_captions(bad)
    with pytest.raises(FileNotFoundError, match="JSON map"):
        load_captions(tmp_path / "missing.json")


def test_video_evaluation_conditions_on_each_videos_caption(tmp_path, toy_pipeline, tracker):
    from refam.data.video_datasets import RefDavisDataset
    from refam.eval import evaluate_ref_davis

    ds = RefDavisDataset(_davis_layout(tmp_path / "davis"), "annot1", "val")
    seen = []
    backend = toy_pipeline.backend
    original = backend.capture

    def spy(images, expressions, caption="", **kwargs):
        seen.append(caption)
        return original(images, expressions, caption, **kwargs)

    backend.capture = spy
    try:
        evaluate_ref_davis(toy_pipeline, tracker, ds, tmp_path / "out", limit=1, captions={"bike": "a bike on a path"})
    finally:
        del backend.capture
    assert seen and set(seen) == {"a bike on a path"}
    assert {r["caption"] for r in load_records(tmp_path / "out")} == {"a bike on a path"}


def test_inversion_run_names_its_features_and_is_not_mixed_with_a_single_pass_run(toy_export, toy_pipeline, tmp_path):
    from refam.eval.presets import PRESETS

    root, _ = toy_export
    ds = _toy_dataset(root)
    inversion = {**PRESETS["inversion"], "inversion_steps": 2}
    evaluate_refer(toy_pipeline, ds, "val", tmp_path, limit=2, **inversion)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["options"]["features"]["mode"] == "inversion"
    assert run["options"]["features"]["inversion_steps"] == 2 and run["options"]["point_strategy"] == "argmax"
    with pytest.raises(ValueError, match="features"):
        evaluate_refer(toy_pipeline, ds, "val", tmp_path, limit=2, **PRESETS["paper"])
