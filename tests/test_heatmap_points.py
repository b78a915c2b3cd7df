"""Heatmap filters, GAS, spatial prior and point geometry on planted scores."""

from __future__ import annotations

import pytest
import torch

from refam.attention import SCORES, BlockCapture, CapturedAttention, ExpressionLayout, ImageGeometry
from refam.expression import TokenRole, tokenize_expression
from refam.heatmap import BlockSelection, HeatmapOptions, build_heatmap, detect_gas, spatial_prior
from refam.images import model_size
from refam.language import SpatialCue
from refam.points import argmax_point, peak_points, upsample_heatmap


def _captured(expression, geometry, logits_fn, n_blocks=4, batch=1, text_mass=None):
    length = expression.valid_length
    n = geometry.grid[0] * geometry.grid[1]
    blocks = []
    for i in range(n_blocks):
        logits = torch.zeros(batch, n, length)
        logits_fn(logits, i)
        mass = torch.ones(batch, length) if text_mass is None else text_mass.clone()
        # the planted scores stand for every scoring mode
        blocks.append(BlockCapture(f"double.{i}", i, {score: logits for score in SCORES}, mass))
    return CapturedAttention(
        blocks=blocks,
        expressions=[expression],
        layout=ExpressionLayout((length,)),
        geometry=geometry,
        num_blocks=n_blocks,
    )


def _content_index(expression, word):
    return next(i for i, t in enumerate(expression.tokens) if t.word == word and t.role is TokenRole.CONTENT)


