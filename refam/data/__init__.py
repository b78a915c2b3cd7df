"""Benchmark datasets in their official layouts (nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

__all__ = ["read_json", "safe_component"]


def read_json(path: str | Path, what: str, hint: str) -> Any:
    """The JSON in ``path``; a missing file or one that is not JSON is named as ``what`` with ``hint``
    (what the file should be)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found; {hint}")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what} {path} is not JSON ({exc}); {hint}") from exc


def _unsafe_reason(value: str) -> str | None:
    if not value:
        return "is empty"
    if "\0" in value:
        return "contains a NUL byte"
    if "/" in value or "\\" in value:
        return "contains a path separator"
    if value in (".", ".."):
        return "is a relative path step"
    # Windows reads "C:x" as a drive; a name must mean the same file on every system.
    if PureWindowsPath(value).name != value or PurePosixPath(value).name != value:
        return "is not a plain file name"
    return None


def safe_component(value: object, what: str, source: str | Path) -> str:
    """``value`` as a single path component safe to join under an output or data folder.

    Video names, expression ids and frame names come from annotation files and end up in paths
    (``OUT/Annotations/<video>/<expression>/``); one like ``../../x`` would write outside the
    output folder. ``what`` names the field and ``source`` the file it came from, for the error.
    """
    if not isinstance(value, str):
        raise ValueError(
            f"{what} {value!r} in {source} is a {type(value).__name__}, not a string; "
            "fix that entry of the annotation file"
        )
    reason = _unsafe_reason(value)
    if reason is not None:
        raise ValueError(
            f"{what} {value!r} in {source} {reason} and would leave the output folder; refusing. "
            "Fix or remove that entry of the annotation file"
        )
    return value
