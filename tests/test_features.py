"""Feature-mode options and the running average of several passes (refam.features)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from refam.attention import BlockCapture, ExpressionLayout
from refam.features import FeatureOptions, PassAverage, parse_step_spec
from refam.options import RefAMOptions


def test_defaults_are_the_single_pass_and_rf_inversions_published_setting():
    f = FeatureOptions()
    assert (f.mode, f.sigmas, f.passes) == ("single", None, 1)
    assert (f.inversion_steps, f.gamma, f.eta, f.eta_stop) == (28, 0.5, 1.0, 0.25)
    inv = dataclasses.replace(f, mode="inversion")
    assert inv.passes == 28 and inv.controlled_steps == 7  # int(0.25 * 28), as diffusers' stop_timestep
    assert dataclasses.replace(inv, collect_steps=(5, 2)).collected_steps() == (2, 5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "inverted"}, "unknown features"),
        ({"sigmas": ()}, "at least one noise level"),
        ({"sigmas": (0.5, 0.0)}, "sigma must be in"),
        ({"mode": "inversion", "sigmas": (0.5,)}, "sigmas average single passes"),
        ({"collect_steps": (1,)}, "collect_steps picks denoising steps of the inversion mode"),
        ({"mode": "inversion", "collect_steps": ()}, "at least one denoising step"),
        ({"mode": "inversion", "inversion_steps": 4, "collect_steps": (4,)}, "past the last denoising step"),
        ({"inversion_steps": 2.5}, "inversion_steps must be a whole number"),
        ({"gamma": -0.1}, "gamma"),
        ({"eta": 1.2}, "eta must be in"),
        ({"step_aggregation": "median"}, "unknown step_aggregation"),
    ],
)
def test_bad_options_are_refused_where_built(fields, message):
    with pytest.raises(ValueError, match=message):
        FeatureOptions(**fields)


def test_flat_overrides_on_refam_options():
    opts = RefAMOptions().replace(features="inversion", gamma=0.2, collect_steps=(0, 1))
    assert opts.features == FeatureOptions(mode="inversion", gamma=0.2, collect_steps=(0, 1))
    assert opts.replace(seed=3).features == opts.features
    several = RefAMOptions().replace(sigmas=(0.5, 0.75))
    assert several.features.sigmas == (0.5, 0.75)
    with pytest.raises(ValueError, match="sigmas average single passes"):
        opts.replace(sigmas=(0.5,))
    # Switching modes drops what only the other mode reads.
    assert opts.replace(features="single").features == FeatureOptions(gamma=0.2)
    assert several.replace(features="inversion").features == FeatureOptions(mode="inversion")
    with pytest.raises(ValueError, match="features must be a FeatureOptions"):
        RefAMOptions(features="inversion")


def test_step_specs():
    assert parse_step_spec("all") is None and parse_step_spec(" ") is None
    assert parse_step_spec("0-3, 7,2") == (0, 1, 2, 3, 7)
    for bad in ("3-1", "x", "1-", "-2"):
        with pytest.raises(ValueError):
            parse_step_spec(bad)


def _record(index: int, scores: torch.Tensor, mass: torch.Tensor) -> BlockCapture:
    return BlockCapture(f"double.{index}", index, {"scaled_dot": scores}, mass)


def test_average_of_maps_reads_back_as_the_mean_map():
    layout = ExpressionLayout((2, 3))
    g = torch.Generator().manual_seed(0)
    passes = [[_record(i, torch.randn(1, 4, 5, generator=g) * 5, torch.rand(1, 5, generator=g)) for i in (0, 1)] for _ in range(3)]
    before = [[r.scores["scaled_dot"].clone() for r in records] for records in passes]
    average = PassAverage(layout)
    for records in passes:
        average.add(records)
    blocks = average.blocks()
    assert [b.index for b in blocks] == [0, 1] and average.passes == 3
    for i, block in enumerate(blocks):
        for start, end in layout.spans:
            want = torch.stack([p[i].scores["scaled_dot"][..., start:end].softmax(-1) for p in passes]).mean(0)
            torch.testing.assert_close(block.scores["scaled_dot"][..., start:end].softmax(-1), want)
        torch.testing.assert_close(block.text_mass, torch.stack([p[i].text_mass for p in passes]).mean(0))
    # The records added are not modified by the averaging.
    for records, kept in zip(passes, before, strict=True):
        assert all(torch.equal(r.scores["scaled_dot"], k) for r, k in zip(records, kept, strict=True))


def test_average_of_scores_and_mismatched_passes():
    layout = ExpressionLayout((4,))
    a, b = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    average = PassAverage(layout, "scores")
    average.add([_record(0, a, torch.ones(1, 4))])
    average.add([_record(0, b, torch.ones(1, 4))])
    torch.testing.assert_close(average.blocks()[0].scores["scaled_dot"], (a + b) / 2)
    with pytest.raises(RuntimeError, match="same blocks"):
        average.add([_record(1, a, torch.ones(1, 4))])
    with pytest.raises(RuntimeError, match="no pass"):
        PassAverage(layout).blocks()
