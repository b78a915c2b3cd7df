"""What a scene is in every toy world: its objects and the seed that made them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class SceneBase:
    """Objects (stored as a tuple so scenes are immutable and comparable) and the seed that made them
    (``None`` for hand-built or derived scenes). Each world subclasses it with its object type."""

    objects: tuple[Any, ...]
    seed: int | None = None

    object_type: ClassVar[type]
    world_tag: ClassVar[str | None] = None  # written by to_dict; v1's files predate the tag

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))

    def __len__(self) -> int:
        return len(self.objects)

    def to_dict(self) -> dict:
        tag = {"world": self.world_tag} if self.world_tag else {}
        return {**tag, "seed": self.seed, "objects": [vars(o).copy() for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict) -> SceneBase:
        return cls(tuple(cls.object_type(**o) for o in data["objects"]), data.get("seed"))
