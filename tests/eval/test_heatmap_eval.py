"""``refam eval imagenet-seg`` / ``pascal-voc`` (Table 11): the two loaders on layouts built here (a
MATLAB v7.3-style ``gtsegs_ijcv.mat`` of toy-world scenes, a VOCdevkit tree of palette PNGs), a
stand-in pipeline whose heatmap is exact (so the wiring must score 100), and the toy model end to
end: resume, results recomputed from the records, the command line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from refam.data.imagenet_seg import MAT_FILE, ImagenetSegmentation
from refam.data.pascal_voc import VOC_CLASS_NAMES, PascalVocSingleClass
from refam.eval import (
    PAPER_TABLE_11,
    evaluate_heatmap_segmentation,
    heatmap_results_table,
    load_records,
    summarize_heatmap,
)
from refam.metrics.heatmap_segmentation import IGNORE, resize_labels
from refam.toy import scenes

HEIGHT, WIDTH = 32, 56  # not square, and 224 is a whole multiple of both: PIL's and torch's nearest agree


def _toy_items(n: int = 3):
    """(synset code, image, mask, class name) of toy scenes: the class is the target's colour and shape."""
    items = []
    for i, ex in enumerate(scenes.make_eval_set(scenes.EVAL_SEED, n, kinds=("colour",))):
        target = ex.scene.objects[ex.referral.target]
        image = scenes.render(ex.scene, HEIGHT, WIDTH)
        mask = scenes.masks(ex.scene, HEIGHT, WIDTH)[ex.referral.target]
        items.append((f"n{1000 + i:08d}_{7 * i + 1}", image, mask, f"{target.colour} {target.shape}"))
    return items


