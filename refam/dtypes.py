"""The one table of dtype names users may write (CLI flags, node widgets, library arguments)."""

from __future__ import annotations

import torch

__all__ = ["DTYPE_NAMES", "parse_dtype"]

DTYPE_NAMES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """A torch dtype from ``name`` (``"bf16"``, ``"torch.bfloat16"``, ``"Float32"``...) or as given."""
    if isinstance(name, torch.dtype):
        return name
    key = name.lower().removeprefix("torch.") if isinstance(name, str) else name
    if key not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_NAMES)}, got {name!r}")
    return DTYPE_NAMES[key]
