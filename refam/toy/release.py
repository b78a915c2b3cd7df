"""Turn a training run into the committed toy weights: choose the toy's operating point (σ and
the score its maps are read with) on validation scenes, then write.

    python -m refam.toy.release runs/toy            # -> refam/toy/weights/

The operating point is what a user of the toy gets without asking. It is chosen here on scenes
from the world's VALIDATION_SEED, which neither the trainer (TRAIN_SEED) nor the benchmark and the
tests (EVAL_SEED) draw from, so the reported numbers are not tuned on their own scenes. FLUX and
Mochi run at the paper's operating point; the toy is not FLUX, so it runs at its own.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from refam.attention import SCORES
from refam.options import RefAMOptions
from refam.pipeline import RefAMPipeline
from refam.toy.evaluate import evaluate
from refam.toy.model import ToyConfig, load_toy, weights_for
from refam.toy.worlds import WORLDS

SIGMAS = (0.1, 0.25, 0.4, 0.5, 0.75)


def validate(
    weights: Path, n: int = 60, sigmas: tuple[float, ...] = SIGMAS, scores: tuple[str, ...] = SCORES
) -> dict[tuple[float, str], dict[str, float]]:
    """Point accuracy per (σ, score) and kind on ``n`` validation scenes per kind of the weights'
    world's selection kinds (the kinds the model must ground by itself; spatial words only
    reweight them)."""
    backend = load_toy(weights)
    world = WORLDS[backend.world]
    pipe = RefAMPipeline(backend, None, RefAMOptions())
    examples = world.scenes.make_eval_set(world.validation_seed, n, kinds=world.selection_kinds)
    return {
        (sigma, score): {kind: res["pa"] for kind, res in evaluate(pipe, examples, sigma=sigma, score=score).items()}
        for score in scores
        for sigma in sigmas
    }


def best_point(results: dict[tuple[float, str], dict[str, float]]) -> tuple[float, str]:
    """The (σ, score) with the highest mean point accuracy over the validated kinds; ties go to
    the lower σ, then to the score listed first in :data:`refam.attention.SCORES` (the paper's)."""
    return max(results, key=lambda p: (sum(results[p].values()), -p[0], -SCORES.index(p[1])))


def write_release(weights: Path, out: Path, default_sigma: float, default_score: str, validation: dict) -> None:
    """``weights`` with its operating point and the validation results in its config, written to ``out``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(weights), framework="pt") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    config = ToyConfig.from_json(metadata["config"])
    config.default_sigma, config.default_score = default_sigma, default_score
    config.extra.pop("sigma_validation", None)
    seed = WORLDS[config.world].validation_seed
    config.extra["operating_point_validation"] = {"seed": seed, "point_accuracy": validation}
    metadata["config"] = config.to_json()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=metadata)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m refam.toy.release", description=__doc__)
    p.add_argument("run", type=Path, help="a training run's --out folder")
    p.add_argument("--out", type=Path, default=None, help="where the release weights go (default: the "
                   "committed file of the run's world)")
    p.add_argument("--n", type=int, default=60, help="validation scenes per kind")
    args = p.parse_args(argv)
    weights = args.run / "toy_flux.safetensors"
    if args.out is None:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            args.out = weights_for(ToyConfig.from_json(f.metadata()["config"]).world)
    results = validate(weights, args.n)
    sigma, score = best_point(results)
    for (s, sc), res in results.items():
        mark = "  <- default" if (s, sc) == (sigma, score) else ""
        print(f"sigma {s:<5} {sc:<18}" + "".join(f"  {k} {v:.3f}" for k, v in res.items()) + mark)
    write_release(weights, args.out, sigma, score, {f"{s}/{sc}": r for (s, sc), r in results.items()})
    log = args.run / "log.jsonl"
    if log.is_file():
        stem = args.out.name.removeprefix("toy_flux").removesuffix(".safetensors")
        shutil.copyfile(log, args.out.parent / f"training_log{stem}.jsonl")
    print(json.dumps({"weights": str(args.out), "default_sigma": sigma, "default_score": score}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
