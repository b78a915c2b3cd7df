"""``refam diagnose``: the paper's Figs. 1, 3 and 4 for one image, or its GAS statistics over many.

refam diagnose IMAGE "the red cup" [...] --out DIR
    per expression: entropy per block (Fig. 4), text-to-text attention per block (Fig. 3, top),
    per-token text-to-text / text-to-image mass with the GAS marked (Fig. 1): PNG + JSON.
refam diagnose --pairs PAIRS.jsonl --out DIR
    GAS statistics over a dataset run (one JSON line per pair: {"image", "expression"[, "caption"]},
    image paths relative to the file): which words the sinks fall on, with and without the
    magnets, and how often a colour-word sink moves to a magnet (§3.4).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .arguments import add_method_options, add_model_options, check_args, pixel_limit
from .models import load_pipeline, note_ignored, ran_with
from .progress import StageLog
from .writers import fresh_out, slug

__all__ = ["add_diagnose_parser", "cmd_diagnose", "read_pairs"]

PAIRS_HELP = 'a JSON-lines file, one {"image": PATH, "expression": TEXT[, "caption": TEXT]} per line'


def add_diagnose_parser(sub: Any) -> None:
    p = sub.add_parser(
        "diagnose", help="attention analysis: entropy, text-to-text attention and GAS (Figs. 1, 3, 4; PNG + JSON)"
    )
    p.add_argument("image", nargs="?", help="image file")
    p.add_argument("expressions", nargs="*", help="referring expression(s)")
    p.add_argument("--pairs", default=None, help=f"GAS statistics over many expressions: {PAIRS_HELP}")
    p.add_argument("--out", default="refam_diagnose", help="output folder (default: ./refam_diagnose)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_method_options(p)
    add_model_options(p)
    p.set_defaults(func=cmd_diagnose)


def read_pairs(path: str | Path) -> list[dict[str, str]]:
    """The pairs of a ``--pairs`` file, image paths resolved against the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--pairs file {path} not found; it is {PAIRS_HELP}")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--pairs {path} line {number} is not JSON ({exc}); the file is {PAIRS_HELP}") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not isinstance(entry.get("expression"), str):
            raise ValueError(f"--pairs {path} line {number} lacks an 'image' or 'expression' string; the file is {PAIRS_HELP}")
        caption = entry.get("caption", "")
        pairs.append({"image": str(path.parent / entry["image"]), "expression": entry["expression"], "caption": caption if isinstance(caption, str) else ""})
    if not pairs:
        raise ValueError(f"--pairs {path} holds no pairs; it is {PAIRS_HELP}")
    return pairs


def cmd_diagnose(args: argparse.Namespace) -> int:
    from refam.pipeline import normalize_expressions

    log = StageLog(args.quiet)
    if args.pairs and (args.image or args.expressions):
        raise ValueError("give either IMAGE and expressions or --pairs, not both")
    if not args.pairs and not (args.image and args.expressions):
        raise ValueError('give an image and at least one expression (refam diagnose IMAGE "the red cup"), or --pairs FILE')
    check_args(args)
    if args.pairs:
        pairs = read_pairs(args.pairs)
        return _gas_statistics(args, pairs, log)
    expressions = normalize_expressions(args.expressions)
    return _one_image(args, expressions, log)


def _one_image(args: argparse.Namespace, expressions: list[str], log: StageLog) -> int:
    from refam.diagnostic_plots import plot_entropy, plot_text_attention, plot_token_mass
    from refam.diagnostics import diagnose
    from refam.images import load_image

    image = load_image(args.image, **pixel_limit(args))
    pipe = load_pipeline(args, log)
    note_ignored(args, pipe, log)
    opts = pipe.resolved()
    tokenized, _cues = pipe.tokenize(expressions, opts)
    captured = pipe.capture(image, tokenized, args.caption, opts, progress=log)
    out = fresh_out(args.out, log)
    files: list[str] = []
    results = []
    for i, text in enumerate(expressions):
        d = diagnose(captured, i, opts.heatmap)
        stem = f"{i:02d}_{slug(text)}"
        for name, plot in (("entropy", plot_entropy), ("text_attention", plot_text_attention), ("token_mass", plot_token_mass)):
            plot(d, out / f"{stem}_{name}.png")
            files.append(f"{stem}_{name}.png")
        (out / f"{stem}_diagnosis.json").write_text(json.dumps(d.to_json(), indent=1))
        files.append(f"{stem}_diagnosis.json")
        results.append({"expression": text, "gas": [p for p, g in zip(d.pieces, d.gas, strict=True) if g],
                        "entropy_mean_range": [min(d.entropy_mean), max(d.entropy_mean)], "stem": stem})
    summary = {"image": str(args.image), "model": pipe.backend.name, "caption": args.caption,
               "options": ran_with(pipe), "results": results, "files": files}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(f"wrote {len(files)} file(s) to {out}")
    for r in results:
        print(json.dumps({k: r[k] for k in ("expression", "gas", "entropy_mean_range")}))
    return 0


def _gas_statistics(args: argparse.Namespace, pairs: list[dict[str, str]], log: StageLog) -> int:
    from refam.diagnostic_plots import plot_gas_statistics
    from refam.diagnostics import GasStatistics, diagnose
    from refam.images import load_image

    images = {p["image"]: load_image(p["image"], **pixel_limit(args)) for p in pairs}  # all read before loading
    pipe = load_pipeline(args, log)
    note_ignored(args, pipe, log)
    opts = pipe.resolved()
    bare = opts.replace(magnet_variant="none")
    stats = GasStatistics()
    for n, pair in enumerate(pairs, 1):
        runs = []
        for run in (opts, bare):
            tokenized, _ = pipe.tokenize([pair["expression"]], run)
            captured = pipe.capture(images[pair["image"]], tokenized, pair["caption"] or args.caption, run)
            runs.append(diagnose(captured, 0, run.heatmap))
        stats.add(*runs)
        if n % 10 == 0 or n == len(pairs):
            log(f"{n}/{len(pairs)} expressions")
    out = fresh_out(args.out, log)
    data = stats.to_json()
    (out / "gas_statistics.json").write_text(json.dumps(data, indent=2))
    plot_gas_statistics(stats, out / "gas_statistics.png")
    summary = {"pairs": str(args.pairs), "model": pipe.backend.name, "options": ran_with(pipe), **data,
               "files": ["gas_statistics.json", "gas_statistics.png"]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(data))
    return 0
