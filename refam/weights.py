"""Weight files -> clean state dicts -> modules, with errors that say what does not fit.

Shared by the segmenters and the FLUX loader: finding a file by name in model folders, reading
``.safetensors`` / pickled checkpoints, unwrapping and strict loading.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "count_blocks",
    "find_weights_file",
    "load_state_dict_file",
    "load_strict",
    "safetensors_problem",
    "strip_prefixes",
    "unwrap_state_dict",
]

CHECKPOINT_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt")
_SAFETENSORS = (".safetensors", ".sft")  # .sft: Black Forest Labs' own name for safetensors files
_MAX_HEADER = 100_000_000  # the safetensors library's own limit; larger means not a safetensors file

# Wrappers seen around SAM/SAM2 weights: DataParallel/DDP, Lightning, torch.compile, repacks.
_PREFIXES = ("module.", "model.", "_orig_mod.")
# Where training scripts nest the weights ({"model": sd} is the official SAM2 layout).
_NESTING_KEYS = ("model", "state_dict", "module", "model_state_dict")


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint (bare, or nested under ``"model"`` etc.)."""
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return dict(tensors)
        nested = next((obj[k] for k in _NESTING_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            if tensors:
                # Tensors beside bookkeeping entries (e.g. an "epoch" int): keep the tensors.
                return dict(tensors)
            break
        obj = nested
    keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"{source} holds no state dict of tensors (top level: {keys})")


def strip_prefixes(
    state_dict: Mapping[str, torch.Tensor], part_prefixes: Sequence[str] = ()
) -> dict[str, torch.Tensor]:
    """Remove the wrapper prefixes (``module.``, ``model.``...) that every key carries; then, for a
    part stored inside a combined checkpoint, the first of ``part_prefixes`` that any key carries,
    from the keys that carry it.

    A wrapper wraps every key, so a prefix only some keys carry is a real name and stays. A part
    prefix (``model.diffusion_model.`` of a ComfyUI checkpoint that also holds the VAE and text
    encoders) marks the wanted keys only; the rest are left for the part's loader to ignore."""
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
    for prefix in part_prefixes:
        if any(k.startswith(prefix) for k in sd):
            return {k.removeprefix(prefix): v for k, v in sd.items()}
    return sd


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read ``.pt``/``.pth``/``.bin``/``.ckpt`` (``torch.load(weights_only=True)``) or
    ``.safetensors`` onto the CPU, unwrapped and with wrapper prefixes stripped."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"{path.name}: unsupported checkpoint type {suffix!r}; expected {', '.join(CHECKPOINT_SUFFIXES)}"
        )
    raw = _read_safetensors(path) if suffix in _SAFETENSORS else _read_torch_checkpoint(path)
    return strip_prefixes(unwrap_state_dict(raw, source=str(path)))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError (a bad or cut-off header/data) derives from Exception only
        raise ValueError(
            f"{path} could not be read as a safetensors file ({type(exc).__name__}: {exc}); it may be "
            "truncated (an interrupted download) or not a safetensors file: download it again"
        ) from exc


def _read_torch_checkpoint(path: Path) -> object:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types; all mean "not a plain checkpoint"
        raise ValueError(
            f"{path} could not be read as a weights-only torch checkpoint ({type(exc).__name__}: {exc}); "
            "convert it to .safetensors or re-save its state_dict"
        ) from exc


def safetensors_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (``None`` when it is), from its header alone:
    the 8-byte header length, the JSON header, and the data's end against the file size."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or length > size - 8:
                return f"{path} is truncated or not a safetensors file ({size} bytes, too short for its header)"
            if length > _MAX_HEADER:
                return f"{path} is not a safetensors file (a {length}-byte header)"
            header = json.loads(f.read(length))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})"
    if 8 + length + end > size:
        return f"{path} is truncated ({size} bytes; its header describes {8 + length + end})"
    return None


def count_blocks(keys: Iterable[str], prefix: str) -> int:
    """How many distinct ``prefix<i>.`` blocks the keys hold (depth read off a checkpoint)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in keys if (m := pattern.match(k))})


def find_weights_file(
    name: str | Path, search_dirs: Sequence[str | Path], what: str, where_hint: str = ""
) -> Path:
    """The file ``name`` denotes: an existing path as given, else ``dir / name`` for each search
    directory in order (a name without a suffix also tries the weight suffixes), else the first
    match anywhere below a search directory (ComfyUI lets users sort models into subfolders).
    ``FileNotFoundError`` lists every place tried and says where to put the file."""
    given = Path(name).expanduser()
    names = [given]
    if given.suffix.lower() not in CHECKPOINT_SUFFIXES:
        names += [given.with_name(given.name + suffix) for suffix in CHECKPOINT_SUFFIXES]
    candidates = list(names)
    dirs = [Path(d).expanduser() for d in search_dirs]
    if not given.is_absolute():
        candidates += [d / n for d in dirs for n in names]
    for path in candidates:
        if path.is_file():
            return path
    if not given.is_absolute():
        for d in dirs:
            if d.is_dir():
                hits = sorted(p for n in names for p in d.rglob(n.name) if p.is_file())
                if hits:
                    return hits[0]
    tried = "\n".join(f"  {p}" for p in dict.fromkeys(candidates))
    where = (
        "Put the file into one of: " + ", ".join(str(d) for d in dirs)
        if dirs and not given.is_absolute()
        else "Pass the full path of the file"
    )
    raise FileNotFoundError(
        f"{what} {str(name)!r} not found. Searched:\n{tried}\n{where}.{' ' + where_hint if where_hint else ''}"
    )


def load_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with a ``ValueError`` listing the keys/shapes that disagree."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label} ({len(items)}): {', '.join(items[:5])}{', ...' if len(items) > 5 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
            if items
        ]
        raise ValueError(f"the checkpoint does not fit {what}: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