def write_gtsegs(path, items) -> None:
    """A ``gtsegs_ijcv.mat`` as MATLAB v7.3 writes a struct of cells: ``/value/{id,img,gt}`` hold
    object references into ``#refs#``; ids are UTF-16 char arrays, arrays are stored transposed and
    each ``gt`` is a 1x1 cell holding the mask."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        value = f.create_group("value")
        fields = {name: value.create_dataset(name, (len(items), 1), dtype=h5py.ref_dtype) for name in ("id", "img", "gt")}
        for i, (code, image, mask, _) in enumerate(items):
            chars = refs.create_dataset(f"id{i}", data=np.array([[ord(c)] for c in code], dtype=np.uint16))
            chars.attrs["MATLAB_class"] = np.bytes_("char")
            fields["id"][i, 0] = chars.ref
            fields["img"][i, 0] = refs.create_dataset(f"img{i}", data=image.transpose(2, 1, 0)).ref
            stored = refs.create_dataset(f"mask{i}", data=mask.T.astype(np.uint8))
            cell = refs.create_dataset(f"cell{i}", (1, 1), dtype=h5py.ref_dtype)
            cell[0, 0] = stored.ref
            fields["gt"][i, 0] = cell.ref
    with open(path, "r+b") as f:  # MATLAB's text header lives in the userblock
        f.write(b"MATLAB 7.3 MAT-file, created by the RefAM tests".ljust(116))


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet_seg")
    items = _toy_items()
    write_gtsegs(root / MAT_FILE, items)
    names = {code.split("_")[0]: name for code, *_, name in items}
    (root / "names.json").write_text(json.dumps(names))
    return root, items


# VOC labels of the fixture: (class indices inside the 255 ring, or None for background only)
VOC_IMAGES = {"2007_000010": (12,), "2007_000020": (12, 15), "2007_000030": (8,), "2007_000040": None}
VOC_SIZE = (112, 56)  # H, W: 224 is 2x and 4x
VOC_COLOURS = {"dog": (220, 30, 30), "cat": (30, 70, 230), "person": (30, 190, 40)}


def _voc_labels(classes):
    labels = np.zeros(VOC_SIZE, np.uint8)
    if classes is None:
        labels[:4, :] = 255  # a void strip, nothing else
        return labels
    labels[16:88, 8:48] = 255  # VOC's void ring around each object
    labels[24:80, 16:40] = classes[0]
    if len(classes) > 1:
        labels[56:80, 16:40] = classes[1]
    return labels


def write_vocdevkit(root):
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "ImageSets/Segmentation/val.txt").write_text("\n".join(VOC_IMAGES) + "\n")
    palette = [0, 0, 0] + [(37 * k) % 256 for k in range(3, 768)]
    for image_id, classes in VOC_IMAGES.items():
        labels = _voc_labels(classes)
        png = Image.fromarray(labels, mode="P")
        png.putpalette(palette)
        png.save(base / "SegmentationClass" / f"{image_id}.png")
        image = np.full((*VOC_SIZE, 3), 32, np.uint8)
        for index in np.unique(labels):
            name = VOC_CLASS_NAMES[index] if index < len(VOC_CLASS_NAMES) else None
            if name in VOC_COLOURS:
                image[labels == index] = VOC_COLOURS[name]
        Image.fromarray(image).save(base / "JPEGImages" / f"{image_id}.jpg", quality=100, subsampling=0)
    return root


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    return write_vocdevkit(tmp_path_factory.mktemp("voc"))


@pytest.fixture(scope="module")
def toy_pipeline():
    from refam.pipeline import RefAMPipeline

    return RefAMPipeline.from_pretrained(None)  # the embedded toy model


def test_imagenet_seg_reads_the_published_layout(imagenet_root):
    import h5py

    root, items = imagenet_root
    with ImagenetSegmentation(root, root / "names.json") as ds:
        samples = ds.samples()
        assert [s.name for s in samples] == [name for *_, name in items]
        assert [s.key for s in ds.samples(limit=2)] == ["0", "1"]
        for sample, (_, image, mask, _) in zip(samples, items, strict=True):
            assert np.array_equal(ds.image(sample), image)
            gt = ds.ground_truth(sample)
            assert gt.shape == (224, 224) and set(np.unique(gt)) <= {0, 1}
            assert np.array_equal(gt, resize_labels(mask.astype(np.uint8)))
        assert ds.codes == [code for code, *_ in items]
    # CA's own reads of the file give the same arrays (its transposes, its utf-16 id decoding)
    with h5py.File(root / MAT_FILE, "r") as f:
        assert np.array_equal(np.array(f[f["/value/img"][1, 0]]).transpose((2, 1, 0)), items[1][1])
        assert np.array_equal(np.array(f[f[f["/value/gt"][1, 0]][0, 0]]).transpose((1, 0)), items[1][2])
        assert b"".join(f[f["/value/id"][1, 0]]).decode("utf-16") == items[1][0]


def test_imagenet_seg_errors_name_the_layout_and_the_names_file(imagenet_root, tmp_path):
    root, items = imagenet_root
    with pytest.raises(FileNotFoundError, match=r"gtsegs_ijcv\.mat not found; expected ImageNet-Segmentation"):
        ImagenetSegmentation(tmp_path)
    # no names and no WordNet: which file to put where
    with pytest.raises(ValueError, match=r"no class name for 3 of 3 images.*class_names\.json.*--class-names"):
        ImagenetSegmentation(root, lemma_of=lambda synset: None)
    with pytest.raises(FileNotFoundError, match="--class-names"):
        ImagenetSegmentation(root, tmp_path / "absent.json")
    # CA's imagenet_class_map.json is keyed by WordNet lemma: the lemma comes from WordNet (stubbed here)
    ca_root = tmp_path / "ca"
    ca_root.mkdir()
    (ca_root / MAT_FILE).symlink_to(root / MAT_FILE)
    lemmas = {code.split("_")[0]: f"lemma {i}" for i, (code, *_) in enumerate(items)}
    (ca_root / "imagenet_class_map.json").write_text(json.dumps({"categories": {"lemma 0": "dog", "lemma 1": "cat"}}))
    with ImagenetSegmentation(ca_root, lemma_of=lemmas.get) as ds:
        assert [s.name for s in ds.samples()] == ["dog", "cat", "lemma 2"]  # no map entry: the lemma itself
    (ca_root / "imagenet_class_map.json").write_text(json.dumps({"categories": ["not", "a", "map"]}))
    with pytest.raises(ValueError, match="not a map of names"):
        ImagenetSegmentation(ca_root, lemma_of=lemmas.get)


def test_pascal_voc_keeps_single_class_images(voc_root):
    ds = PascalVocSingleClass(voc_root)
    samples = ds.samples()
    assert [(s.image_id, s.name) for s in samples] == [("2007_000010", "dog"), ("2007_000030", "cat")]
    assert ds.left_out == {"multi_class": 1, "background_only": 1}
    assert [s.image_id for s in ds.samples(limit=1)] == ["2007_000010"]
    gt = ds.ground_truth(samples[1])
    assert gt.shape == (224, 224) and set(np.unique(gt)) == {IGNORE, 0, 1}
    expected = resize_labels(_voc_labels((8,)))
    assert np.array_equal(gt == IGNORE, expected == 255) and np.array_equal(gt == 1, expected == 8)


def test_pascal_voc_missing_files_name_the_layout(voc_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Segmentation/val\.txt not found; expected PascalVOC 2012"):
        PascalVocSingleClass(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"Segmentation/test\.txt not found"):
        PascalVocSingleClass(voc_root, "test")


class ColourOracle:
    """A stand-in pipeline whose heatmap is exactly the pixels of the named object's colour."""

    def __init__(self, colours):
        self.colours = colours
        self.captions: list[str] = []

    def segment(self, image, expression, caption="", **_):
        self.captions.append(caption)
        colour = np.array(self.colours[expression], dtype=np.int16)
        grid = (np.abs(image.astype(np.int16) - colour).sum(-1) < 60).astype(np.float32)
        return [SimpleNamespace(heatmap_grid=grid)]


