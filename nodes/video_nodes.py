"""Video: pick candidate frames for the image chain, then SAM2 carries the masks through the clip."""

from __future__ import annotations

import numpy as np
import torch

from refam.architectures.mochi import MOCHI_VIDEO
from refam.noise import MAX_SEED
from refam.operating_point import check_resolution
from refam.segment.sam2_video import ArrayFrames
from refam.variants import check_choice
from refam.video import FrameFinding, candidate_frames, frame_evidence, prompt_and_track
from refam.visualize import mask_overlay

from . import payloads as P
from .image_chain import image_batch, to_comfy_image
from .spec import Param, Result

MODES = ("first", "evenly_spaced", "index")
PROMPT_FRAMES = ("first", "best")


def _clip(frames: torch.Tensor) -> ArrayFrames:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
        raise ValueError(f"frames must be a ComfyUI IMAGE batch [T, H, W, C]; got {getattr(frames, 'shape', frames)}")
    return ArrayFrames(frames)


def pick_frame(frames, mode: str, candidates: int, index: int) -> tuple:
    clip = _clip(frames)
    choice = {"first": "first", "evenly_spaced": "best", "index": int(index)}[mode]
    chosen = candidate_frames(len(clip), choice, candidates)
    selection = P.FrameSelection(indices=chosen, num_frames=len(clip), size=clip.size)
    return frames[chosen], selection, ", ".join(str(i) for i in chosen)


def propagate_masks(
    segmenter,
    frames,
    points: P.Points,
    heatmaps: P.Heatmaps,
    points_from: int,
    direction: str,
    prompt_frame: str,
    selection: P.FrameSelection | None = None,
) -> tuple:
    from refam.backends.comfy_runtime import block_progress, throw_if_interrupted

    clip = _clip(frames)
    n_expr = len(points.texts)
    indices = selection.indices if selection is not None else list(range(points.n_images))
    check_choice("prompt_frame", prompt_frame, PROMPT_FRAMES)
    if len(indices) != points.n_images or heatmaps.n_images != points.n_images:
        raise ValueError(
            f"{points.n_images} point sets and {heatmaps.n_images} heatmaps for {len(indices)} selected frames: "
            "connect the Point and Heatmap of the same frames as the Pick Frame selection"
        )
    if tuple(points.image_size) != clip.size or max(indices) >= len(clip):
        raise ValueError(
            f"points were found on {points.image_size[1]}x{points.image_size[0]} frames (up to frame {max(indices)}), "
            f"the clip is {len(clip)} frames of {clip.size[1]}x{clip.size[0]}"
        )
    forward, backward = direction in ("both", "forward"), direction in ("both", "backward")
    masks = torch.zeros(len(clip), n_expr, *clip.size)
    report = []
    bar = block_progress(len(clip) * n_expr)
    # "first" (the paper): the earliest selected frame prompts; "best": the most evident ones.
    ranked = indices if prompt_frame == "best" else [min(indices)]
    with segmenter.tracking() as tracker:
        for e in range(n_expr):
            entry = {f: c * n_expr + e for c, f in enumerate(indices) if f in ranked}
            findings = {
                f: FrameFinding(frame_evidence(heatmaps.grids[i]), points.points[i], points.labels(i), points.box(i))
                for f, i in entry.items()
            }

            def on_frame(done: int, total: int, e: int = e) -> None:
                throw_if_interrupted()
                bar(e * len(clip) + done, n_expr * len(clip))

            result = prompt_and_track(
                tracker, clip, points.texts[e], findings, points_from, forward=forward, backward=backward, on_frame=on_frame
            )
            masks[:, e] = torch.from_numpy(result.masks)
            report.append(
                f"{points.texts[e]!r}: prompts on frames {[p.frame for p in result.prompts]}; evidence "
                + ", ".join(f"{f}:{v:.3f}" for f, v in sorted(result.evidence.items()))
            )
    batch = masks.reshape(-1, *clip.size)
    preview = [mask_overlay(clip.frame(t), masks[t, 0].numpy().astype(bool)) for t in range(len(clip))]
    return batch, to_comfy_image(np.stack(preview)), "\n".join(report)


