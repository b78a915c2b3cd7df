"""PNG figures of :mod:`refam.diagnostics` (matplotlib, drawn off-screen; ``pip install matplotlib``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from refam.diagnostics import GAS_CATEGORIES, Diagnosis, GasStatistics

__all__ = ["plot_entropy", "plot_gas_statistics", "plot_text_attention", "plot_token_mass"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("refam diagnose draws its figures with matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg", force=True)  # files only: never open a window, never need a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    fig.clear()
    _pyplot().close(fig)
    return path


def plot_entropy(d: Diagnosis, path: Path) -> Path:
    """Fig. 4: mean and minimum normalised entropy of the token -> image maps, per block."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.12 * len(d.blocks) + 3), 3.2))
    x = np.arange(len(d.blocks))
    ax.plot(x, d.entropy_mean, marker="o", ms=3, label="mean over tokens")
    ax.plot(x, d.entropy_min, marker="v", ms=3, label="min over tokens")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("block")
    ax.set_ylabel("entropy / log N")
    step = max(1, len(d.blocks) // 12)
    ax.set_xticks(x[::step], [d.blocks[i] for i in x[::step]], rotation=45, ha="right", fontsize=7)
    ax.set_title(f"attention entropy per block: {d.expression!r}", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_text_attention(d: Diagnosis, path: Path, max_blocks: int = 24) -> Path:
    """Fig. 3 (top): the expression tokens' attention on each other, one panel per block (evenly
    spaced blocks when there are more than ``max_blocks``)."""
    plt = _pyplot()
    picks = np.unique(np.linspace(0, len(d.blocks) - 1, min(max_blocks, len(d.blocks))).round().astype(int))
    cols = min(6, len(picks))
    rows = math.ceil(len(picks) / cols)
    size = 2.0 + 0.08 * len(d.pieces)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, picks, strict=False):
        ax.imshow(np.asarray(d.text_attention[i]), cmap="viridis", vmin=0.0)
        ax.set_title(d.blocks[i], fontsize=8)
        if len(d.pieces) <= 24:
            ax.axis("on")
            ax.set_xticks(range(len(d.pieces)), d.pieces, rotation=90, fontsize=5)
            ax.set_yticks(range(len(d.pieces)), d.pieces, fontsize=5)
    fig.suptitle(f"text-to-text attention (rows: queries): {d.expression!r}", fontsize=9)
    return _save(fig, path)


def plot_token_mass(d: Diagnosis, path: Path) -> Path:
    """Fig. 1: each token's block-averaged text-to-text and text-to-image mass, GAS in red."""
    plt = _pyplot()
    x = np.arange(len(d.pieces))
    colours = ["tab:red" if g else ("tab:gray" if r in ("magnet", "eos", "stop") else "tab:blue") for g, r in zip(d.gas, d.roles, strict=True)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(5.0, 0.35 * len(x) + 2), 4.6), sharex=True)
    top.bar(x, d.text_mass, color=colours)
    top.set_ylabel("text -> text")
    bottom.bar(x, d.image_share, color=colours)
    bottom.set_ylabel("text -> image")
    bottom.set_xticks(x, [f"{p}\n[GAS]" if g else p for p, g in zip(d.pieces, d.gas, strict=True)], rotation=90, fontsize=7)
    top.set_title(f"per-token mass, layer-averaged (red: GAS; gray: stop / magnet / EOS): {d.expression!r}", fontsize=9)
    return _save(fig, path)


def plot_gas_statistics(stats: GasStatistics, path: Path) -> Path:
    """Where the sinks fall over a dataset run, with and without magnets appended."""
    plt = _pyplot()
    data = stats.to_json()
    x = np.arange(len(GAS_CATEGORIES))
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    ax.bar(x - 0.2, [data["gas_share_without_magnets"][c] for c in GAS_CATEGORIES], 0.4, label="no magnets")
    ax.bar(x + 0.2, [data["gas_share"][c] for c in GAS_CATEGORIES], 0.4, label="magnets appended")
    ax.set_xticks(x, GAS_CATEGORIES, fontsize=8)
    ax.set_ylabel("share of GAS tokens")
    moved = data["colour_gas_moved_share"]
    note = "n/a" if moved is None else f"{100 * moved:.0f}% of {data['colour_gas_without_magnets']}"
    ax.set_title(f"GAS over {data['expressions']} expressions; colour-word GAS moved to a magnet: {note}", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)
