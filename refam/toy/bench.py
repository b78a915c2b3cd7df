"""``refam bench toy``: the toy model on held-out scenes, with baselines and an ablation table.

Point accuracy (point inside the named object's mask) and mIoU (flood-fill masks) per expression
kind, on scenes drawn from EVAL_SEED, which training never uses. ``--prompts``: every point
strategy and mask choice at the native size and two non-square sizes, on the validation scenes
(VALIDATION_SEED, which neither training nor the tests draw from) — where the default is chosen.
``--features``: the single pass against several σ and RF-inversion (refam.features).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from refam.options import RefAMOptions
from refam.pipeline import RefAMPipeline
from refam.toy.evaluate import baselines, evaluate
from refam.toy.model import load_toy, weights_for
from refam.toy.segmenter import toy_segmenter
from refam.toy.worlds import WORLDS
from refam.variants import POINT_STRATEGIES, SCORES


def _load(args: argparse.Namespace) -> tuple[RefAMPipeline, Any]:
    """The toy pipeline (with its world's segmenter) and its world's scenes package."""
    weights = args.weights or (weights_for(args.world) if args.world else None)
    backend = load_toy(weights)
    return RefAMPipeline(backend, toy_segmenter(backend.world), RefAMOptions()), WORLDS[backend.world]


def ablations(num_blocks: int, num_double: int) -> list[tuple[str, dict[str, Any]]]:
    """(name, option overrides) rows; the first row is the full pipeline."""
    first = max(1, num_blocks // 3)
    return [
        ("full RefAM", {}),
        *[(f"score {score}", {"score": score}) for score in SCORES],
        ("no magnets", {"magnets": ()}),
        # Table 5's variants (random draws: seed 0 here; the paper averages five seeds).
        ("magnets: stop words only", {"magnet_variant": "stop_words"}),
        ("magnets: random stop words", {"magnet_variant": "random_stop_words"}),
        ("magnets: random vectors", {"magnet_variant": "random_vectors"}),
        ("space: attention output", {"space": "output"}),
        ("no stop-word filter", {"drop_stop_words": False}),
        ("GAS removed (paper rule)", {"remove_gas": True}),
        ("GAS removed (others rule)", {"remove_gas": True, "gas_rule": "others"}),
        ("no noun-phrase filter", {"noun_phrase": False}),
        ("noun phrase encoded", {"np_mode": "encode"}),
        ("no spatial bias", {"spatial_bias": False}),
        ("spatial: absolute cues", {"spatial_rule": "absolute"}),
        ("branch: caption pooled", {"branch_pooled": "caption"}),
        ("sigma 0.25", {"sigma": 0.25}),
        ("sigma 0.5", {"sigma": 0.5}),
        ("sigma 0.75", {"sigma": 0.75}),
        ("double blocks only", {"blocks": tuple(range(num_double))}),
        (f"first {first} blocks", {"blocks": tuple(range(first))}),
        ("skip first 60%", {"skip_fraction": 0.6}),
    ]


def feature_rows() -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides): the feature modes of refam.features against the single pass (paper App. A.1)."""
    return [
        ("single pass (default σ)", {}),
        ("sigmas 0.25, 0.5, 0.75", {"sigmas": (0.25, 0.5, 0.75)}),
        ("inversion (RF defaults)", {"features": "inversion"}),
        ("inversion, plain denoising", {"features": "inversion", "eta": 0.0}),
        ("inversion, gamma 0", {"features": "inversion", "gamma": 0.0}),
        # Around the toy's own σ (0.1): its maps are best at low noise (the ablation table's σ rows).
        ("sigmas 0.05, 0.1, 0.2", {"sigmas": (0.05, 0.1, 0.2)}),
        ("inversion, steps 21-27 (σ <= 0.25)", {"features": "inversion", "collect_steps": tuple(range(21, 28))}),
    ]


# The native size and two non-square ones: off the native grid a coarse argmax lands on edges.
PROMPT_SIZES = ((48, 48), (72, 100), (130, 90))


def prompt_rows() -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides): each point strategy with SAM's own mask choice, then the extra prompts."""
    return [
        *[(strategy, {"point_strategy": strategy}) for strategy in POINT_STRATEGIES],
        ("interior + agreement", {"point_strategy": "interior", "mask_choice": "agreement"}),
        ("interior + box", {"point_strategy": "interior", "box_prompt": True}),
        ("interior + 1 negative", {"point_strategy": "interior", "negative_points": 1}),
    ]


def run_prompts(args: argparse.Namespace) -> dict[str, Any]:
    pipe, world = _load(args)
    kinds = world.scenes.ALL_KINDS
    examples = world.scenes.make_eval_set(world.validation_seed, args.n, kinds=kinds)
    caption = None if args.empty_caption else "scene"
    table = []
    for size in PROMPT_SIZES:
        for name, overrides in prompt_rows():
            start = time.perf_counter()
            res = evaluate(pipe, examples, size=size, caption=caption, **overrides)
            table.append({"size": list(size), "setting": name, "overrides": overrides, "results": res,
                          "seconds": round(time.perf_counter() - start, 1)})
            print(f"{f'{size[0]}x{size[1]}':<9}" + _row(name, res, kinds) + _near(res, kinds), flush=True)
    return {"model": pipe.backend.name, "n_per_kind": args.n, "seed": world.validation_seed, "kinds": kinds,
            "table": table}


def _near(res: dict[str, dict[str, float]], kinds: tuple[str, ...]) -> str:
    return "   near-miss " + " ".join(f"{res[k]['near_miss'] * 100:4.1f}" for k in kinds if k in res)


