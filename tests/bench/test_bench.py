"""``refam bench``: the capture-cost measurement on a workload of known cost, and the CLI."""

from __future__ import annotations

import json
from contextlib import nullcontext

import pytest
import torch

from refam.backends.branch_cost import BranchMeter
from refam.bench.capture_cost import CaptureWorkload, measure_capture_cost, parse_dtypes, spread

MB_FLOATS = 2**18  # a float32 tensor of 1 MB


class _Clock:
    """A clock that moves only when the workload says so: timings exact on a loaded machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    from refam.backends import branch_cost
    from refam.bench import capture_cost

    fake = _Clock()
    monkeypatch.setattr(capture_cost, "time", fake)
    monkeypatch.setattr(branch_cost, "time", fake)
    return fake


def _known_workload(clock: _Clock) -> CaptureWorkload:
    """A forward of 50 ms; the capture adds a 50 ms branch that makes 2 MB of transients and keeps n MB."""

    def plain() -> None:
        clock.sleep(0.05)

    def captured(n: int, meter: BranchMeter | None) -> list[torch.Tensor]:
        records = []
        clock.sleep(0.05)
        with meter.measure() if meter is not None else nullcontext():
            transient = torch.ones(2 * MB_FLOATS)
            records.append(torch.zeros(n * MB_FLOATS))
            del transient
            clock.sleep(0.05 * n)
        return records

    return CaptureWorkload(plain, captured, torch.device("cpu"), counts=(1, 2))


def test_capture_cost_reports_forward_and_branch_side_by_side(clock):
    r = measure_capture_cost(_known_workload(clock), runs=3)
    assert r["runs"] == 3 and r["all_s"]["plain"] == [0.05] * 3
    assert list(r["all_s"]) == [
        "plain",
        "capture_1",
        "capture_2",
    ]  # the synced runs are not reported as forwards
    assert r["forward_s"]["capture_2"] == {"min": 0.15, "median": 0.15, "max": 0.15}
    for n, kept_mb in ((1, 1.0), (2, 2.0)):
        c = r[f"capture_{n}"]
        assert c["branch_blocks"] == 1
        assert c["branch_s"] == {"min": 0.05 * n, "median": 0.05 * n, "max": 0.05 * n}
        assert c["branch_share"] == pytest.approx(
            n / (n + 1), abs=1e-4
        )  # 50 ms of a 100 ms forward for n = 1
        assert c["branch_overhead"] == c["overhead"] == pytest.approx(2.0 + n - 1, abs=1e-4)
        assert c["allocated_mb"] == 2.0 + kept_mb
        assert c["peak_live_mb"] == 2.0 + kept_mb  # the transient and the record were alive together
        assert c["kept_mb"] == kept_mb
    assert r["capture_overhead"] == r["capture_1"]["overhead"]
    assert r["branch_overhead"] == r["capture_1"]["branch_overhead"]
    assert "amortisation_8_vs_1" not in r  # only with counts 1 and 8


def test_the_spread_is_over_runs_and_the_ratio_over_medians(clock):
    plain_s = iter([0.05, 0.09, 0.06, 0.05])  # warm-up, then three runs
    work = _known_workload(clock)
    work.plain = lambda: clock.sleep(next(plain_s))
    work.counts = (1,)
    r = measure_capture_cost(work, runs=3)
    assert r["forward_s"]["plain"] == {"min": 0.05, "median": 0.06, "max": 0.09}
    assert r["capture_1"]["overhead"] == pytest.approx(0.1 / 0.06, abs=1e-4)
    assert r["capture_1"]["branch_overhead"] == pytest.approx(1 + 0.05 / 0.06, abs=1e-4)


def test_spread_and_run_count_are_checked():
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    with pytest.raises(ValueError, match="--runs 0"):
        measure_capture_cost(_known_workload(_Clock()), runs=0)


def test_dtypes_are_parsed_and_a_typo_fails_before_any_model_is_built(capsys):
    from refam.bench import main

    assert parse_dtypes("fp32,bf16") == ["fp32", "bf16"]
    assert parse_dtypes(" bf16 ") == ["bf16"]
    for bad in ("", "fp64", "fp32,,int8"):
        with pytest.raises(ValueError, match="--dtypes"):
            parse_dtypes(bad)
    with pytest.raises(SystemExit) as exit_:
        main(["capture", "--dtypes", "fp32,fp64"])
    assert exit_.value.code == 2 and "--dtypes" in capsys.readouterr().err


@pytest.mark.slow
def test_capture_bench_measures_the_branch_of_a_real_flux_in_each_dtype(capsys, tmp_path):
    from refam.bench import main

    out = tmp_path / "capture.json"
    args = ["capture", "--heads", "1", "--double", "1", "--single", "1", "--size", "32", "--text-len", "8"]
    assert main([*args, "--runs", "1", "--dtypes", "fp32,bf16", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1+br/plain" in printed and "peak RSS" not in printed
    result = json.loads(out.read_text())
    assert list(result["dtypes"]) == ["fp32", "bf16"]
    for per in result["dtypes"].values():
        for n in (1, 8):
            c = per[f"capture_{n}"]
            assert c["branch_blocks"] == 2  # 1 double + 1 single block
            assert c["branch_s"]["min"] > 0 and c["branch_overhead"] > 1
            assert c["allocated_mb"] >= c["peak_live_mb"] >= c["kept_mb"] > 0
        assert per["capture_8"]["kept_mb"] > per["capture_1"]["kept_mb"]  # 8 expressions keep more scores
