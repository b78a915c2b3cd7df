"""The numbers behind Figs. 1, 3 and 4 and the GAS statistics, on planted attention."""

from __future__ import annotations

import math

import pytest
import torch

from refam.attention import SCORES, BlockCapture, CapturedAttention, ExpressionLayout, ImageGeometry
from refam.diagnostics import GasStatistics, colour_gas_moved, diagnose, gas_category
from refam.expression import TokenRole, tokenize_expression
from refam.heatmap import HeatmapOptions


def _capture(expression, probs_fn, n_blocks=2, grid=(4, 4)):
    """Blocks whose attention on the image keys is ``probs_fn(block) -> [N, L]`` (columns sum to 1)."""
    length = expression.valid_length
    blocks = []
    for i in range(n_blocks):
        probs = probs_fn(i).unsqueeze(0)  # [1, N, L]
        scores = {s: probs.clamp_min(1e-30).log() for s in SCORES}
        attention = torch.softmax(torch.randn(1, length, length), dim=-1)
        blocks.append(BlockCapture(f"double.{i}", i, scores, torch.ones(1, length), attention))
    geometry = ImageGeometry((16 * grid[0], 16 * grid[1]), (16 * grid[0], 16 * grid[1]), grid)
    return CapturedAttention(blocks, [expression], ExpressionLayout((length,)), geometry, n_blocks)


@pytest.fixture
def red_cup(t5_tokenizer):
    return tokenize_expression("the red cup", t5_tokenizer)


def test_entropy_is_one_for_uniform_maps_and_zero_for_one_hot_maps(red_cup):
    length, n = red_cup.valid_length, 16
    uniform = _capture(red_cup, lambda i: torch.full((n, length), 1.0 / n))
    one_hot = torch.zeros(n, length)
    one_hot[3] = 1.0
    peaked = _capture(red_cup, lambda i: one_hot)
    d_uniform, d_peaked = diagnose(uniform, 0), diagnose(peaked, 0)
    assert d_uniform.entropy_mean == pytest.approx([1.0, 1.0], abs=1e-5)
    assert d_uniform.entropy_min == pytest.approx([1.0, 1.0], abs=1e-5)
    assert d_peaked.entropy_mean == pytest.approx([0.0, 0.0], abs=1e-5)


def test_entropy_of_a_two_patch_map_is_log2_over_log_n_and_min_picks_the_sharpest_token(red_cup):
    length, n = red_cup.valid_length, 16
    probs = torch.full((n, length), 1.0 / n)
    probs[:, 1] = 0.0
    probs[[0, 5], 1] = 0.5  # token 1 ("red") on two patches
    d = diagnose(_capture(red_cup, lambda i: probs), 0)
    sharp = math.log(2) / math.log(n)
    assert d.entropy_min == pytest.approx([sharp, sharp], abs=1e-5)
    assert d.entropy_mean[0] == pytest.approx((sharp + (length - 1)) / length, abs=1e-5)


def test_shapes_ranges_and_gas_flags_follow_the_capture(red_cup):
    length, n = red_cup.valid_length, 16
    torch.manual_seed(0)
    capture = _capture(red_cup, lambda i: torch.rand(n, length).softmax(dim=0), n_blocks=3)
    for block in capture.blocks:
        block.text_mass[0, 0] = 1000.0  # a sink on "the"
    # ten tokens: the paper's rule (10x a mean that includes the sink) cannot fire below eleven
    options = HeatmapOptions(gas_threshold=3.0)
    d = diagnose(capture, 0, options)
    assert d.blocks == ["double.0", "double.1", "double.2"]
    assert len(d.pieces) == len(d.roles) == len(d.text_mass) == len(d.image_share) == len(d.gas) == length
    assert sum(d.image_share) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= e <= 1.0 for e in d.entropy_mean + d.entropy_min)
    assert [len(a) for a in d.text_attention] == [length] * 3 and all(len(r) == length for r in d.text_attention[0])
    assert d.gas[0] and d.gas_categories[0] == "stop_word"
    assert d.to_json()["gas"] == d.gas
    with pytest.raises(ValueError, match="outside the batch"):
        diagnose(capture, 0, options, image=1)


