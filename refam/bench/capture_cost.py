"""Capture cost, measured side by side in one process and shared by the FLUX and Mochi benches.

Per expression count ``n`` three kinds of forward run interleaved, round by round, so machine
noise hits them alike: the plain forward, the forward with the capture, and the forward with the
capture and a time-only :class:`~refam.backends.branch_cost.BranchMeter` (its CUDA syncs would
perturb the forward it sits in, so that forward is never the one reported as "with capture").
Bytes come from one more forward with a memory-only meter, after the timing, so the counting's
own overhead never reaches a timed run. Two overhead figures are reported because either alone
can mislead: the forward ratio (noisy, ±10 % per run on a CPU) and ``1 + branch / plain``,
which charges the forward only what the branch itself took.
"""

from __future__ import annotations

import functools
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from refam.backends.branch_cost import BranchMeter

__all__ = [
    "DTYPE_CHOICES",
    "EXPRESSIONS",
    "OVERHEAD_TARGET",
    "CaptureWorkload",
    "expression_lengths",
    "measure_capture_cost",
    "parse_dtypes",
    "print_capture_cost",
    "spread",
]

OVERHEAD_TARGET = 1.05  # issue 15: capture overhead <= 1.05x in fp32 and bf16
AMORTISATION_TARGET = 1.5

EXPRESSIONS = (
    "the cat on the left",
    "a remote control",
    "the man in a red shirt holding a bat",
    "second giraffe from the right",
    "the bowl closest to the camera",
    "a white car parked behind the bus",
    "the smallest elephant",
    "woman with an umbrella on the top right",
)

MB = 2**20
DTYPE_CHOICES = ("fp32", "bf16", "fp16")  # short names of refam.dtypes, one table


