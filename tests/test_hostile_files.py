"""Damaged, wrong-shaped and hostile user files fail with a ValueError that names the file (the CLI
prints those as ``refam: error: ...``), never with a traceback — and never run code they carry."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, shared_path
from refam.data import safe_component
from refam.data.refer import ReferDataset, load_instances, load_refs

TOY_WEIGHTS = REPO_ROOT / "refam" / "toy" / "weights" / "toy_flux.safetensors"


class _WritesMarker:
    """Unpickling this calls ``open(marker, "w")``: the file appearing means code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _RunsShell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _refer_layout(root, refs_bytes, instances=None):
    """``root/refcoco/refs(unc).p`` holding ``refs_bytes``, beside a (by default real) instances.json."""
    folder = root / "refcoco"
    folder.mkdir(parents=True)
    (folder / "refs(unc).p").write_bytes(refs_bytes)
    if instances is None:
        shutil.copy(shared_path("refcocog_fixture", "instances.json"), folder / "instances.json")
    else:
        (folder / "instances.json").write_text(instances)
    return folder


# --- refs pickles -------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [_WritesMarker, _RunsShell])
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_hostile_refs_pickle_is_refused_without_running_code(tmp_path, payload, protocol):
    marker = tmp_path / "marker"
    refs = [{"ref_id": 1, "split": "val", "evil": payload(marker)}]
    folder = _refer_layout(tmp_path, pickle.dumps(refs, protocol=protocol))
    with pytest.raises(ValueError, match="refusing to run code from a data file") as info:
        ReferDataset(tmp_path, "refcoco")
    assert str(folder / "refs(unc).p") in str(info.value)
    assert (".open;" if payload is _WritesMarker else ".system;") in str(info.value)  # says what it refused
    assert not marker.exists()


def test_hostile_refs_pickle_through_the_cli_exits_2(tmp_path, capsys):
    from refam.cli import main

    marker = tmp_path / "marker"
    _refer_layout(tmp_path / "data", pickle.dumps([_WritesMarker(marker)]))
    rc = main(["eval", "refcoco", "--split", "val", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "refam: error: refs file" in err and "refs(unc).p" in err
    assert not marker.exists()


def test_real_refs_files_load(tmp_path):
    real = load_refs(shared_path("refcocog_fixture", "refs(umd).p"))
    with open(shared_path("refcocog_fixture", "refs(umd).p"), "rb") as f:
        assert real == pickle.load(f)  # the restricted reader builds exactly what pickle does

    from refam.toy import scenes
    from refam.toy.export import export_refer

    examples = scenes.make_eval_set(scenes.EVAL_SEED, 2)
    ds = ReferDataset(export_refer(tmp_path, examples), "toyref", "toy")
    assert ds.splits() == ["val"] and len(ds.samples("val")) == len(examples)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (os.urandom(64) + b".", "not a readable pickle"),
        (b"", "not a readable pickle"),
        (None, "not a readable pickle"),  # the real file cut short
        (pickle.dumps({"refs": []}), "holds a dict"),
        (pickle.dumps([1, 2, 3]), "record 0 is not a dict"),
        (pickle.dumps([{"ref_id": 1, "ann_id": 2, "image_id": 3, "sentences": []}]), "record 0 lacks 'split'"),
        (pickle.dumps([{"split": "val"}]), "lacks 'ref_id', 'ann_id', 'image_id', 'sentences'"),
        (pickle.dumps([{"ref_id": 1, "ann_id": 2, "image_id": 3, "split": "val", "sentences": [{"sent": "x"}]}]),
         "sentence without sent_id"),
        (pickle.dumps([{"ref_id": "../../x", "ann_id": 2, "image_id": 3, "split": "val", "sentences": []}]),
         "has ref_id '../../x', not an integer"),
    ],
)
def test_corrupt_or_wrong_shaped_refs_pickle(tmp_path, data, says):
    if data is None:
        data = shared_path("refcocog_fixture", "refs(umd).p").read_bytes()[:700]
    folder = _refer_layout(tmp_path, data)
    with pytest.raises(ValueError, match=says) as info:
        ReferDataset(tmp_path, "refcoco")
    assert str(folder / "refs(unc).p") in str(info.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"images": [', "not readable COCO instances JSON"),
        ("[1, 2]", "not COCO instances"),
        ('{"images": []}', "no 'annotations' list"),
        ('{"images": [{"id": 1}], "annotations": []}', r"images\[0\] lacks 'file_name', 'height', 'width'"),
        ('{"images": [], "annotations": [{"id": 5}]}', r"annotations\[0\] lacks 'segmentation'"),
    ],
)
def test_corrupt_instances_json(tmp_path, text, says):
    path = tmp_path / "instances.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=says) as info:
        load_instances(path)
    assert str(path) in str(info.value)


def test_refs_naming_an_image_missing_from_instances(tmp_path):
    refs = [{"ref_id": 1, "ann_id": 2, "image_id": 3, "split": "val", "sentences": [{"sent_id": 4, "sent": "x"}]}]
    folder = _refer_layout(tmp_path, pickle.dumps(refs), instances='{"images": [], "annotations": []}')
    with pytest.raises(ValueError, match="image 3 is not in") as info:
        ReferDataset(tmp_path, "refcoco").samples("val")
    assert str(folder / "instances.json") in str(info.value)


