"""The toy trainer is seeded and resumable: an interrupted run continues to the very weights the
uninterrupted run reaches (every batch is a pure function of seed and step)."""

from __future__ import annotations

import json

from safetensors.torch import load_file

from refam.toy.model import load_toy
from refam.toy.train import main as train

TINY = ["--world", "v2", "--batch", "2", "--schedule-steps", "3", "--warmup", "1", "--eval-every", "1000",
        "--eval-n", "1", "--ckpt-every", "1", "--log-every", "1", "--no-bf16"]


def test_a_resumed_v2_run_ends_where_the_uninterrupted_one_does(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train([*TINY, "--out", str(straight), "--steps", "3"])
    train([*TINY, "--out", str(resumed), "--steps", "2"])
    train([*TINY, "--out", str(resumed), "--steps", "3"])
    a = load_file(straight / "toy_flux.safetensors")
    b = load_file(resumed / "toy_flux.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert load_toy(resumed / "toy_flux.safetensors").world == "v2"
    losses = [
        [e for e in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in e]
        for run in (straight, resumed)
    ]
    assert [e["step"] for e in losses[1]] == [1, 2, 3]
    assert [e["loss"] for e in losses[0]] == [e["loss"] for e in losses[1]]
