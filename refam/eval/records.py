"""An eval run's folder: the shard a rank takes, its append-only records file, the resume keys and
the ``run.json`` configuration a resumed run must match."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from refam.run_folder import check_config, claim

__all__ = [
    "Shard",
    "check_limit",
    "load_records",
    "open_records",
    "open_run",
    "refer_run_keys",
    "run_config",
    "scored_keys",
    "video_run_keys",
    "write_record",
]


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        """``RANK`` / ``WORLD_SIZE`` as ``torchrun`` and ``accelerate launch`` set them."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    def take(self, items: list[Any]) -> list[Any]:
        return items[self.rank :: self.world]


def check_limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of images / videos, got {limit!r} (leave it out for all)")
    return limit


def _records_path(out: Path, rank: int) -> Path:
    return out / f"records.rank{rank}.jsonl"


def open_records(out: Path, rank: int) -> IO[str]:
    """This rank's records file for appending. A line cut by a kill stays on its own (and is
    ignored by :func:`load_records`), never glued to the next record."""
    path = _records_path(out, rank)
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    return open(path, "a")  # noqa: SIM115 (the caller's with-block closes it)


def write_record(sink: IO[str], record: dict[str, Any]) -> None:
    # flushed per record: a killed run loses nothing it finished
    sink.write(json.dumps(record) + "\n")
    sink.flush()


def load_records(out: str | Path) -> list[dict[str, Any]]:
    """Every rank's records, one per key: a key written twice by a resumed run counts once, and a
    scored record wins over a skip of the same key (the image was restored and the run resumed)."""
    seen: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(out).glob("records.rank*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: its sentence is redone on resume
            if not isinstance(record, dict) or "key" not in record:
                continue
            kept = seen.get(record["key"])
            if kept is None or "skipped" in kept or "skipped" not in record:
                seen[record["key"]] = record
    return list(seen.values())


def scored_keys(out: Path) -> set[str]:
    return {r["key"] for r in load_records(out) if "skipped" not in r}


def _digest(mapping: Mapping[str, Any] | None) -> str | None:
    """A short fingerprint of a captions map: a run conditioned on other captions is another run."""
    if not mapping:
        return None
    return hashlib.sha1(json.dumps(dict(mapping), sort_keys=True).encode()).hexdigest()[:12]


def run_config(pipeline: Any, overrides: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """What decides a run's numbers: ``extra`` (dataset, split, caption source...), the model and
    segmenter, and every method option as resolved for the backend."""
    resolve = getattr(pipeline, "resolved", None)
    if callable(resolve):
        options: Any = dataclasses.asdict(resolve(**overrides))
    else:  # a stand-in pipeline (tests, custom wrappers): its type and overrides are what is known
        options = {k: repr(v) for k, v in overrides.items()}
    backend = getattr(pipeline, "backend", None)
    segmenter = getattr(pipeline, "segmenter", None)
    return {
        **extra,
        "model": getattr(backend, "name", type(pipeline).__name__),
        "segmenter": getattr(segmenter, "name", None if segmenter is None else type(segmenter).__name__),
        "options": options,
    }


def refer_run_keys(dataset: Any, split: str, overlap: str, caption_mode: str) -> dict[str, Any]:
    """The part of a refer run's configuration known before any model loads."""
    return {
        "dataset": getattr(dataset, "dataset", type(dataset).__name__),
        "split": split,
        "overlap": overlap,
        "caption_mode": caption_mode,
        "captions": _digest(getattr(dataset, "captions", None)) if caption_mode == "file" else None,
    }


def video_run_keys(dataset: Any, captions: Mapping[str, str] | None, **protocol: Any) -> dict[str, Any]:
    """The part of a video run's configuration known before any model loads (``protocol``: prompt
    frame, candidates, points_from, mochi)."""
    return {"dataset": type(dataset).__name__, "split": getattr(dataset, "split", None),
            "captions": _digest(captions), **protocol}


@contextmanager
def open_run(out: Path, shard: Shard, config: Mapping[str, Any]) -> Iterator[None]:
    """This rank's claim on ``out``, after checking ``config`` against the records already there."""
    out.mkdir(parents=True, exist_ok=True)
    with claim(out, shard.rank):
        has_results = any(out.glob("records.rank*.jsonl")) or (out / "Annotations").is_dir()
        check_config(out, config, has_results=has_results)
        yield
