"""The expression branch's own cost: BranchMeter on plain torch code with known sizes."""

from __future__ import annotations

import time

import torch

from refam.backends.branch_cost import BranchMeter

FLOATS_1000 = 4000  # bytes of a 1000-element float32 tensor


def test_a_kept_tensor_is_allocated_peak_and_kept():
    meter = BranchMeter(time=False, memory=True)
    with meter.measure():
        kept = torch.ones(1000)
    assert meter.allocated_bytes == FLOATS_1000
    assert meter.peak_live_bytes == FLOATS_1000
    assert meter.kept_bytes == FLOATS_1000
    del kept
    assert meter.kept_bytes == 0  # freed after the branch: no longer kept
    assert meter.peak_live_bytes == FLOATS_1000 and meter.allocated_bytes == FLOATS_1000


def test_a_transient_freed_inside_counts_as_allocated_and_peak_but_not_kept():
    meter = BranchMeter(time=False, memory=True)
    with meter.measure():
        transient = torch.ones(1000)
        kept = transient.sum(dim=0, keepdim=True)  # 1 float: 4 bytes
        del transient
        later = torch.zeros(500)  # 2000 bytes, allocated after the 4000 were freed
        del later
    assert meter.allocated_bytes == FLOATS_1000 + 4 + 2000
    assert meter.peak_live_bytes == FLOATS_1000 + 4  # the 4000 and the 4 were alive together
    assert meter.kept_bytes == 4
    assert kept.item() == 1000.0


def test_views_and_in_place_ops_allocate_nothing_and_outside_work_is_not_counted():
    outside = torch.ones(1000)
    meter = BranchMeter(time=False, memory=True)
    with meter.measure():
        view = outside[:10].view(2, 5)
        outside.mul_(2)
        view.add_(1)
    assert meter.allocated_bytes == 0 and meter.peak_live_bytes == 0 and meter.kept_bytes == 0
    torch.ones(1000)  # after the branch: not the branch's
    assert meter.allocated_bytes == 0


def test_totals_accumulate_over_blocks_and_storage_carried_between_blocks_keeps_the_peak():
    meter = BranchMeter(time=False, memory=True)
    with meter.measure():
        stream = torch.zeros(1000)  # the expression stream, carried to the next block
    with meter.measure():
        stream = stream + 1  # the old stream is freed only when the name is rebound
    assert meter.blocks == 2
    assert meter.allocated_bytes == 2 * FLOATS_1000
    assert meter.peak_live_bytes == 2 * FLOATS_1000
    assert meter.kept_bytes == FLOATS_1000
    del stream
    assert meter.kept_bytes == 0


def test_memory_off_counts_no_bytes_and_time_off_counts_no_seconds():
    timer = BranchMeter(time=True, memory=False)
    with timer.measure():
        x = torch.ones(1000)
    assert timer.allocated_bytes == timer.peak_live_bytes == timer.kept_bytes == 0
    assert timer.seconds > 0 and timer.blocks == 1
    counter = BranchMeter(time=False, memory=True)
    with counter.measure():
        time.sleep(0.01)
    assert counter.seconds == 0.0 and counter.blocks == 1
    del x


def test_seconds_are_the_time_spent_inside_the_branch_only():
    meter = BranchMeter(time=True, memory=False)
    for _ in range(3):
        with meter.measure():
            time.sleep(0.02)
        time.sleep(0.05)  # the forward around the branch: not counted
    assert meter.blocks == 3
    assert 0.06 <= meter.seconds < 0.06 + 0.1


def test_a_branch_that_raises_is_still_counted():
    meter = BranchMeter(time=True, memory=True)
    try:
        with meter.measure():
            kept = torch.ones(1000)
            raise RuntimeError("block failed")
    except RuntimeError:
        pass
    assert meter.blocks == 1 and meter.seconds > 0 and meter.allocated_bytes == FLOATS_1000
    assert kept.numel() == 1000


def test_figures_cannot_go_negative():
    meter = BranchMeter(time=True, memory=True)
    with meter.measure():
        a = torch.ones(1000)
    with meter.measure():
        del a  # freeing inside a later block what an earlier one made
        b = torch.ones(10)
    del b
    figures = meter.as_dict()
    assert all(v >= 0 for v in figures.values()), figures
    assert figures["kept_bytes"] == 0 and figures["peak_live_bytes"] == FLOATS_1000
