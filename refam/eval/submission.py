"""The Ref-YouTube-VOS submission archive (the benchmark is scored by its evaluation server)."""

from __future__ import annotations

import zipfile
from pathlib import Path

__all__ = ["zip_submission"]


def zip_submission(out: str | Path) -> Path:
    """``OUT/submission.zip`` holding ``Annotations/...`` as the Ref-YouTube-VOS server expects."""
    out = Path(out)
    path = out / "submission.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for png in sorted((out / "Annotations").rglob("*.png")):
            z.write(png, png.relative_to(out))
    return path
