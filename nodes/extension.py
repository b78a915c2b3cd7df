"""The node specs as ComfyUI V3 nodes (``comfy_api`` ``io.ComfyNode``) and the pack's extension."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfy_api.latest import ComfyExtension, io, ui

from . import NODE_SPECS
from .spec import CATEGORY, NodeSpec, Param, Result

_SOCKETS = {
    "IMAGE": io.Image,
    "MASK": io.Mask,
    "MODEL": io.Model,
    "CLIP": io.Clip,
    "VAE": io.Vae,
    "CONDITIONING": io.Conditioning,
    "LATENT": io.Latent,
    "STRING": io.String,
    "INT": io.Int,
    "FLOAT": io.Float,
    "BOOLEAN": io.Boolean,
    "COMBO": io.Combo,
}


def _io_type(kind: str):
    return _SOCKETS.get(kind) or io.Custom(kind)


def _input(p: Param):
    common: dict[str, Any] = {"tooltip": p.tooltip, "optional": p.optional}
    if p.kind == "COMBO":
        choices = p.choices()
        default = p.default if p.default in choices else (choices[0] if choices else None)
        return io.Combo.Input(p.name, options=choices, default=default, **common)
    if p.kind in ("INT", "FLOAT"):
        extra: dict[str, Any] = {"default": p.default, "min": p.min, "max": p.max, "step": p.step}
        if p.kind == "INT":
            extra["control_after_generate"] = False
        return _io_type(p.kind).Input(p.name, **extra, **common)
    if p.kind == "STRING":
        return io.String.Input(p.name, default=p.default, multiline=p.multiline, **common)
    if p.kind == "BOOLEAN":
        return io.Boolean.Input(p.name, default=p.default, **common)
    return _io_type(p.kind).Input(p.name, **common)


def _output(r: Result, input_names: set[str]):
    # V3 wants output ids distinct from input ids; the socket keeps the plain name on screen.
    ident = f"{r.name}_out" if r.name in input_names else r.name
    return _io_type(r.kind).Output(ident, display_name=r.name, tooltip=r.tooltip)


def comfy_node(spec: NodeSpec) -> type[io.ComfyNode]:
    """A V3 node class for ``spec``: schema from the declaration, ``execute`` calls ``spec.run``."""

    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=spec.node_id,
            display_name=spec.display_name,
            category=CATEGORY,
            description=spec.description,
            inputs=[_input(p) for p in spec.inputs],
            outputs=[_output(r, {p.name for p in spec.inputs}) for r in spec.outputs],
            is_output_node=spec.preview is not None,
        )

    def execute(cls, **kwargs) -> io.NodeOutput:
        result = spec.run(**kwargs)
        preview = None
        if spec.preview is not None:
            index = [r.name for r in spec.outputs].index(spec.preview)
            preview = ui.PreviewImage(result[index], cls=cls)
        return io.NodeOutput(*result, ui=preview)

    return type(
        spec.node_id,
        (io.ComfyNode,),
        {
            "define_schema": classmethod(define_schema),
            "execute": classmethod(execute),
            "__doc__": spec.description,
        },
    )


class RefAMExtension(ComfyExtension):
    async def on_load(self) -> None:
        from refam.backends.comfy_runtime import register_model_folders

        register_model_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [comfy_node(spec) for spec in NODE_SPECS]


async def comfy_entrypoint() -> ComfyExtension:
    from refam.install_hints import use_comfyui_hints

    # Inside ComfyUI a missing package is installed from the pack's requirements file.
    use_comfyui_hints(Path(__file__).absolute().parents[1])  # the folder name under custom_nodes, links kept
    return RefAMExtension()
