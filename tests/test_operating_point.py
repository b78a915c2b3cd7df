"""One home for σ, resolution and guidance: every default comes from the backend's declared
operating point, every explicit value is used as given — in the library, the CLI and the nodes."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from refam.architectures.flux import FLUX_IMAGE
from refam.architectures.mochi import MOCHI_VIDEO
from refam.operating_point import FROM_BACKEND, OperatingPoint
from refam.options import RefAMOptions
from refam.pipeline import RefAMPipeline


def test_the_papers_operating_points():
    # FLUX "timestep 750" (t = 1000·σ), Mochi "timestep 990" (t = 1000·(1 − σ)).
    assert (FLUX_IMAGE.sigma, FLUX_IMAGE.resolution, FLUX_IMAGE.guidance) == (0.75, 1024, 3.5)
    assert (MOCHI_VIDEO.sigma, MOCHI_VIDEO.resolution, MOCHI_VIDEO.guidance) == (0.01, 480, None)


def test_unset_options_come_from_the_point_and_explicit_ones_stay():
    opts = RefAMOptions()
    assert opts.sigma is FROM_BACKEND and opts.resolution is FROM_BACKEND and opts.guidance is FROM_BACKEND
    for point in (MOCHI_VIDEO, FLUX_IMAGE):
        filled = opts.at(point)
        assert (filled.sigma, filled.resolution, filled.guidance) == (point.sigma, point.resolution, point.guidance)
        assert filled.heatmap.score == point.score == "concept_attention"
    toy_like = OperatingPoint(sigma=0.1, resolution=48, score="scaled_dot")
    assert opts.at(toy_like).heatmap.score == "scaled_dot"
    assert RefAMOptions().replace(score="attention_probs").at(toy_like).heatmap.score == "attention_probs"
    # an explicit value equal to another model's default is still explicit
    explicit = RefAMOptions(sigma=0.75, resolution=1024).at(MOCHI_VIDEO)
    assert (explicit.sigma, explicit.resolution) == (0.75, 1024)
    # resolution=None (the image's own size) is a value, not "unset"
    assert RefAMOptions(resolution=None).at(FLUX_IMAGE).resolution is None


class _RecordingBackend:
    """A backend that records what it was asked to capture at, then stops the run."""

    name = "recording"
    text_pad_length = 32

    def __init__(self, point: OperatingPoint, tokenizer) -> None:
        self.operating_point = point
        self.tokenizer = tokenizer
        self.calls: list[dict] = []

    def capture(self, images, expressions, caption="", **kwargs):
        self.calls.append(kwargs)
        raise _Stop


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [({}, (0.01, 480)), ({"sigma": 0.75}, (0.75, 480)), ({"resolution": 1024}, (0.01, 1024))],
)
def test_segment_video_mochi_from_python_runs_at_mochis_point(t5_tokenizer, overrides, expected):
    from refam.segment.sam2_video import ArrayFrames
    from refam.video import segment_video

    backend = _RecordingBackend(MOCHI_VIDEO, t5_tokenizer)
    backend.modality = "video"  # a clip backend: one pass over the whole clip
    frames = ArrayFrames(np.zeros((7, 32, 48, 3), dtype=np.uint8))
    with pytest.raises(_Stop):
        segment_video(RefAMPipeline(backend), None, frames, "the dog", **overrides)
    call = backend.calls[0]
    assert (call["sigma"], call["resolution"]) == expected


def test_the_image_pipeline_passes_the_backends_point(t5_tokenizer):
    backend = _RecordingBackend(FLUX_IMAGE, t5_tokenizer)
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    for options, expected in (
        (RefAMOptions(), (0.75, 1024, 3.5)),
        (RefAMOptions(sigma=0.5, guidance=1.0, resolution=512), (0.5, 512, 1.0)),
    ):
        with pytest.raises(_Stop):
            RefAMPipeline(backend, None, options).segment(image, "a cat")
        call = backend.calls[-1]
        assert (call["sigma"], call["resolution"], call["guidance"]) == expected


def _cli_options(argv: list[str]) -> RefAMOptions:
    from refam.cli import build_parser
    from refam.cli.arguments import options_from_args

    return options_from_args(build_parser().parse_args(["segment", "x.png", "a cat", *argv]))


def test_cli_leaves_unset_values_to_the_backend_and_keeps_given_ones():
    assert _cli_options([]).at(MOCHI_VIDEO).sigma == 0.01
    given = _cli_options(["--sigma", "0.75", "--resolution", "1024", "--guidance", "3.5"]).at(MOCHI_VIDEO)
    assert (given.sigma, given.resolution, given.guidance) == (0.75, 1024, 3.5)


def test_toy_runs_at_its_own_sigma_unless_one_is_given():
    toy = RefAMPipeline.from_pretrained(None)
    own = toy.backend.operating_point.sigma
    assert toy.resolved().sigma == own
    assert RefAMPipeline.from_pretrained(None, options=RefAMOptions(sigma=0.75)).resolved().sigma == 0.75


def test_nodes_and_backends_read_the_same_declaration():
    from nodes import NODE_SPECS
    from refam.backends import comfy_flux, comfy_mochi

    defaults = {(s.node_id, p.name): p.default for s in NODE_SPECS for p in s.inputs}
    assert defaults[("RefAMCaptureAttentionFlux", "sigma")] == FLUX_IMAGE.sigma
    assert defaults[("RefAMCaptureAttentionFlux", "resolution")] == FLUX_IMAGE.resolution
    assert defaults[("RefAMCaptionConditioning", "guidance")] == FLUX_IMAGE.guidance
    assert defaults[("RefAMSegmentAllInOne", "guidance")] == FLUX_IMAGE.guidance
    assert defaults[("RefAMCaptureAttentionMochi", "sigma")] == MOCHI_VIDEO.sigma
    assert defaults[("RefAMCaptureAttentionMochi", "resolution")] == MOCHI_VIDEO.resolution
    flux = inspect.signature(comfy_flux.capture_flux).parameters
    assert (flux["sigma"].default, flux["resolution"].default) == (FLUX_IMAGE.sigma, FLUX_IMAGE.resolution)
    mochi = inspect.signature(comfy_mochi.capture_mochi).parameters
    assert (mochi["sigma"].default, mochi["resolution"].default) == (MOCHI_VIDEO.sigma, MOCHI_VIDEO.resolution)


def test_expressions_are_padded_as_bfl_pads_each_flux(t5_tokenizer, clip_tokenizer):
    """FLUX's T5 runs without a mask, so the padding after an expression shapes its tokens: FLUX.1-dev
    (guidance-distilled) pads to 512, schnell to 256, as BFL's reference does; the toy to its own 32."""
    from refam.architectures.flux import FLUX_SCHNELL
    from refam.backends.diffusers_flux import DiffusersFlux
    from tiny_models import tiny_flux_backend, tiny_flux_transformer

    schnell = tiny_flux_backend(t5_tokenizer, clip_tokenizer)
    dev = DiffusersFlux(
        transformer=tiny_flux_transformer(guidance_embeds=True),
        vae=schnell.vae,
        t5=schnell.t5,
        t5_tokenizer=t5_tokenizer,
        clip=schnell.clip,
        clip_tokenizer=clip_tokenizer,
    )
    assert (dev.operating_point, dev.text_pad_length) == (FLUX_IMAGE, 512)
    assert (schnell.operating_point, schnell.text_pad_length) == (FLUX_SCHNELL, 256)
    tokens, _cues = RefAMPipeline(schnell).tokenize("the cat on the left")
    assert len(tokens[0].ids) == 256
    assert RefAMPipeline.from_pretrained(None).backend.text_pad_length == 32