def test_an_exact_heatmap_scores_100(imagenet_root, voc_root, tmp_path):
    root, items = imagenet_root
    oracle = ColourOracle({name: scenes.COLOURS[name.split()[0]] for *_, name in items})
    with ImagenetSegmentation(root, root / "names.json") as ds:
        evaluate_heatmap_segmentation(oracle, ds, tmp_path / "imagenet")
    summary = summarize_heatmap(load_records(tmp_path / "imagenet"), "imagenet")
    assert summary["n"] == 3 and oracle.captions == [f"a {name}" for *_, name in items]  # CA's caption
    assert (summary["Acc"], summary["mIoU"], summary["mAP"]) == pytest.approx((100, 100, 100))

    evaluate_heatmap_segmentation(ColourOracle(VOC_COLOURS), PascalVocSingleClass(voc_root), tmp_path / "voc")
    records = load_records(tmp_path / "voc")
    summary = summarize_heatmap(records, "voc")
    valid = sum(r["tp"] + r["tn"] for r in records)
    ignored = sum(r["ignored"] for r in records)
    assert all(r["fp"] == r["fn"] == 0 for r in records) and ignored > 0
    # CA's VOC accuracy counts each ignore pixel once as labeled and wrong; IoU and AP leave it out
    assert summary["Acc"] == pytest.approx(100 * 2 * valid / (2 * valid + ignored))
    assert (summary["mIoU"], summary["mAP"], summary["plain"]["Acc"]) == pytest.approx((100, 100, 100))


def _recompute(records, protocol):
    """Table 11's numbers straight from the records' counts (CA's formulas, written out)."""
    tp, tn, fp, fn, ig = (sum(r[k] for r in records) for k in ("tp", "tn", "fp", "fn", "ignored"))
    valid = tp + tn + fp + fn
    if protocol == "imagenet":
        acc = (tp + tn) / valid
        miou = acc / (2 - acc)
    else:
        acc = 2 * (tp + tn) / (2 * valid + ig)
        miou = (tn / (tn + fp + fn) + tp / (tp + fp + fn)) / 2
    return 100 * acc, 100 * miou, 100 * float(np.mean([r["ap"] for r in records]))