# --- weight files -------------------------------------------------------------------------------


def test_truncated_safetensors_segmenter(tmp_path):
    from refam.segment import load_segmenter

    for size in (1000, TOY_WEIGHTS.stat().st_size // 2):
        path = tmp_path / f"sam2_cut_{size}.safetensors"
        path.write_bytes(TOY_WEIGHTS.read_bytes()[:size])
        with pytest.raises(ValueError, match="could not be read as a safetensors file") as info:
            load_segmenter(path)
        assert str(path) in str(info.value)


def test_hostile_torch_checkpoint_is_refused_without_running_code(tmp_path):
    import torch

    from refam.segment import load_segmenter

    marker = tmp_path / "marker"
    path = tmp_path / "sam_vit_b.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "evil": _WritesMarker(marker)}, path)
    with pytest.raises(ValueError, match="weights-only torch checkpoint") as info:
        load_segmenter(path)
    assert str(path) in str(info.value) and not marker.exists()


def _diffusers_stub(root):
    root.mkdir()
    (root / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    (root / "transformer").mkdir()
    (root / "transformer" / "config.json").write_text("{}")
    return root


def test_diffusers_folder_without_weights_fails_before_loading(tmp_path, monkeypatch):
    import diffusers

    from refam.pipeline import RefAMPipeline

    def no_loading(*_args, **_kwargs):
        raise AssertionError("tried to load weights before checking the folder")

    monkeypatch.setattr(diffusers.FluxTransformer2DModel, "from_pretrained", no_loading)
    folder = _diffusers_stub(tmp_path / "flux")
    with pytest.raises(ValueError, match="is incomplete") as info:
        RefAMPipeline.from_pretrained(folder)
    message = str(info.value)
    assert str(folder) in message and "no weights in transformer/" in message
    assert all(f"no {part}/ folder" in message for part in ("vae", "text_encoder", "text_encoder_2"))


def test_diffusers_folder_with_a_truncated_weight_file(tmp_path):
    from refam.loading import check_diffusers_folder

    folder = _diffusers_stub(tmp_path / "flux")
    cut = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    cut.write_bytes(TOY_WEIGHTS.read_bytes()[: TOY_WEIGHTS.stat().st_size // 2])
    with pytest.raises(ValueError, match="is truncated") as info:
        check_diffusers_folder(folder, ["transformer"])
    assert str(cut) in str(info.value)
    (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "diffusion_pytorch_model-00002-of-00002.safetensors"}})
    )
    shutil.copy(TOY_WEIGHTS, cut)
    with pytest.raises(ValueError, match="names shards that are missing: diffusion_pytorch_model-00002"):
        check_diffusers_folder(folder, ["transformer"])


# --- annotation ids that would become paths ----------------------------------------------------


def _ytvos(root, videos):
    meta = root / "meta_expressions" / "valid" / "meta_expressions.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"videos": videos}))
    return meta


@pytest.mark.parametrize(
    ("videos", "field"),
    [
        ({"bike": {"frames": ["00000"], "expressions": {"../../../../x": {"exp": "a bike"}}}}, "expression id"),
        ({"a/b": {"frames": ["00000"], "expressions": {"0": {"exp": "a bike"}}}}, "video name"),
        ({"..": {"frames": ["00000"], "expressions": {"0": {"exp": "a bike"}}}}, "video name"),
        ({"bike": {"frames": ["../00000"], "expressions": {"0": {"exp": "a bike"}}}}, "frame name"),
        ({"bike": {"frames": ["00000"], "expressions": {"a\\b": {"exp": "a bike"}}}}, "expression id"),
    ],
)
def test_ytvos_ids_that_leave_the_output_folder_are_refused(tmp_path, videos, field):
    from refam.data.video_datasets import RefYoutubeVosDataset

    meta = _ytvos(tmp_path, videos)
    with pytest.raises(ValueError, match="would leave the output folder; refusing") as info:
        RefYoutubeVosDataset(tmp_path, "valid")
    assert str(meta) in str(info.value) and field in str(info.value)


def test_mevis_traversal_and_malformed_meta(tmp_path):
    from refam.data.video_datasets import MevisDataset

    meta = tmp_path / "valid_u" / "meta_expressions.json"
    meta.parent.mkdir()
    meta.write_text(json.dumps({"videos": {"/etc": {"frames": [], "expressions": {}}}}))
    with pytest.raises(ValueError, match="video name '/etc'") as info:
        MevisDataset(tmp_path, "valid_u")
    assert str(meta) in str(info.value)
    for bad, says in [
        ({"videos": {"v": {"frames": ["0"], "expressions": {"0": {"exp": "x"}}}}}, "missing 'anno_id'"),
        ({"videos": {"v": {"expressions": {}}}}, "missing 'frames'"),
        ({"videos": []}, 'no "videos" object'),
    ]:
        meta.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=says) as info:
            MevisDataset(tmp_path, "valid_u")
        assert str(meta) in str(info.value)
    meta.write_text("{not json")
    with pytest.raises(ValueError, match="is not readable JSON"):
        MevisDataset(tmp_path, "valid_u")


