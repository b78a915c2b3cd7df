"""The command line's progress: one line per stage on stderr, so stdout stays machine-readable."""

from __future__ import annotations

import sys
import time

__all__ = ["StageLog"]


class StageLog:
    """One line per stage with the elapsed time, on stderr so stdout stays machine-readable."""

    def __init__(self, quiet: bool = False) -> None:
        self.start = time.perf_counter()
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[refam {time.perf_counter() - self.start:7.1f}s] {message}", file=sys.stderr, flush=True)
