"""``refam segment IMAGE "expression" ...``: one image, one mask per referring expression."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .arguments import add_method_options, add_model_options, check_args, pixel_limit
from .models import load_pipeline, note_ignored, ran_with
from .progress import StageLog
from .writers import fresh_out, write_image_outputs

__all__ = ["add_segment_parser", "cmd_segment"]


def add_segment_parser(sub: Any) -> None:
    seg = sub.add_parser("segment", help="segment one image by one or more referring expressions")
    seg.add_argument("image", help="image file (PNG/JPEG/...; gray, RGBA and 16-bit accepted)")
    seg.add_argument("expressions", nargs="+", help="referring expression(s), e.g. 'the cat on the left'")
    seg.add_argument("--out", default="refam_out", help="output folder (default: ./refam_out)")
    seg.add_argument("--quiet", action="store_true", help="no progress lines")
    add_method_options(seg)
    add_model_options(seg)
    seg.set_defaults(func=cmd_segment)


def cmd_segment(args: argparse.Namespace) -> int:
    from refam.images import load_image
    from refam.pipeline import normalize_expressions

    log = StageLog(args.quiet)
    expressions = normalize_expressions(args.expressions)  # fail on empty input before loading anything
    check_args(args)
    image = load_image(args.image, **pixel_limit(args))
    pipe = load_pipeline(args, log)
    note_ignored(args, pipe, log)
    results = pipe.segment(image, expressions, args.caption, progress=log)
    meta = {
        "image": str(args.image),
        "image_size": [int(image.shape[0]), int(image.shape[1])],
        "model": pipe.backend.name,
        "caption": args.caption,
        "options": ran_with(pipe),
    }
    out = fresh_out(args.out, log)
    summary = write_image_outputs(out, image, results, meta)
    log(f"wrote {len(results)} result(s) to {out}")
    for r in summary["results"]:
        print(json.dumps({k: r[k] for k in ("expression", "point", "mask_area", "warnings")}))
    return 0