def test_davis_text_annotation_with_a_traversal_video_name(tmp_path):
    from refam.data.video_datasets import RefDavisDataset

    (tmp_path / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("../judo\njudo\n")
    notes = tmp_path / "davis_text_annotations"
    notes.mkdir()
    (notes / "Davis17_annot1.txt").write_text('../judo 1 "a person"\n')
    with pytest.raises(ValueError, match="video name .line 1. '../judo'") as info:
        RefDavisDataset(tmp_path, "annot1", "val")
    assert str(notes / "Davis17_annot1.txt") in str(info.value)
    (notes / "Davis17_annot1.txt").write_text('judo one "a person"\n')
    with pytest.raises(ValueError, match="object id 'one' is not a number"):
        RefDavisDataset(tmp_path, "annot1", "val")


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "a\\b", "/abs", "x\0y", "C:x", 3])
def test_safe_component_refuses(value):
    with pytest.raises(ValueError, match="meta.json"):
        safe_component(value, "video name", "meta.json")


@pytest.mark.parametrize("value", ["bike", "0", "00005", "a b", "…ü", ".hidden", "a..b"])
def test_safe_component_accepts(value):
    assert safe_component(value, "video name", "meta.json") == value


# --- video files and frame folders --------------------------------------------------------------


def test_video_without_pyav_says_pip_install_av(tmp_path, monkeypatch):
    from refam.segment.sam2_video import open_frames

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 64)
    monkeypatch.setitem(sys.modules, "av", None)  # "import av" now fails as if it were not installed
    with pytest.raises(ValueError, match="pip install av") as info:
        open_frames(video, tmp_path / "scratch")
    assert str(video) in str(info.value)


def _write_video(path, frames=3, audio_only=False, video_stream_only=False):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        if not audio_only:
            stream = container.add_stream("mpeg4", rate=5)
            stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        if audio_only or video_stream_only:
            # The muxer writes its header with the first packet; audio supplies it when no video frame does.
            sound = container.add_stream("aac", rate=8000)
            sound.layout = "mono"
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate = 8000
            for packet in [*sound.encode(chunk), *sound.encode()]:
                container.mux(packet)
        if not (audio_only or video_stream_only):
            for i in range(frames):
                image = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 60 * i, np.uint8), format="rgb24")
                for packet in stream.encode(image):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def _random_bytes(path):
    path.write_bytes(os.urandom(4000))
    return path


def test_a_good_tiny_video_decodes(tmp_path):
    from refam.segment.sam2_video import open_frames

    frames = open_frames(_write_video(tmp_path / "clip.mp4"), tmp_path / "scratch")
    assert len(frames) == 3 and frames.size == (24, 32)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: _write_video(p.with_suffix(".mp4"), audio_only=True), "has no video stream"),
        (lambda p: _write_video(p.with_suffix(".mkv"), video_stream_only=True), "decoded to zero frames"),
        (lambda p: _random_bytes(p.with_suffix(".mp4")), "cannot be decoded"),
    ],
    ids=["audio_only", "zero_frames", "random_bytes"],
)
def test_undecodable_videos(tmp_path, make, says):
    pytest.importorskip("av")
    from refam.segment.sam2_video import open_frames

    video = make(tmp_path / "clip")
    with pytest.raises(ValueError, match=says) as info:
        open_frames(video, tmp_path / "scratch")
    assert str(video) in str(info.value)


@pytest.mark.parametrize("keep", [50, 3000])
def test_truncated_first_frame_names_the_file(tmp_path, keep):
    from refam.segment.sam2_video import FolderFrames

    first = sorted(shared_path("video_clips", "bike", "frames").glob("*.jpg"))[0]
    (tmp_path / first.name).write_bytes(first.read_bytes()[:keep])
    with pytest.raises(ValueError, match="cannot be decoded|not an image|truncated") as info:
        FolderFrames(tmp_path)
    assert str(tmp_path / first.name) in str(info.value)


def test_verify_reads_every_frames_size_from_its_header(tmp_path):
    from PIL import Image

    from refam.segment.sam2_video import FolderFrames

    Image.new("RGB", (32, 48)).save(tmp_path / "00000.jpg")
    turned = Image.new("RGB", (48, 32))  # stored sideways, upright by its EXIF orientation (6)
    exif = turned.getexif()
    exif[0x0112] = 6
    turned.save(tmp_path / "00001.jpg", exif=exif)
    frames = FolderFrames(tmp_path)
    frames.verify()
    assert frames.frame(1).shape == (48, 32, 3)
    Image.new("RGB", (40, 48)).save(tmp_path / "00002.jpg")
    with pytest.raises(ValueError, match="one size") as info:
        FolderFrames(tmp_path).verify()
    assert str(tmp_path / "00002.jpg") in str(info.value)
