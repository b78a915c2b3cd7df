"""What to type when an optional package is missing.

A library user installs the package (or this project's extra); a ComfyUI user has neither pip
extras nor this project on PyPI, only the pack's ``requirements.txt`` run in ComfyUI's own Python.
The node pack says which of the two we are (:func:`use_comfyui_hints`) when ComfyUI loads it.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["SAM2_CUDA_HINT", "install_hint", "missing_package", "requirement_name", "use_comfyui_hints"]

SAM2_CUDA_HINT = "on a machine without a CUDA toolchain, put SAM2_BUILD_CUDA=0 in front of the pip command"

_pack_dir: Path | None = None


def use_comfyui_hints(pack_dir: str | Path | None) -> None:
    """Name the pack's requirements file in every hint from now on (``None``: library hints)."""
    global _pack_dir
    _pack_dir = Path(pack_dir) if pack_dir is not None else None


def requirement_name(line: str) -> str | None:
    """The package a ``requirements.txt`` line names, lower-cased (None for a blank or comment line)."""
    line = line.split("#")[0].strip()
    return re.split(r"[<>=!~\[; ]", line)[0].lower() if line else None


def _pack_requirements() -> set[str]:
    path = _pack_dir / "requirements.txt" if _pack_dir is not None else None
    if path is None or not path.is_file():
        return set()
    return {name for line in path.read_text().splitlines() if (name := requirement_name(line))}


def install_hint(packages: str, extra: str | None = None) -> str:
    """The command that installs ``packages`` where this code runs."""
    if _pack_dir is not None:
        if set(packages.lower().split()) <= _pack_requirements():
            return f"pip install -r custom_nodes/{_pack_dir.name}/requirements.txt (in ComfyUI's Python environment)"
        return f"pip install {packages} (in ComfyUI's Python environment)"
    if extra:
        return f"pip install {packages} (or pip install 'comfyui-refam[{extra}]')"
    return f"pip install {packages}"


def missing_package(what: str, packages: str, extra: str | None = None, *, cuda_note: bool = False) -> str:
    """``"<what> needs <packages>: <command>"``, with the SAM2 CUDA hint where it applies."""
    message = f"{what} needs {packages}: {install_hint(packages, extra)}"
    return f"{message}; {SAM2_CUDA_HINT}" if cuda_note else message
