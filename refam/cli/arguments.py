"""The command line's shared options and their checks: the method and model option groups, the
:class:`~refam.pipeline.RefAMOptions` they stand for, the device, and every argument checked before
a model loads."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from refam.architectures.flux import FLUX_IMAGE
from refam.architectures.mochi import MOCHI_VIDEO
from refam.features import DEFAULT_ETA, DEFAULT_ETA_STOP, DEFAULT_GAMMA, DEFAULT_INVERSION_STEPS
from refam.variants import (
    BRANCH_POOLED,
    DEFAULT_MASK_CHOICE,
    DEFAULT_POINT_STRATEGY,
    FEATURE_MODES,
    GAS_RULES,
    MAGNET_VARIANTS,
    MASK_CHOICES,
    NP_MODES,
    POINT_STRATEGIES,
    SCORES,
    SPACES,
    SPATIAL_RULES,
    STEP_AGGREGATIONS,
)

if TYPE_CHECKING:
    import torch

    from refam.options import RefAMOptions

__all__ = [
    "add_method_options",
    "add_model_options",
    "check_args",
    "device_and_dtype",
    "feature_options",
    "options_from_args",
    "parse_prompt_frame",
    "pixel_limit",
]


def add_method_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method (defaults: the paper's)")
    g.add_argument(
        "--caption", default="", help="caption conditioning the denoising pass (default: empty prompt)"
    )
    g.add_argument(
        "--magnets",
        default=None,
        help="comma-separated attention magnets (default '_,with,to,and,pink'; '' = none)",
    )
    g.add_argument(
        "--magnet-variant",
        choices=MAGNET_VARIANTS,
        default=MAGNET_VARIANTS[0],
        help="Table 5: default (the magnets as given), stop_words (their stop words only), random_stop_words "
        "(stop words drawn from the paper's list), random_vectors (random embeddings in their place), none",
    )
    g.add_argument(
        "--magnet-seed", type=int, default=0, help="seed of the random stop words / vectors (--magnet-variant random_*)"
    )
    g.add_argument(
        "--sigma",
        type=float,
        default=None,
        help=f"noise level σ (default: the model's; FLUX {FLUX_IMAGE.sigma} = timestep 750, "
        f"Mochi {MOCHI_VIDEO.sigma} = timestep 990, the toy its own)",
    )
    g.add_argument("--seed", type=int, default=0, help="noise seed")
    g.add_argument(
        "--features",
        choices=FEATURE_MODES,
        default=FEATURE_MODES[0],
        help="single: one noised pass at σ (the paper's main setting; with --sigmas one pass per σ); inversion: "
        "RF-inversion of the image, then denoising with the maps read on the denoising steps (App. A.1, Table 7)",
    )
    g.add_argument(
        "--sigmas",
        default=None,
        help="comma-separated noise levels for --features single: one pass per σ, maps averaged (e.g. 0.5,0.75,0.9)",
    )
    g.add_argument(
        "--inversion-steps",
        type=int,
        default=DEFAULT_INVERSION_STEPS,
        help=f"inversion: steps of the inversion and of the denoising (default {DEFAULT_INVERSION_STEPS})",
    )
    g.add_argument(
        "--gamma",
        type=float,
        default=DEFAULT_GAMMA,
        help=f"inversion: controller strength of the forward ODE, 0 plain inversion .. 1 the noise (default {DEFAULT_GAMMA})",
    )
    g.add_argument(
        "--eta",
        type=float,
        default=DEFAULT_ETA,
        help=f"inversion: pull of the first denoising steps back to the image, 0 = plain denoising (default {DEFAULT_ETA})",
    )
    g.add_argument(
        "--eta-stop",
        type=float,
        default=DEFAULT_ETA_STOP,
        help=f"inversion: fraction of the denoising steps that --eta applies to (default {DEFAULT_ETA_STOP})",
    )
    g.add_argument(
        "--collect-steps",
        default="all",
        help="inversion: denoising steps whose maps are read, 'all' or indices/ranges from 0 (the noisiest), e.g. 0-13",
    )
    g.add_argument(
        "--step-aggregation",
        choices=STEP_AGGREGATIONS,
        default=STEP_AGGREGATIONS[0],
        help="several passes: average the attention maps (maps) or the scores before one softmax (scores, "
        "ConceptAttention's order)",
    )
    g.add_argument(
        "--guidance",
        type=float,
        default=None,
        help=f"FLUX.1-dev distilled guidance (default {FLUX_IMAGE.guidance}; ignored by schnell)",
    )
    g.add_argument(
        "--resolution",
        type=int,
        default=None,
        help=f"model sees ~N² pixels, aspect kept (default: the model's; FLUX {FLUX_IMAGE.resolution}, "
        f"Mochi {MOCHI_VIDEO.resolution})",
    )
    g.add_argument(
        "--blocks",
        default=None,
        help="comma-separated block indices or names (double.3, single.10) to average",
    )
    g.add_argument(
        "--skip-fraction", type=float, default=0.0, help="drop this leading fraction of blocks (paper Tab. 1)"
    )
    g.add_argument(
        "--score",
        choices=SCORES,
        default=None,
        help="what feeds the softmax over tokens (default: the model's; FLUX/Mochi: concept_attention, "
        "ConceptAttention's query vectors as the paper follows; scaled_dot: attention logits; "
        "attention_probs: the expression's attention on the image)",
    )
    g.add_argument(
        "--spatial-rule",
        choices=SPATIAL_RULES,
        default=SPATIAL_RULES[0],
        help="direction words: hybridgl (the paper uses HybridGL's preprocessing: left/right/middle, the word whose "
        "syntactic head comes first) or absolute (both axes, 'top left')",
    )
    g.add_argument(
        "--np-mode",
        choices=NP_MODES,
        default=NP_MODES[0],
        help="noun phrase: mask (keep its tokens of the expression; the paper's NP filter) or encode (encode it "
        "as its own text, as HybridGL does)",
    )
    g.add_argument(
        "--space",
        choices=SPACES,
        default=SPACES[0],
        help="Table 8: cross_attention (the paper's maps, scored as --score says) or output (ConceptAttention's "
        "attention-output space)",
    )
    g.add_argument(
        "--branch-pooled",
        choices=BRANCH_POOLED,
        default=BRANCH_POOLED[0],
        help="FLUX: the pooled vector modulating the expression branch: zero (ConceptAttention's) or the caption's",
    )
    g.add_argument(
        "--gas-threshold", type=float, default=10.0, help="global-attention-sink threshold (× mean mass; 10)"
    )
    g.add_argument(
        "--gas-rule",
        choices=GAS_RULES,
        default="paper",
        help="GAS reference: the mean over all tokens and blocks (paper) or over the other tokens",
    )
    g.add_argument(
        "--remove-gas", action="store_true", help="drop global attention sinks' maps (the paper reports them only)"
    )
    g.add_argument(
        "--points", type=int, default=1, help="positive points per expression given to the segmenter"
    )
    g.add_argument(
        "--point-strategy",
        choices=POINT_STRATEGIES,
        default=None,
        help=f"where the positive point goes (default {DEFAULT_POINT_STRATEGY}; spread with --points > 1): "
        "argmax (the paper's: the best "
        "patch's centre), upsampled_argmax (best pixel of the smooth heatmap), interior (deepest point of the "
        "heatmap's high region holding the maximum), centroid (that region's centroid, else interior), spread "
        "(--points points inside that region)",
    )
    g.add_argument(
        "--negative-points",
        type=int,
        default=0,
        help="negative points, one per other high region of the heatmap, strongest first (default 0, the paper's)",
    )
    g.add_argument(
        "--box",
        action="store_true",
        help="also prompt the segmenter with the bounding box of the heatmap's target region (the paper: points only)",
    )
    g.add_argument(
        "--mask-choice",
        choices=MASK_CHOICES,
        default=DEFAULT_MASK_CHOICE,
        help=f"which multimask candidate is the mask (default {DEFAULT_MASK_CHOICE}): sam_score (the paper's: the "
        "segmenter's best predicted IoU) or agreement (best IoU with the heatmap's target region)",
    )
    g.add_argument(
        "--heatmap-mask",
        action="store_true",
        help="the mask is the heatmap's target region upsampled to the image; the segmenter is not used "
        "(the paper segments with SAM)",
    )
    for flag, what in (
        ("stop-filter", "drop stop-word maps"),
        ("magnet-filter", "drop magnet maps"),
        ("eos-filter", "drop the EOS map"),
        ("np", "keep only the head noun phrase (spaCy)"),
        ("sb", "spatial bias from direction words"),
    ):
        g.add_argument(f"--no-{flag}", action="store_true", help=f"do not {what}")


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument(
        "--model",
        default=os.environ.get("REFAM_FLUX_MODEL"),
        help="FLUX: diffusers folder, cached hub id, or transformer file (name under ComfyUI models/diffusion_models). "
        "Env REFAM_FLUX_MODEL. Default: FLUX.1 from the Hugging Face cache, else the embedded toy model.",
    )
    g.add_argument(
        "--t5",
        default=None,
        help="T5-XXL file for a single-file transformer (default: t5xxl_fp16.safetensors)",
    )
    g.add_argument(
        "--clip-l",
        default=None,
        help="CLIP-L file for a single-file transformer (default: clip_l.safetensors)",
    )
    g.add_argument(
        "--vae", default=None, help="FLUX VAE file for a single-file transformer (default: ae.safetensors)"
    )
    g.add_argument(
        "--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI folder whose models/ to search"
    )
    g.add_argument(
        "--segmenter",
        default=os.environ.get("REFAM_SEGMENTER"),
        help="SAM / SAM2 checkpoint (path or file name)",
    )
    g.add_argument(
        "--segmenter-variant", default=None, help="e.g. vit_h, sam2.1_hiera_large (default: detected)"
    )
    g.add_argument("--sam2-image-size", type=int, default=None, help=argparse.SUPPRESS)
    g.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: cuda if available)")
    g.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: bf16 on GPU, fp32 on CPU)")
    g.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="refuse images above this many pixels (default: refam.images.MAX_PIXELS); raise it for huge scans",
    )
    g.add_argument(
        "--offload",
        action="store_true",
        help="keep models on the CPU; move each to the device only while it runs",
    )


def options_from_args(args: argparse.Namespace) -> RefAMOptions:
    from refam.expression import DEFAULT_MAGNETS
    from refam.heatmap import parse_block_spec
    from refam.options import RefAMOptions

    magnets = (
        DEFAULT_MAGNETS if args.magnets is None else tuple(m for m in args.magnets.split(",") if m.strip())
    )
    blocks = parse_block_spec(args.blocks or "")
    # σ, guidance and resolution not given on the command line stay the backend's to decide.
    given = {k: getattr(args, k) for k in ("sigma", "guidance", "resolution", "score") if getattr(args, k) is not None}
    return RefAMOptions(magnets=magnets).replace(
        **given,
        seed=args.seed,
        magnet_variant=args.magnet_variant,
        magnet_seed=args.magnet_seed,
        branch_pooled=args.branch_pooled,
        points=args.points,
        point_strategy=args.point_strategy or ("spread" if args.points > 1 else DEFAULT_POINT_STRATEGY),
        negative_points=args.negative_points,
        box_prompt=args.box,
        mask_choice=args.mask_choice,
        heatmap_mask=args.heatmap_mask,
        drop_stop_words=not args.no_stop_filter,
        drop_magnets=not args.no_magnet_filter,
        drop_eos=not args.no_eos_filter,
        remove_gas=args.remove_gas,
        gas_threshold=args.gas_threshold,
        gas_rule=args.gas_rule,
        spatial_rule=args.spatial_rule,
        space=args.space,
        np_mode=args.np_mode,
        noun_phrase=not args.no_np,
        spatial_bias=not args.no_sb,
        blocks=blocks,
        skip_fraction=args.skip_fraction,
        **feature_options(args),
        **pixel_limit(args),
    )


def feature_options(args: argparse.Namespace) -> dict[str, Any]:
    """The feature-mode flags as option fields; those of the other mode are refused when given."""
    from refam.features import parse_step_spec

    inversion = args.features == "inversion"
    out: dict[str, Any] = {"features": args.features, "step_aggregation": args.step_aggregation}
    if args.sigmas is not None:
        if args.sigma is not None:
            raise ValueError("give --sigma (one pass) or --sigmas (one pass each), not both")
        try:
            out["sigmas"] = tuple(float(s) for s in args.sigmas.split(",") if s.strip())
        except ValueError:
            raise ValueError(f"--sigmas takes comma-separated numbers, e.g. 0.5,0.75,0.9; got {args.sigmas!r}") from None
    if args.step_aggregation != STEP_AGGREGATIONS[0] and not inversion and len(out.get("sigmas") or ()) < 2:
        raise ValueError("--step-aggregation joins several passes: add --sigmas with two or more values, or --features inversion")
    collect = parse_step_spec(args.collect_steps)
    given = {
        "inversion_steps": args.inversion_steps != DEFAULT_INVERSION_STEPS,
        "gamma": args.gamma != DEFAULT_GAMMA,
        "eta": args.eta != DEFAULT_ETA,
        "eta_stop": args.eta_stop != DEFAULT_ETA_STOP,
        "collect_steps": collect is not None,
    }
    if not inversion and any(given.values()):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k, v in given.items() if v)
        raise ValueError(f"{flags} apply to --features inversion; add it, or leave them out")
    if inversion:
        out.update(inversion_steps=args.inversion_steps, gamma=args.gamma, eta=args.eta, eta_stop=args.eta_stop)
        out["collect_steps"] = collect
    return out


def device_and_dtype(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    import torch

    from refam.dtypes import parse_dtype

    device = check_device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        # torchrun / accelerate: one GPU per local rank, not every rank on cuda:0.
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    dtype = (
        parse_dtype(args.dtype)
        if args.dtype
        else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )
    return device, dtype


def check_device(text: str) -> torch.device:
    """``--device`` as a device this machine has, or an error that says which ones it has."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"--device {text!r} is not a device name: use cuda, cuda:1, mps or cpu") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(
                f"--device {text}: this machine's torch ({torch.__version__}, {build}) sees no CUDA GPU; "
                "use --device cpu, or install a CUDA build of torch"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {text}: there are {torch.cuda.device_count()} CUDA GPU(s) (cuda:0 ...)")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"--device {text}: Apple MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"--device {text}: RefAM runs on cuda, mps or cpu")
    return device


