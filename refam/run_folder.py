"""The output folder of a run: checked before any model loads, claimed by one writer, tied to the
configuration that filled it, and never left by a path built from data or user text.

``refam segment`` rewrites its folder (the previous run's files, listed in its ``summary.json``,
are removed first). ``refam eval`` resumes into its folder: ``run.json`` records the configuration
the records were made with, a rerun with another configuration is refused instead of reporting
the first run's numbers under the second run's label, and a lock per rank keeps two processes
from computing every sentence twice.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from refam.data import safe_component

__all__ = [
    "CONFIG_FILE",
    "check_config",
    "check_out",
    "claim",
    "clear_previous_run",
    "inside",
    "prepare_out",
]

CONFIG_FILE = "run.json"


def check_out(path: str | os.PathLike[str] | None, flag: str = "--out") -> Path:
    """The output folder, proven writable (or creatable) now, before anything is computed for it.
    Nothing is created: a run that fails later leaves no empty folder behind."""
    if path is None or not str(path).strip():
        raise ValueError(f"{flag} is empty: give a folder for the results, e.g. {flag} refam_out")
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} is an existing file, not a folder: give a folder name")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {out} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {out} cannot be written ({existing} is read-only to you): choose a folder you can write to")
    return out


def prepare_out(path: str | os.PathLike[str] | None, flag: str = "--out") -> Path:
    """:func:`check_out`, then the folder created."""
    out = check_out(path, flag)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag} {out} cannot be created ({exc.strerror or exc}): choose a folder you can write to") from exc
    return out


def inside(out: Path, *parts: str, source: str = "the dataset") -> Path:
    """``out / parts...`` where every part is checked by :func:`refam.data.safe_component`."""
    path = out
    for part in parts:
        path = path / safe_component(str(part), "name", source)
    return path


@contextmanager
def claim(out: Path, rank: int = 0) -> Iterator[None]:
    """Hold this rank's lock on ``out`` for the duration; a second writer is refused, not queued.

    The lock is an OS file lock, so a killed run releases it and a resume is never blocked."""
    path = out / f"records.rank{rank}.lock"
    handle = open(path, "a+")  # noqa: SIM115 (closed in finally)
    try:
        if not _try_lock(handle):
            raise ValueError(
                f"another refam run is writing to {out} (rank {rank}; lock {path.name}): wait for it to finish, "
                "or give this run its own --out"
            )
        yield
    finally:
        handle.close()  # closing releases the lock


def _try_lock(handle: Any) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _differences(stored: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key, "(unset)"), wanted.get(key, "(unset)")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs.extend(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            diffs.append(f"{prefix}{key}: {a} -> {b}")
    return diffs


def _canonical(config: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-equal form, so a tuple read back as a list compares equal."""
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def check_config(out: Path, config: Mapping[str, Any], *, partial: bool = False, has_results: bool = False) -> None:
    """Refuse to add to ``out`` when it holds results of another configuration; record ``config``
    when it is the folder's first (``partial``: only compare the keys given, write nothing — the
    check a command makes before its model loads, with what it knows by then)."""
    path = out / CONFIG_FILE
    wanted = _canonical(config)
    if not path.is_file():
        if has_results:
            raise ValueError(
                f"{out} holds records but no {CONFIG_FILE}, so which configuration made them is unknown; "
                "give this run a new --out (or remove the old records)"
            )
        if not partial:
            tmp = path.with_name(f".{CONFIG_FILE}.{os.getpid()}")
            tmp.write_text(json.dumps(wanted, indent=2, sort_keys=True))
            os.replace(tmp, path)  # ranks may race here; each writes the same, whole file
        return
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is unreadable ({exc}); give this run a new --out") from exc
    if partial:
        stored = {k: v for k, v in stored.items() if k in wanted}
    diffs = _differences(stored, wanted)
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise ValueError(
            f"{out} holds results of another configuration ({shown}); resuming would mix the two runs. "
            "Give this run a new --out, or rerun with the stored configuration"
        )


def clear_previous_run(out: Path) -> int:
    """Remove the files the previous run into ``out`` listed in its ``summary.json`` (never anything
    else); returns how many paths were removed."""
    summary = out / "summary.json"
    if not summary.is_file():
        return 0
    try:
        listed = json.loads(summary.read_text()).get("files", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        listed = []
    removed = 0
    for name in [*listed, "summary.json"]:
        try:
            target = inside(out, *Path(str(name)).parts, source=str(summary))
        except ValueError:
            continue  # a hand-edited summary naming a path outside the folder is not followed
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        else:
            continue
        removed += 1
    return removed