PICK_INPUTS = (
    Param("frames", "IMAGE", "The clip as an IMAGE batch (e.g. GetVideoComponents after LoadVideo)."),
    Param(
        "mode",
        "COMBO",
        "first: the paper's first frame; evenly_spaced: candidates across the clip for RefAM Propagate's "
        "prompt_frame=best (the most evident one prompts SAM2); index: one chosen frame.",
        default="first",
        options=MODES,
    ),
    Param("candidates", "INT", "Candidate frames in evenly_spaced mode (each costs one DiT image pass).", default=4, min=1, max=64),
    Param("index", "INT", "The frame in index mode.", default=0, min=0, max=100000),
)
PICK_OUTPUTS = (
    Result("frames", "IMAGE", "The selected frames, to run through the RefAM image chain as one batch."),
    Result("selection", P.FRAMES, "Which clip frames those are (for RefAM Propagate)."),
    Result("indices", "STRING", "The selected frame indices."),
)
PROPAGATE_INPUTS = (
    Param("segmenter", P.SEGMENTER, "RefAM Load SAM2 (the same checkpoint serves images and video)."),
    Param("frames", "IMAGE", "The whole clip (kept on the CPU; frames are streamed to SAM2 one at a time)."),
    Param("points", P.POINTS, "RefAM Point on the selected frames."),
    Param("heatmaps", P.HEATMAP, "RefAM Heatmap of the same frames: the most peaked one picks the prompt frame."),
    Param("points_from", "INT", "With prompt_frame=best: positive points from this many of the most evident frames.", default=1, min=1, max=16),
    Param(
        "prompt_frame",
        "COMBO",
        "first (the paper): the earliest of the selected frames prompts SAM2; best: the selected frame whose "
        "heatmap is most peaked.",
        default="first",
        options=PROMPT_FRAMES,
    ),
    Param("direction", "COMBO", "Track forward, backward or both from the prompt frame(s).", default="both", options=("both", "forward", "backward")),
    Param("selection", P.FRAMES, "RefAM Pick Frame's selection; without it the points belong to the clip's first frames.", optional=True),
)
PROPAGATE_OUTPUTS = (
    Result("mask", "MASK", f"One mask per (frame, expression), aligned with the frames. {P.BATCH_ORDER} (image = frame)."),
    Result("preview", "IMAGE", "The first expression's masks over the frames."),
    Result("report", "STRING", "Prompt frames and every candidate's evidence per expression."),
)


def capture_attention_mochi(
    model, vae, frames, conditioning, expression: P.Expressions, sigma: float, seed: int, blocks: str, resolution: int
) -> tuple:
    from refam.architectures.mochi import representative_frames
    from refam.backends.comfy_mochi import capture_mochi, mochi_diffusion_model
    from refam.backends.comfy_runtime import block_progress
    from refam.heatmap import parse_block_spec

    batch = image_batch(frames)
    captured = capture_mochi(
        model,
        vae,
        batch,
        conditioning,
        expression.embeds,
        expression.layout,
        expression.tokenized,
        sigma=sigma,
        seed=seed,
        blocks=parse_block_spec(blocks) or None,
        resolution=check_resolution(resolution or None),
        progress=block_progress(len(mochi_diffusion_model(model).blocks)),
    )
    shown = representative_frames(len(batch), captured.batch_size)
    selection = P.FrameSelection(indices=shown, num_frames=len(batch), size=tuple(batch.shape[1:3]))
    return P.Attention(captured=captured, expressions=expression), frames[shown], selection


MOCHI_INPUTS = (
    Param("model", "MODEL", "Mochi 1 (UNETLoader / CheckpointLoaderSimple), as loaded; not copied, not modified."),
    Param("vae", "VAE", "Mochi's video VAE."),
    Param("frames", "IMAGE", "The clip as an IMAGE batch; padded to 6k+1 frames for Mochi's VAE (padding is dropped)."),
    Param("conditioning", "CONDITIONING", "Caption conditioning from Mochi's T5 (RefAM Caption Conditioning or CLIPTextEncode)."),
    Param("expression", P.EXPRESSION, "Encoded referring expressions (RefAM Referring Expression with Mochi's CLIP)."),
    Param("sigma", "FLOAT", "Noise level (paper: timestep 990 in Mochi's inverted convention = sigma 0.01).", default=MOCHI_VIDEO.sigma, min=0.001, max=1.0, step=0.001),
    Param("seed", "INT", "Seed of the noise.", default=0, min=0, max=MAX_SEED),
    Param("blocks", "STRING", "Blocks to capture: 'all', indices/ranges or names (mochi.20).", default="all"),
    Param("resolution", "INT", "Frames are resized to about resolution² pixels (multiple of 16). 0 = as is.", default=MOCHI_VIDEO.resolution, min=0, max=2048, step=16),
)
MOCHI_OUTPUTS = (
    Result("attention", P.ATTENTION, "Attention per latent frame (each latent frame is one 'image' of the chain)."),
    Result("frames", "IMAGE", "One clip frame per latent frame, for RefAM Heatmap's image input."),
    Result("selection", P.FRAMES, "Which clip frames those are, for RefAM Propagate."),
)
