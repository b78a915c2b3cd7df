"""The toy worlds and the weights trained on each: one registry, so the trainer, the release step,
the evaluation and the benchmark pick a world by name and never by importing its package."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["DEFAULT_WORLD", "WORLDS", "World", "world_of"]


@dataclass(frozen=True)
class World:
    name: str
    package: str  # the scenes package: render, masks, caption, training_batch, make_eval_set, ...
    weights: str  # file name in refam/toy/weights
    # The kinds a model must ground by itself: the training monitor and the operating-point choice
    # read these (spatial and relational words only reweight their maps).
    selection_kinds: tuple[str, ...]

    @property
    def scenes(self) -> ModuleType:
        return importlib.import_module(self.package)

    @property
    def validation_seed(self) -> int:
        """Scenes for choosing an operating point: neither training nor reported numbers use them."""
        return self.scenes.VALIDATION_SEED


WORLDS: dict[str, World] = {
    "v1": World("v1", "refam.toy.scenes", "toy_flux.safetensors", ("colour", "colour_shape")),
    "v2": World("v2", "refam.toy.scenes_v2", "toy_flux_v2.safetensors", ("noun", "colour_noun")),
}

# The world of the embedded toy model that runs when no weights are given (README, `refam segment`).
# Still v1: v2 scores higher on every held-out kind but unique colour, where the two tie at 84.0 %
# (MODEL_CARD_v2.md), and issue 19 replaces the default only for a model better on every kind.
DEFAULT_WORLD = "v1"


def world_of(scene: Any) -> World:
    """The world a scene object belongs to."""
    for world in WORLDS.values():
        if isinstance(scene, world.scenes.Scene):
            return world
    raise TypeError(f"not a toy scene: {type(scene).__name__}")