def test_gas_categories_name_stop_colour_content_magnet_and_eos(red_cup):
    roles = [t.role for t in red_cup.tokens[: red_cup.valid_length]]
    categories = [gas_category(red_cup, i) for i in range(red_cup.valid_length)]
    words = [t.word for t in red_cup.tokens[: red_cup.valid_length]]
    assert categories[words.index("the")] == "stop_word"
    assert categories[words.index("red")] == "colour_word"
    assert categories[words.index("cup")] == "other_content"
    assert {categories[i] for i, r in enumerate(roles) if r is TokenRole.MAGNET} == {"magnet"}
    assert categories[roles.index(TokenRole.EOS)] == "eos"


def _diagnosis(red_cup, gas_positions, length=None):
    """A hand-made diagnosis of "the red cup" with the given GAS positions."""
    from refam.diagnostics import Diagnosis

    length = length or red_cup.valid_length
    tokens = red_cup.tokens[:length]
    gas = [i in gas_positions for i in range(length)]
    return Diagnosis(
        expression=red_cup.text, pieces=[t.piece for t in tokens], roles=[t.role.value for t in tokens],
        blocks=["double.0"], entropy_mean=[0.5], entropy_min=[0.5], text_attention=[[[0.0] * length] * length],
        text_mass=[1.0] * length, image_share=[1.0 / length] * length, gas=gas,
        gas_categories=[gas_category(red_cup, i) for i in range(length) if gas[i]],
    )  # fmt: skip


def test_colour_gas_moves_only_when_the_colour_word_stops_being_a_sink_and_a_magnet_becomes_one(red_cup):
    words = [t.word for t in red_cup.tokens[: red_cup.valid_length]]
    red, the = words.index("red"), words.index("the")
    magnet = next(i for i, t in enumerate(red_cup.tokens) if t.role is TokenRole.MAGNET)
    bare = _diagnosis(red_cup, {red})
    assert colour_gas_moved(bare, _diagnosis(red_cup, {magnet})) is True
    assert colour_gas_moved(bare, _diagnosis(red_cup, {red, magnet})) is False  # red is still a sink
    assert colour_gas_moved(bare, _diagnosis(red_cup, set())) is False  # no magnet took it
    assert colour_gas_moved(_diagnosis(red_cup, {the}), _diagnosis(red_cup, {magnet})) is None


def test_gas_statistics_count_categories_and_the_moved_share(red_cup):
    words = [t.word for t in red_cup.tokens[: red_cup.valid_length]]
    red, the = words.index("red"), words.index("the")
    magnet = next(i for i, t in enumerate(red_cup.tokens) if t.role is TokenRole.MAGNET)
    stats = GasStatistics()
    stats.add(_diagnosis(red_cup, {magnet}), _diagnosis(red_cup, {red}))  # moved
    stats.add(_diagnosis(red_cup, {red, the}), _diagnosis(red_cup, {red}))  # not moved
    stats.add(_diagnosis(red_cup, set()), _diagnosis(red_cup, set()))
    data = stats.to_json()
    assert data["expressions"] == 3 and data["expressions_with_gas"] == 2
    assert data["gas_tokens"] == {"stop_word": 1, "colour_word": 1, "other_content": 0, "magnet": 1, "eos": 0}
    assert data["gas_share"]["magnet"] == pytest.approx(1 / 3)
    assert data["gas_tokens_without_magnets"]["colour_word"] == 2
    assert data["colour_gas_without_magnets"] == 2 and data["colour_gas_moved_to_magnets"] == 1
    assert data["colour_gas_moved_share"] == 0.5
    assert GasStatistics().to_json()["colour_gas_moved_share"] is None