def print_prompt_report(report: dict[str, Any]) -> None:
    kinds = report["kinds"]
    print(f"\nPrompt strategies — {report['model']}; {report['n_per_kind']} validation scenes per kind "
          f"(seed {report['seed']}); PA / mIoU / near-miss (off the target by < 1 patch), %")
    print(f"{'size':<9}{'setting':<24}" + "".join(f"{k[:14]:>22}" for k in kinds))
    for row in report["table"]:
        cells = "".join(
            f"{r['pa'] * 100:8.1f}{r['miou'] * 100:7.1f}{r['near_miss'] * 100:7.1f}"
            for k in kinds if (r := row["results"].get(k))
        )
        size = f"{row['size'][0]}x{row['size'][1]}"
        print(f"{size:<9}{row['setting']:<24}{cells}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    pipe, world = _load(args)
    backend, scenes = pipe.backend, world.scenes
    kinds = scenes.ALL_KINDS
    examples = scenes.make_eval_set(scenes.EVAL_SEED, args.n, kinds=kinds)
    # make_eval_set draws each kind from its own stream, so the ablation set is a prefix of it.
    ablation_examples = scenes.make_eval_set(scenes.EVAL_SEED, min(args.n, args.ablation_n), kinds=kinds)
    caption = None if args.empty_caption else "scene"
    rows = ablations(backend.num_blocks, backend.transformer.config.num_layers)
    plan = [
        (name, overrides, examples if i == 0 else ablation_examples)
        for i, (name, overrides) in enumerate(rows)
    ]
    if args.features:
        # Inversion runs 2 x 28 passes per scene: every row on the ablation subset.
        plan = [(name, overrides, ablation_examples) for name, overrides in feature_rows()]
    elif not args.ablations:
        plan = plan[:1]
    elif len(ablation_examples) < len(examples):
        # Ablation rows run on a subset; they compare against the full pipeline on that same subset.
        plan.insert(1, (rows[0][0], rows[0][1], ablation_examples))
    table = []
    for name, overrides, chosen in plan:
        start = time.perf_counter()
        res = evaluate(pipe, chosen, caption=caption, **overrides)
        table.append(
            {
                "setting": name,
                "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
                "n_per_kind": len(chosen) // len(kinds),
                "results": res,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(_row(name, res, kinds), flush=True)
    return {
        "weights": str(args.weights or (weights_for(args.world).name if args.world else "embedded")),
        "world": world.name,
        "kinds": kinds,
        "model": backend.name,
        "n_per_kind": args.n,
        "caption": "empty" if args.empty_caption else "scene caption",
        "defaults": {
            "sigma": backend.operating_point.sigma,
            "resolution": backend.operating_point.resolution,
            "score": backend.operating_point.score,
        },
        "baselines": baselines(examples),
        "table": table,
    }


def standard_error(p: float, n: int) -> float:
    """Binomial standard error of an accuracy ``p`` measured on ``n`` scenes."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n else float("nan")


def _row(name: str, res: dict[str, dict[str, float]], kinds: tuple[str, ...], width: int = 24) -> str:
    cells = "".join(
        f"{res[k]['pa'] * 100:7.1f}±{standard_error(res[k]['pa'], res[k]['n']) * 100:3.1f}{res[k]['miou'] * 100:6.1f}"
        for k in kinds if k in res
    )
    return f"{name:<{width}}{cells}"


def print_report(report: dict[str, Any]) -> None:
    kinds = report["kinds"]
    print(
        f"\nToy benchmark — {report['model']}; {report['n_per_kind']} held-out scenes per kind; "
        f"caption: {report['caption']}; defaults {report['defaults']}"
    )
    labels = [f"{row['setting']} (n={row['n_per_kind']})" for row in report["table"]]
    width = max(24, *(len(label) + 2 for label in labels))
    header = "".join(f"{k[:16]:>17}" for k in kinds)
    print(f"{'':<{width}}{header}")
    print(f"{'setting':<{width}}" + "".join(f"{'PA ± SE':>11}{'mIoU':>6}" for _ in kinds))
    for label, row in zip(labels, report["table"], strict=True):
        print(_row(label, row["results"], kinds, width))
    print("baselines (PA):")
    for name in ("chance", "centre", "random_object"):
        print(
            f"  {name:<{width - 2}}"
            + "".join(f"{report['baselines'][k][name] * 100:7.1f}{'':>10}" for k in kinds)
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="refam bench toy", description=__doc__)
    p.add_argument("--weights", default=None, help="toy safetensors (default: the embedded one)")
    p.add_argument("--world", choices=sorted(WORLDS), default=None,
                   help="the committed model of this toy world (default: the embedded default's)")
    p.add_argument("--n", type=int, default=300, help="held-out scenes per expression kind")
    p.add_argument("--ablations", action="store_true", help="also run the ablation table")
    p.add_argument(
        "--ablation-n", type=int, default=100, help="held-out scenes per kind for each ablation row"
    )
    p.add_argument(
        "--empty-caption", action="store_true", help="condition on the empty prompt, not the scene caption"
    )
    p.add_argument(
        "--features", action="store_true", help="single pass vs several σ vs RF-inversion, on --ablation-n scenes per kind"
    )
    p.add_argument(
        "--prompts", action="store_true", help="point strategies and mask choices at three sizes (validation scenes)"
    )
    p.add_argument("--json", default=None, help="write the report here too")
    args = p.parse_args(argv)
    if args.prompts:
        report = run_prompts(args)
        print_prompt_report(report)
    else:
        report = run(args)
        print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
