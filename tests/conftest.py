"""Shared fixtures. Test data is read in place from ``../shared/data`` (see its README)."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def two_cats_path() -> Path:
    return shared_path("coco_two_cats", "000000039769.png")
