"""Shared fixtures. Test data is read in place from ``../shared/data`` (see its README)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"shared test data missing: {path} (the repo expects ../shared/data beside it)")
    return path


@pytest.fixture(scope="session")
def t5_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(shared_path("tokenizers", "t5")))


@pytest.fixture(scope="session")
def clip_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(shared_path("tokenizers", "clip_l")))


# The Qwen tokenizer ComfyUI ships (FLUX.2 klein's Qwen3, Z-Image's, Qwen-Image's Qwen2.5-VL): the
# January-2026 core's copy, whose <think> / </think> are single tokens as Qwen3's are.
QWEN_TOKENIZER = REPO_ROOT.parent / "shared" / "comfyui" / "0.10.0-hiddenswitch" / "comfy" / "text_encoders" / "qwen25_tokenizer"


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from transformers import AutoTokenizer

    if not QWEN_TOKENIZER.is_dir():
        pytest.fail(f"ComfyUI's Qwen tokenizer missing: {QWEN_TOKENIZER} (the repo expects ../shared beside it)")
    return AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))


@pytest.fixture(scope="session")
def two_cats_path() -> Path:
    return shared_path("coco_two_cats", "000000039769.png")


# Model families a ComfyUI core may lack, and a file of the core whose text says it has them: the
# October-2025 core predates FLUX.2, so its tests do not apply there (deselected, not skipped).
COMFY_MODEL_FAMILIES = {
    "flux2": ("comfy/ldm/flux/model.py", "global_modulation"),
    # Qwen-Image whose attention call hands q/k/v as [B, H, T, Dh], the layout the capture reads.
    "qwen_image": ("comfy/ldm/qwen_image/model.py", "skip_reshape=True"),
    "z_image": ("comfy/ldm/lumina/model.py", "pad_tokens_multiple"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tree = os.environ.get("COMFYUI_PATH")
    if not tree:
        return
    absent = set()
    for family, (path, marker) in COMFY_MODEL_FAMILIES.items():
        source = Path(tree, path)
        if not (source.is_file() and marker in source.read_text(encoding="utf-8", errors="replace")):
            absent.add(family)
    dropped = [item for item in items if any(m.args[0] in absent for m in item.iter_markers("comfy_model"))]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]
        print(f"\nComfyUI at {tree} has no {', '.join(sorted(absent))}: {len(dropped)} test(s) of it deselected")


def assert_pipeline_segments(pipe, label: str) -> None:
    """A loaded pipeline runs a 70x100 image with two expressions to heatmaps and points in the
    image, and names its architecture; at resolution 128 the model sees 112x160 pixels, 7x10 tokens."""
    import numpy as np

    image = (np.random.default_rng(0).random((70, 100, 3)) * 255).astype(np.uint8)
    results = pipe.segment(image, ["the cat on the left", "a dog"], caption="two animals")
    assert len(results) == 2
    for result in results:
        assert result.heatmap.shape == (70, 100) and 0 <= result.point.x < 100 and 0 <= result.point.y < 70
    captured = pipe.capture(image, pipe.tokenize(["a dog"])[0], "two animals")
    assert captured.meta["architecture"] == label and captured.geometry.grid == (7, 10)