@pytest.mark.slow
def test_toy_run_resumes_and_its_table_is_the_records(imagenet_root, toy_pipeline, tmp_path):
    root, items = imagenet_root
    captions = {"1": "a scene of shapes"}
    with ImagenetSegmentation(root, root / "names.json") as ds:
        first = evaluate_heatmap_segmentation(toy_pipeline, ds, tmp_path, limit=2, caption_mode="file", captions=captions)
        assert first["written"] == 2
        again = evaluate_heatmap_segmentation(toy_pipeline, ds, tmp_path, caption_mode="file", captions=captions)
        assert again["written"] == 1  # only the image the limited run did not reach
        assert evaluate_heatmap_segmentation(toy_pipeline, ds, tmp_path, caption_mode="file", captions=captions)["written"] == 0
        with pytest.raises(ValueError, match="another configuration"):
            evaluate_heatmap_segmentation(toy_pipeline, ds, tmp_path, caption_mode="empty")
    records = sorted(load_records(tmp_path), key=lambda r: int(r["key"]))
    assert [r["caption"] for r in records] == [f"a {items[0][3]}", "a scene of shapes", f"a {items[2][3]}"]
    assert all(r["grid"] == [12, 12] and 0.0 <= r["ap"] <= 1.0 for r in records)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["options"]["heatmap_mask"] is True  # the segmenter never runs
    summary = summarize_heatmap(records, "imagenet")
    assert (summary["Acc"], summary["mIoU"], summary["mAP"]) == pytest.approx(_recompute(records, "imagenet"))
    assert summary["plain"]["Acc"] == pytest.approx(summary["Acc"])


def test_results_table_sets_the_papers_rows_beside_ours():
    summary = summarize_heatmap(
        [{"key": "a", "tp": 3, "tn": 5, "fp": 1, "fn": 1, "ignored": 0, "ap": 0.8}, {"key": "b", "skipped": "x"}],
        "imagenet",
    )
    assert summary["n"] == 1 and summary["skipped"] == 1 and summary["mAP"] == pytest.approx(80)
    table = heatmap_results_table(summary, "imagenet-seg")
    assert table.count("(paper)") == len(PAPER_TABLE_11)
    assert "| ConceptAttention (Helbling et al., 2025) (paper) | Flux DiT | 83.07 | 71.04 | 90.45 |" in table
    assert "| REFAM (ours) (paper) † | Flux DiT | 85.61 | 71.37 | 87.94 |" in table  # not Acc/(2-Acc)
    assert "| **RefAM (this run)** | | **80.00** | **66.67** | **80.00** |" in table
    assert "plain two-class" in table
    voc = heatmap_results_table(summary, "pascal-voc")
    assert "| REFAM (ours) + Inversion (paper) | Flux DiT | 89.82 | 80.07 | 90.70 |" in voc and "†" not in voc


@pytest.mark.slow
def test_cli_end_to_end(imagenet_root, voc_root, tmp_path, capsys):
    from refam.cli import main

    root, _ = imagenet_root
    out = tmp_path / "imagenet"
    args = ["eval", "imagenet-seg", "--data-root", str(root), "--class-names", str(root / "names.json"),
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "ConceptAttention (Helbling et al., 2025) (paper)" in printed and "RefAM (this run, preset full)" in printed
    results = json.loads((out / "results.json").read_text())
    records = load_records(out)
    assert results["n"] == len(records) == 3 and results["dataset"] == "imagenet-seg"
    assert (results["Acc"], results["mIoU"], results["mAP"]) == pytest.approx(_recompute(records, "imagenet"))
    lines = (out / "records.rank0.jsonl").read_text()
    assert main(args) == 0 and (out / "records.rank0.jsonl").read_text() == lines  # resumed: nothing new

    voc_out = tmp_path / "voc"
    assert main(["eval", "pascal-voc", "--data-root", str(voc_root), "--limit", "2", "--out", str(voc_out), "--quiet"]) == 0
    results = json.loads((voc_out / "results.json").read_text())
    records = load_records(voc_out)
    assert results["split"] == "val" and results["n"] == 2
    assert (results["Acc"], results["mIoU"], results["mAP"]) == pytest.approx(_recompute(records, "voc"))
    assert "PascalVOC (single class)" in (voc_out / "results.md").read_text()

    # the wrong arguments are refused in one line, before any model loads
    assert main(["eval", "imagenet-seg", "--split", "val", "--data-root", str(root), "--out", str(tmp_path / "x")]) == 2
    assert main(["eval", "pascal-voc", "--data-root", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert main(["eval", "refcoco", "--data-root", str(tmp_path), "--out", str(tmp_path / "z")]) == 2
    errors = capsys.readouterr().err
    assert "no splits" in errors and "expected PascalVOC 2012" in errors and "--split is required" in errors