def parse_dtypes(text: str, allowed: tuple[str, ...] = DTYPE_CHOICES) -> list[str]:
    """``"fp32,bf16"`` -> ``["fp32", "bf16"]``, each checked."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in allowed]
    if not names or bad:
        raise ValueError(f"--dtypes {text!r}: give a comma-separated list of {', '.join(allowed)}")
    return names


@functools.cache
def _t5_tokenizer() -> Any:
    # The T5 tokenizer the package ships for its toy model: real token counts without a download.
    from refam.toy.model import load_toy_tokenizer

    try:
        return load_toy_tokenizer()
    except FileNotFoundError:
        return None


def expression_lengths(n: int) -> tuple[int, ...]:
    """Token counts of ``n`` real expressions + the default magnets (fixed counts without a tokenizer)."""
    tok = _t5_tokenizer()
    if tok is None:
        return tuple(6 + 2 * i for i in range(n))
    from refam.expression import tokenize_expression

    return tuple(tokenize_expression(EXPRESSIONS[i % len(EXPRESSIONS)], tok).valid_length for i in range(n))


@dataclass
class CaptureWorkload:
    """One model's forwards: ``captured(n, meter)`` runs a forward capturing ``n`` expressions and
    returns what the capture keeps (its records), so kept bytes can be read while they live."""

    plain: Callable[[], Any]
    captured: Callable[[int, BranchMeter | None], Any]
    device: torch.device
    counts: Sequence[int] = (1, 8)

    @classmethod
    def of(
        cls,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        embeds: dict[int, torch.Tensor],
        lengths: dict[int, tuple[int, ...]],
        device: torch.device,
    ) -> CaptureWorkload:
        """A diffusers transformer's forward on ``inputs``, plain and capturing ``n`` expressions
        (``embeds[n]`` of ``lengths[n]`` tokens each) for every ``n`` of ``embeds``."""
        from refam.attention import ExpressionLayout
        from refam.backends.diffusers_capture import capture_attention

        def plain() -> None:
            model(**inputs)

        def captured(n: int, meter: BranchMeter | None) -> Any:
            with capture_attention(model, embeds[n], ExpressionLayout(lengths[n]), meter=meter) as session:
                model(**inputs)
            return session.records

        return cls(plain, captured, device, tuple(embeds))


def spread(values: Sequence[float], digits: int = 4) -> dict[str, float]:
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def measure_capture_cost(work: CaptureWorkload, runs: int) -> dict[str, Any]:
    """Seconds (min / median / max over ``runs`` interleaved rounds) and branch bytes per count."""
    if runs < 1:
        raise ValueError(f"--runs {runs}: give at least 1 (7 or more for a spread worth reading)")
    modes: dict[str, Callable[[], Any]] = {"plain": work.plain}
    branch_s: dict[int, list[float]] = {n: [] for n in work.counts}
    share: dict[int, list[float]] = {n: [] for n in work.counts}
    blocks: dict[int, int] = {}

    def timed_branch(n: int) -> Callable[[], None]:
        def run() -> None:
            meter = BranchMeter(time=True, memory=False, device=work.device)
            forward_s = _timed(lambda: work.captured(n, meter), work.device)
            branch_s[n].append(meter.seconds)
            share[n].append(meter.seconds / forward_s)
            blocks[n] = meter.blocks

        return run

    for n in work.counts:
        modes[f"capture_{n}"] = lambda n=n: work.captured(n, None)
        modes[f"metered_{n}"] = timed_branch(n)
    for fn in modes.values():  # warm-up: allocator, kernels, lazy imports
        fn()
    for n in work.counts:
        branch_s[n].clear()
        share[n].clear()
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(runs):
        for name, fn in modes.items():
            gc.collect()
            times[name].append(_timed(fn, work.device))
    plain = statistics.median(times["plain"])
    out: dict[str, Any] = {"runs": runs, "forward_s": {"plain": spread(times["plain"])}}
    for n in work.counts:
        meter = BranchMeter(time=False, memory=True, device=work.device)
        kept = work.captured(n, meter)  # held until kept_bytes is read
        with_capture = statistics.median(times[f"capture_{n}"])
        out["forward_s"][f"capture_{n}"] = spread(times[f"capture_{n}"])
        out[f"capture_{n}"] = {
            "overhead": round(with_capture / plain, 4),
            "branch_s": spread(branch_s[n], 5),
            "branch_share": round(statistics.median(share[n]), 4),
            "branch_overhead": round(1 + statistics.median(branch_s[n]) / plain, 4),
            "branch_blocks": blocks[n],
            "allocated_mb": round(meter.allocated_bytes / MB, 2),
            "peak_live_mb": round(meter.peak_live_bytes / MB, 2),
            "kept_mb": round(meter.kept_bytes / MB, 3),
        }
        del kept
    out["all_s"] = {m: [round(x, 4) for x in v] for m, v in times.items() if not m.startswith("metered_")}
    first = out.get(f"capture_{work.counts[0]}", {})
    out["capture_overhead"] = first.get("overhead")
    out["branch_overhead"] = first.get("branch_overhead")
    if 1 in work.counts and 8 in work.counts:
        out["amortisation_8_vs_1"] = round(
            statistics.median(times["capture_8"]) / statistics.median(times["capture_1"]), 4
        )
    return out


def _triple(s: dict[str, float], fmt: str = ".3f") -> str:
    return f"{s['min']:{fmt}} / {s['median']:{fmt}} / {s['max']:{fmt}}"


def print_capture_cost(title: str, r: dict[str, Any], counts: Sequence[int]) -> None:
    """The table of one dtype: forwards, the branch's own time and bytes, both overhead ratios."""
    print(f"\n{title}")
    print(f"{r['runs']} runs interleaved; seconds as min / median / max; ratios from medians")
    head = f"{'mode':<11}{'forward s':>26}{'ratio':>8}{'branch s':>29}{'share':>8}{'1+br/plain':>11}"
    print(head + f"{'alloc MB':>10}{'peak MB':>9}{'kept MB':>9}")
    print(f"{'plain':<11}{_triple(r['forward_s']['plain']):>26}{1.0:>8.3f}")
    for n in counts:
        c = r[f"capture_{n}"]
        print(
            f"{f'capture_{n}':<11}{_triple(r['forward_s'][f'capture_{n}']):>26}{c['overhead']:>8.3f}"
            f"{_triple(c['branch_s'], '.4f'):>29}{c['branch_share']:>8.1%}{c['branch_overhead']:>11.3f}"
            f"{c['allocated_mb']:>10.1f}{c['peak_live_mb']:>9.1f}{c['kept_mb']:>9.2f}"
        )
    print(
        f"(a) capture overhead  {r['capture_overhead']:.3f} forward ratio, {r['branch_overhead']:.3f} from the "
        f"branch's own time (target <= {OVERHEAD_TARGET:.2f})"
    )
    if "amortisation_8_vs_1" in r:
        print(f"(b) amortisation 8:1  {r['amortisation_8_vs_1']:.3f}  (target <= {AMORTISATION_TARGET})")
    print("(c) branch memory: alloc = every tensor it created, peak = most alive at once, kept = its records")
