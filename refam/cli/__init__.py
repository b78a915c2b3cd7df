"""``refam`` command line: segment images and clips by referring expressions, evaluate, benchmark.

refam segment IMAGE "the cat on the left" ["another expression" ...] --out DIR
refam segment-video FRAMES_OR_MP4 "the dog" --segmenter sam2.1_hiera_large.pt --out DIR
refam eval refcoco --split val --data-root DATA --out DIR
refam diagnose IMAGE "the red cup" --out DIR     (or --pairs PAIRS.jsonl: GAS statistics)
refam bench [capture|...]

One module per concern: ``arguments`` (shared options and their checks), ``models`` (pipeline and
tracker from arguments), ``writers`` (output files), ``segment_command`` / ``video_command`` /
``eval_command`` / ``diagnose_command`` (one subcommand each), ``distributed`` (the ranks' barrier), ``progress``.
"""

from __future__ import annotations

import argparse
import sys

from .diagnose_command import add_diagnose_parser
from .eval_command import add_eval_parser
from .segment_command import add_segment_parser
from .video_command import add_video_parser

__all__ = ["USER_ERRORS", "build_parser", "main"]

# Failures that are the input's, not the program's: answered in one line, no traceback.
# ImportError: the pack's own missing-package errors say what to install (refam.install_hints).
USER_ERRORS = (
    ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, NotImplementedError, ImportError,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refam", description="RefAM zero-shot referring segmentation")
    sub = parser.add_subparsers(dest="command", required=True)
    add_segment_parser(sub)
    add_video_parser(sub)
    add_eval_parser(sub)
    add_diagnose_parser(sub)
    bench = sub.add_parser(
        "bench", help="benchmarks that print numbers (capture overhead, amortisation, memory)"
    )
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for python -m refam.bench")
    bench.set_defaults(func=lambda a: __import__("refam.bench", fromlist=["main"]).main(a.rest))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"refam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("refam: interrupted (finished records are kept; rerun the same command to resume)", file=sys.stderr)
        return 130