@pytest.mark.parametrize("size", [(480, 640), (517, 333), (100, 37)])
@pytest.mark.parametrize("resolution", [None, 512])
def test_planted_peak_lands_on_the_right_pixel(t5_tokenizer, size, resolution):
    """A peak planted at the patch holding pixel (x, y) comes back as a point in that patch,
    in ORIGINAL pixel coordinates, for non-square sizes and sizes not divisible by 16."""
    height, width = size
    msize = model_size(size, resolution, 16)
    geometry = ImageGeometry(size, msize, (msize[0] // 16, msize[1] // 16))
    h, w = geometry.grid
    expr = tokenize_expression("the cat", t5_tokenizer)
    k = _content_index(expr, "cat")
    for x, y in [(0.8 * width, 0.2 * height), (0.1 * width, 0.9 * height), (width - 1, height - 1)]:
        row, col = int(y * h / height), int(x * w / width)

        def plant(logits, _i, row=row, col=col):
            logits[0, row * w + col, k] = 8.0

        heat = build_heatmap(_captured(expr, geometry, plant), 0, HeatmapOptions(noun_phrase=False))
        point = argmax_point(heat.grid[0], geometry)
        cell_w, cell_h = width / w, height / h
        assert (point.row, point.col) == (row, col)
        assert col * cell_w <= point.x < (col + 1) * cell_w and row * cell_h <= point.y < (row + 1) * cell_h
        assert abs(point.x - x) <= cell_w and abs(point.y - y) <= cell_h
        full = upsample_heatmap(heat.grid, geometry)
        assert full.shape == (1, height, width)
        py, px = divmod(int(full[0].argmax()), width)
        assert abs(px - point.x) <= cell_w and abs(py - point.y) <= cell_h


def test_transposed_grid_would_be_caught(t5_tokenizer):
    """Row-major token order: a peak at token r*w+c is at row r, column c (not transposed)."""
    geometry = ImageGeometry((48, 80), (48, 80), (3, 5))
    expr = tokenize_expression("dog", t5_tokenizer)
    k = _content_index(expr, "dog")

    def plant(logits, _i):
        logits[0, 1 * 5 + 4, k] = 5.0

    point = argmax_point(build_heatmap(_captured(expr, geometry, plant), 0).grid[0], geometry)
    assert (point.row, point.col) == (1, 4)
    assert point.x == pytest.approx(72.0) and point.y == pytest.approx(24.0)


def test_filters_remove_exactly_the_roles_they_name(t5_tokenizer):
    expr = tokenize_expression("the red cat", t5_tokenizer)
    geometry = ImageGeometry((32, 32), (32, 32), (2, 2))
    cap = _captured(
        expr, geometry, lambda logits, _i: logits.normal_(generator=torch.Generator().manual_seed(0))
    )
    roles = expr.roles[: expr.valid_length]

    def kept(**kw):
        opts = HeatmapOptions(remove_gas=False, noun_phrase=False, **kw)
        return {r for t, r in zip(build_heatmap(cap, 0, opts).token_maps[0], roles, strict=False) if t.kept}

    assert kept() == {TokenRole.CONTENT}
    assert kept(drop_stop_words=False) == {TokenRole.CONTENT, TokenRole.STOP}
    assert kept(drop_magnets=False) == {TokenRole.CONTENT, TokenRole.MAGNET}
    assert kept(drop_eos=False) == {TokenRole.CONTENT, TokenRole.EOS}
    all_on = kept(drop_stop_words=False, drop_magnets=False, drop_eos=False)
    assert all_on == {TokenRole.CONTENT, TokenRole.STOP, TokenRole.MAGNET, TokenRole.EOS}


def test_softmax_is_over_all_tokens_before_filtering(t5_tokenizer):
    """Magnets compete for a patch and are dropped afterwards: a patch a magnet wins gets a low
    content probability, which is what makes magnets sharpen the map."""
    expr = tokenize_expression("cat", t5_tokenizer)
    geometry = ImageGeometry((16, 32), (16, 32), (1, 2))
    k = _content_index(expr, "cat")
    m = expr.roles.index(TokenRole.MAGNET)

    def plant(logits, _i):
        logits[0, 0, m] = 6.0  # patch 0 belongs to a magnet, patch 1 to nobody in particular

    heat = build_heatmap(_captured(expr, geometry, plant), 0, HeatmapOptions(noun_phrase=False))
    cat_map = heat.token_maps[0][k].grid
    assert cat_map[0, 0] < cat_map[0, 1]
    assert argmax_point(heat.grid[0], geometry).col == 1


def test_planted_sink_is_reported_and_removed_only_by_name(t5_tokenizer):
    expr = tokenize_expression("the red cat", t5_tokenizer)
    geometry = ImageGeometry((32, 32), (32, 32), (2, 2))
    red = _content_index(expr, "red")
    cat = _content_index(expr, "cat")
    mass = torch.ones(1, expr.valid_length)
    mass[0, red] = 40.0  # a colour token turned global sink (paper §3.4)

    def plant(logits, _i):
        logits[0, 0, red] = 9.0  # the sink lights up patch 0 ...
        logits[0, 3, cat] = 3.0  # ... the object is at patch 3

    cap = _captured(expr, geometry, plant, text_mass=mass)
    # the paper's rule on a short expression: 40 is under 10x the mean of all its tokens
    paper = build_heatmap(cap, 0, HeatmapOptions(noun_phrase=False))
    assert paper.gas_tokens == [[]]
    reported = build_heatmap(cap, 0, HeatmapOptions(noun_phrase=False, gas_rule="others"))
    assert reported.gas_tokens == [[expr.tokens[red].piece]]
    assert [t.gas for t in reported.token_maps[0]].count(True) == 1
    assert all(t.kept for t in reported.token_maps[0] if t.gas)  # reported, not removed (the paper)
    assert argmax_point(reported.grid[0], geometry).row == 0
    removed = build_heatmap(cap, 0, HeatmapOptions(noun_phrase=False, gas_rule="others", remove_gas=True))
    assert argmax_point(removed.grid[0], geometry).row == 1  # patch 3 = row 1, col 1
    # the threshold is a parameter: a 40x token is not a sink at 50x
    assert not build_heatmap(cap, 0, HeatmapOptions(noun_phrase=False, gas_rule="others", gas_threshold=50.0)).gas_tokens[0]


def test_paper_gas_rule_is_ten_times_the_mean_over_all_tokens_and_blocks():
    mass = torch.ones(2, 1, 40)
    mass[:, 0, 7] = 20.0  # 20 >= 10 x (39 + 20) / 40
    mass[:, 0, 8] = 14.0  # 14 <  10 x (38 + 20 + 14) / 40
    found = detect_gas(mass)[0]
    assert found.nonzero().flatten().tolist() == [7]
    # a short expression can never reach 10x the mean that contains the token itself
    short = torch.tensor([[[1.0, 1.0, 1.0, 1000.0]]])
    assert not detect_gas(short).any() and detect_gas(short, rule="others").any()


def test_detect_gas_ratio_to_mean_of_the_other_tokens():
    mass = torch.tensor([[[1.0, 1.0, 1.0, 9.0]]])  # 9 < 10 x 1
    assert not detect_gas(mass, rule="others").any()
    mass = torch.tensor([[[1.0, 1.0, 1.0, 10.0]]])  # 10 >= 10 x 1, even in a 4-token expression
    assert detect_gas(mass, rule="others")[0].tolist() == [False, False, False, True]
    # averaged over blocks first: a sink in one block of two is diluted to 5.5x
    two_blocks = torch.tensor([[[1.0, 1.0, 10.0]], [[1.0, 1.0, 1.0]]])
    assert not detect_gas(two_blocks, rule="others").any()
    assert detect_gas(two_blocks, threshold=5.0, rule="others")[0].tolist() == [False, False, True]


def test_noun_phrase_filter_keeps_only_head_phrase(t5_tokenizer):
    expr = tokenize_expression("the dog next to the bench", t5_tokenizer)
    geometry = ImageGeometry((32, 32), (32, 32), (2, 2))
    dog, bench = _content_index(expr, "dog"), _content_index(expr, "bench")

    def plant(logits, _i):
        logits[0, 0, dog] = 3.0
        logits[0, 3, bench] = 6.0

    cap = _captured(expr, geometry, plant)
    words_dog = [i for i, w in enumerate(expr.words) if w.text in ("the", "dog")][:2]
    with_np = build_heatmap(cap, 0, HeatmapOptions(), noun_phrase_words=words_dog)
    assert argmax_point(with_np.grid[0], geometry).row == 0
    without = build_heatmap(cap, 0, HeatmapOptions(noun_phrase=False), noun_phrase_words=words_dog)
    assert argmax_point(without.grid[0], geometry).row == 1
    # a noun phrase with no content token falls back with a warning instead of an empty average
    only_stop = build_heatmap(cap, 0, HeatmapOptions(), noun_phrase_words=[0])
    assert any("noun-phrase" in w for w in only_stop.warnings)


def test_heatmap_keeps_the_tokens_keep_mask_keeps(t5_tokenizer):
    """One keep rule: the heatmap's kept tokens are TokenizedExpression.keep_mask's, role switches
    and noun-phrase filter together; the filter narrows content words only."""
    expr = tokenize_expression("the dog next to the bench", t5_tokenizer)
    geometry = ImageGeometry((32, 32), (32, 32), (2, 2))
    cap = _captured(expr, geometry, lambda logits, _i: None)
    words_dog = [0, 1]
    for switches in ({}, {"drop_stop_words": False}, {"drop_magnets": False, "drop_eos": False}):
        options = HeatmapOptions(**switches)
        drop = {
            role
            for role, on in (
                (TokenRole.STOP, options.drop_stop_words),
                (TokenRole.MAGNET, options.drop_magnets),
                (TokenRole.EOS, options.drop_eos),
            )
            if on
        }
        heat = build_heatmap(cap, 0, options, noun_phrase_words=words_dog)
        kept = [m.kept for m in heat.token_maps[0]]
        assert kept == expr.keep_mask(drop, words=words_dog)[: expr.valid_length]
        assert [t.word for t, k in zip(expr.tokens, kept, strict=False) if k and t.role is TokenRole.CONTENT] == ["dog"]
    with_magnets = build_heatmap(cap, 0, HeatmapOptions(drop_magnets=False), noun_phrase_words=words_dog)
    assert {m.role for m in with_magnets.token_maps[0] if m.kept} == {TokenRole.CONTENT, TokenRole.MAGNET}


def test_spatial_prior_shapes():
    left = spatial_prior("left", None, 2, 4)
    assert torch.all(left[:, :-1] > left[:, 1:]) and torch.allclose(left[0], left[1])
    right = spatial_prior("right", None, 1, 5)
    assert int(right.argmax()) == 4
    middle = spatial_prior("middle", None, 1, 5)
    assert int(middle.argmax()) == 2 and middle[0, 0] == pytest.approx(float(middle[0, 4]))
    top_left = spatial_prior("left", "top", 3, 3)
    assert int(top_left.argmax()) == 0 and int(top_left.argmin()) == 8


def test_spatial_bias_moves_the_point_between_two_equal_objects(t5_tokenizer):
    expr = tokenize_expression("the cat on the right", t5_tokenizer)
    geometry = ImageGeometry((32, 64), (32, 64), (2, 4))
    cat = _content_index(expr, "cat")

    def plant(logits, _i):
        logits[0, 4 + 0, cat] = 5.0  # two equally strong cats, left and right
        logits[0, 4 + 3, cat] = 5.0

    cap = _captured(expr, geometry, plant)
    opts = HeatmapOptions(noun_phrase=False)
    assert argmax_point(build_heatmap(cap, 0, opts, spatial=SpatialCue("right", None)).grid[0], geometry).col == 3
    assert argmax_point(build_heatmap(cap, 0, opts, spatial=SpatialCue("left", None)).grid[0], geometry).col == 0


def test_block_selection(t5_tokenizer):
    expr = tokenize_expression("cat", t5_tokenizer)
    geometry = ImageGeometry((16, 16), (16, 16), (1, 2))
    k = _content_index(expr, "cat")

    def plant(logits, i):
        logits[0, 0 if i < 2 else 1, k] = 5.0  # early blocks say patch 0, late blocks patch 1

    cap = _captured(expr, geometry, plant, n_blocks=4)
    pick = lambda sel: argmax_point(build_heatmap(cap, 0, HeatmapOptions(blocks=sel)).grid[0], geometry).col  # noqa: E731
    assert pick(BlockSelection(indices=(0, 1))) == 0
    assert pick(BlockSelection(indices=("double.3",))) == 1
    assert pick(BlockSelection(skip_fraction=0.5)) == 1
    assert build_heatmap(cap, 0, HeatmapOptions(blocks=BlockSelection(skip_fraction=0.5))).blocks == [
        "double.2",
        "double.3",
    ]
    with pytest.raises(ValueError, match="not captured"):
        build_heatmap(cap, 0, HeatmapOptions(blocks=BlockSelection(indices=(7,))))
    with pytest.raises(ValueError, match="skip_fraction"):
        BlockSelection(skip_fraction=1.0)


def test_peak_points_top_k():
    geometry = ImageGeometry((40, 40), (40, 40), (4, 4))
    heat = torch.zeros(4, 4)
    heat[0, 0], heat[0, 1], heat[3, 3] = 1.0, 0.9, 0.5
    points = peak_points(heat, geometry, k=2, min_distance=1)
    assert [(p.row, p.col) for p in points] == [(0, 0), (3, 3)]  # (0,1) is too close to (0,0)
    assert points[0].score == 1.0
    assert peak_points(heat, geometry, k=1)[0] == argmax_point(heat, geometry)
    with pytest.raises(ValueError, match="latent grid"):
        argmax_point(torch.zeros(3, 4), geometry)


def test_options_replace_takes_flat_block_selection():
    """--blocks / skip_fraction given flat reach the heatmap (they were once silently dropped)."""
    from refam.options import RefAMOptions

    opts = RefAMOptions().replace(blocks=(0, "single.2"), sigma=0.5, noun_phrase=False)
    assert opts.heatmap.blocks == BlockSelection(indices=(0, "single.2")) and opts.sigma == 0.5
    assert not opts.heatmap.noun_phrase and opts.heatmap.spatial_bias
    both = RefAMOptions().replace(blocks=(3,), skip_fraction=0.5)
    assert both.heatmap.blocks == BlockSelection(indices=(3,), skip_fraction=0.5)
    with pytest.raises(TypeError, match="unknown RefAM option"):
        RefAMOptions().replace(sigmaa=1.0)
