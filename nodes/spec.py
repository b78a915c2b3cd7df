"""Node declarations that do not need ComfyUI: what each node takes, gives and runs.

``nodes/extension.py`` turns these into ``comfy_api`` V3 nodes inside ComfyUI; the tests read
them directly to check the shipped workflows against the pack without a ComfyUI checkout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

CATEGORY = "RefAM"

WIDGET_KINDS = {"STRING", "INT", "FLOAT", "BOOLEAN", "COMBO"}


@dataclass(frozen=True)
class Param:
    """One node input. Widgets (STRING/INT/FLOAT/BOOLEAN/COMBO) have defaults; sockets do not."""

    name: str
    kind: str
    tooltip: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    multiline: bool = False
    options: Sequence[str] | Callable[[], Sequence[str]] = ()
    optional: bool = False

    def __post_init__(self) -> None:
        if not self.tooltip:
            raise ValueError(f"input {self.name!r} needs a tooltip")
        if self.kind in WIDGET_KINDS and self.default is None and self.kind != "COMBO":
            raise ValueError(f"widget {self.name!r} needs a default")

    @property
    def is_widget(self) -> bool:
        return self.kind in WIDGET_KINDS

    def choices(self) -> list[str]:
        return list(self.options() if callable(self.options) else self.options)


@dataclass(frozen=True)
class Result:
    """One node output."""

    name: str
    kind: str
    tooltip: str


@dataclass(frozen=True)
class NodeSpec:
    """A node: its inputs/outputs and the function that runs it (keyword arguments = input names).

    ``run`` returns a tuple in output order; ``preview`` names an IMAGE output shown on the node.
    """

    node_id: str
    display_name: str
    description: str
    inputs: tuple[Param, ...]
    outputs: tuple[Result, ...]
    run: Callable[..., tuple]
    preview: str | None = None

    def __post_init__(self) -> None:
        names = [p.name for p in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.node_id}: duplicate input names {names}")
        if self.preview and self.preview not in [r.name for r in self.outputs]:
            raise ValueError(f"{self.node_id}: preview output {self.preview!r} is not an output")

    @property
    def widgets(self) -> list[Param]:
        return [p for p in self.inputs if p.is_widget]


# -- one shape for node signatures, whether from these specs or from ComfyUI's /object_info -------
def spec_signature(spec: NodeSpec) -> dict[str, Any]:
    """``{"inputs": [...], "outputs": [...]}`` in the form :func:`object_info_signature` returns."""
    return {
        "inputs": [
            {
                "name": p.name,
                "type": p.kind,
                "widget": p.is_widget,
                "optional": p.optional,
                "extra_widgets": 0,
            }
            for p in spec.inputs
        ],
        "outputs": [{"name": r.name, "type": r.kind} for r in spec.outputs],
    }


def object_info_signature(info: dict[str, Any]) -> dict[str, Any]:
    """A node's ``/object_info`` entry reduced to what a workflow file depends on.

    ``extra_widgets`` counts the values the frontend stores beside the input's own (the
    control-after-generate selector of seeds, the upload button of image loaders).
    """
    inputs = []
    for section in ("required", "optional"):
        for name in info["input_order"].get(section, []) if "input_order" in info else info["input"].get(section, {}):
            spec = info["input"][section][name]
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            kind = "COMBO" if isinstance(kind, list) else kind
            widget = kind in WIDGET_KINDS and not opts.get("forceInput", False)
            uploads = ("image_upload", "video_upload", "audio_upload")
            extra = int(bool(opts.get("control_after_generate"))) + int(any(opts.get(u) for u in uploads))
            inputs.append(
                {
                    "name": name,
                    "type": kind,
                    "widget": widget,
                    "optional": section == "optional",
                    "extra_widgets": extra,
                }
            )
    names = info.get("output_name") or info["output"]
    outputs = [{"name": n, "type": t} for n, t in zip(names, info["output"], strict=True)]
    return {"inputs": inputs, "outputs": outputs}