def check_args(args: argparse.Namespace) -> None:
    """Every argument checked before any model loads or any frame is decoded, so a typo costs
    nothing: options, device, dtype, segmenter file, counts and the output folder."""
    from refam.features import FeatureOptions

    options = options_from_args(args)
    if getattr(args, "video_model", None) and options.features != FeatureOptions():
        raise ValueError(
            "--features inversion and --sigmas are for FLUX image models; Mochi (--video-model) reads one pass "
            "at σ, the paper's video setting: leave them out, or drop --video-model to run FLUX on the frames"
        )
    device_and_dtype(args)
    for flag in ("limit", "candidates", "points_from", "max_pixels"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if getattr(args, "prompt_frame", None) is not None:
        parse_prompt_frame(args.prompt_frame)
    if args.segmenter:
        from refam.model_folders import segmenter_search_dirs
        from refam.segment import find_checkpoint

        find_checkpoint(args.segmenter, segmenter_search_dirs(args.comfyui))
    if not getattr(args, "merge_only", False):
        from refam.run_folder import check_out

        check_out(args.out)


def parse_prompt_frame(text: str) -> str | int:
    if text in ("first", "best"):
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"--prompt-frame must be first, best or a frame index (0, 1, ...), got {text!r}")


def pixel_limit(args: argparse.Namespace) -> dict[str, int]:
    return {} if args.max_pixels is None else {"max_pixels": args.max_pixels}
