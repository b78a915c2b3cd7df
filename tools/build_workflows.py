"""Write the shipped example workflows: UI (litegraph) format + API-format twin of each.

One graph description per workflow, so the two formats can never drift apart. Node signatures
come from the pack's own specs and, for core nodes, from ``tests/data/comfy_core_nodes.json`` (a
snapshot of ComfyUI's /object_info that a ComfyUI-gated test checks against the real thing).

Layout: each workflow is two rows of labelled groups (load / describe, then capture -> heatmap ->
point / segment / output), sized so that ComfyUI's fit-to-view on a 1,600 px wide canvas stays
above the zoom where node titles disappear (the browser test measures it). Every model file a
loader names is declared the way ComfyUI's missing-models dialog reads it (``properties.models``:
name, folder, download URL). Run: ``python tools/build_workflows.py [OUT_DIR]``.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodes import NODE_SPECS  # noqa: E402
from nodes.spec import spec_signature  # noqa: E402

OUT = ROOT / "example_workflows"
CORE = json.loads((ROOT / "tests" / "data" / "comfy_core_nodes.json").read_text())["nodes"]
CATALOG = {**CORE, **{s.node_id: spec_signature(s) for s in NODE_SPECS}}
# RefAM widgets a workflow does not set keep the node's declared default: the builders below name
# only the values a workflow chooses, so a default changed in a spec reaches every workflow.
DEFAULTS = {s.node_id: {p.name: p.default for p in s.inputs if p.is_widget} for s in NODE_SPECS}
TITLES = {s.node_id: s.display_name for s in NODE_SPECS}
# What the frontend stores for a loader's upload button.
_UPLOAD_VALUE = {"LoadImage": "image", "LoadVideo": "image"}

_HF = "https://huggingface.co"
# Every model file a shipped workflow names: ComfyUI folder and where to download it.
MODEL_FILES: dict[str, tuple[str, str]] = {
    "flux1-dev.safetensors": ("diffusion_models", f"{_HF}/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors"),
    "flux1-fill-dev.safetensors": (
        "diffusion_models",
        f"{_HF}/black-forest-labs/FLUX.1-Fill-dev/resolve/main/flux1-fill-dev.safetensors",
    ),
    "t5xxl_fp16.safetensors": ("text_encoders", f"{_HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors"),
    "clip_l.safetensors": ("text_encoders", f"{_HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"),
    "ae.safetensors": ("vae", f"{_HF}/black-forest-labs/FLUX.1-schnell/resolve/main/ae.safetensors"),
    "flux-2-klein-4b.safetensors": (
        "diffusion_models",
        f"{_HF}/black-forest-labs/FLUX.2-klein-4B/resolve/main/flux-2-klein-4b.safetensors",
    ),
    "qwen_3_4b.safetensors": (
        "text_encoders",
        f"{_HF}/Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors",
    ),
    "flux2-vae.safetensors": ("vae", f"{_HF}/Comfy-Org/flux2-dev/resolve/main/split_files/vae/flux2-vae.safetensors"),
    "sam2.1_hiera_large.pt": ("sam2", "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt"),
    "mochi_preview_bf16.safetensors": (
        "diffusion_models",
        f"{_HF}/Comfy-Org/mochi_preview_repackaged/resolve/main/split_files/diffusion_models/mochi_preview_bf16.safetensors",
    ),
    "mochi_vae.safetensors": (
        "vae",
        f"{_HF}/Comfy-Org/mochi_preview_repackaged/resolve/main/split_files/vae/mochi_vae.safetensors",
    ),
}

# Geometry (canvas units). Heights follow the frontend's own node sizing: a 30 px title bar above
# ``pos``, 20 px per socket row, 24 px per widget, plus the room a text box or an image preview takes
# (measured against the frontend's own ``computeSize`` in the browser test).
NODE_WIDTH = 270
TITLE_BAR = 30
SLOT_ROW = 20
WIDGET_ROW = 24
TEXT_BOX = 60
IMAGE_PREVIEW = 230
GAP = 24  # between nodes in a column and between columns
GROUP_PAD = 12
GROUP_TITLE = 44
GROUP_GAP = 30
ROW_GAP = 36
# litegraph's group colours
COLOURS = {"load": "#3f789e", "describe": "#8A8", "capture": "#b58b2a", "segment": "#a1309b", "output": "#444"}


@dataclass
class Node:
    id: int
    type: str
    widgets: dict[str, Any]
    title: str | None = None
    links_in: dict[str, tuple[int, int]] = field(default_factory=dict)  # input -> (node, slot)

    def sockets(self) -> list[dict[str, Any]]:
        """The entries of the node's ``inputs`` array, in the frontend's order: the sockets, then
        the widgets fed by a link (a link's target slot indexes this list)."""
        inputs = CATALOG[self.type]["inputs"]
        return [i for i in inputs if not i["widget"]] + [i for i in inputs if i["widget"] and i["name"] in self.links_in]

    def height(self) -> int:
        sig = CATALOG[self.type]
        widgets = [i for i in sig["inputs"] if i["widget"] and i["name"] not in self.links_in]
        rows = max(len(self.sockets()), len(sig["outputs"]))
        height = 14 + SLOT_ROW * rows + WIDGET_ROW * sum(1 + i["extra_widgets"] for i in widgets)
        if any(i["name"] in ("caption", "expressions", "text") for i in widgets):
            height += TEXT_BOX
        if self.type in ("LoadImage", "LoadVideo"):
            height += IMAGE_PREVIEW
        return height


@dataclass
class Group:
    title: str
    colour: str
    columns: list[list[Node]]


class Graph:
    def __init__(self, name: str, note: str) -> None:
        self.name, self.note = name, note
        self.nodes: list[Node] = []
        self.rows: list[list[Group]] = []

    def add(self, type_: str, title: str | None = None, **widgets: Any) -> Node:
        sig = CATALOG[type_]
        names = {i["name"] for i in sig["inputs"]}
        unknown = set(widgets) - names
        if unknown:
            raise KeyError(f"{type_} has no inputs {unknown}")
        node = Node(len(self.nodes) + 1, type_, {**DEFAULTS.get(type_, {}), **widgets}, title)
        self.nodes.append(node)
        return node

    def link(self, src: Node, output: str, dst: Node, input_: str) -> None:
        outs = [o["name"] for o in CATALOG[src.type]["outputs"]]
        dst.links_in[input_] = (src.id, outs.index(output))

    def layout(self, *rows: list[Group]) -> None:
        placed = [n.id for row in rows for g in row for column in g.columns for n in column]
        if sorted(placed) != [n.id for n in self.nodes]:
            raise ValueError(f"{self.name}: every node must sit in exactly one group column")
        self.rows = list(rows)

    # -- geometry ------------------------------------------------------------------------------------
    def _depths(self) -> dict[int, int]:
        depth: dict[int, int] = {}

        def of(node: Node) -> int:
            if node.id not in depth:
                parents = [self.nodes[n - 1] for n, _ in node.links_in.values()]
                depth[node.id] = 1 + max((of(p) for p in parents), default=-1)
            return depth[node.id]

        for n in self.nodes:
            of(n)
        return depth

    def _placement(self) -> tuple[dict[int, tuple[list[int], list[int]]], list[dict[str, Any]]]:
        """Node ``pos`` / ``size`` and the group records, row by row, group by group."""
        where: dict[int, tuple[list[int], list[int]]] = {}
        groups: list[dict[str, Any]] = []
        top = 0
        for row in self.rows:
            left, row_height = 0, 0
            for group in row:
                x = left + GROUP_PAD
                content = 0
                for column in group.columns:
                    y = top + GROUP_TITLE + TITLE_BAR
                    for node in column:
                        where[node.id] = ([x, y], [NODE_WIDTH, node.height()])
                        y += node.height() + GAP + TITLE_BAR
                    content = max(content, y - GAP - TITLE_BAR - top)
                    x += NODE_WIDTH + GAP
                width = x - GAP + GROUP_PAD - left
                height = content + GROUP_PAD
                groups.append(
                    {
                        "id": len(groups) + 1,
                        "title": group.title,
                        "bounding": [left, top, width, height],
                        "color": group.colour,
                        "font_size": 24,
                        "flags": {},
                    }
                )
                left += width + GROUP_GAP
                row_height = max(row_height, height)
            top += row_height + ROW_GAP
        return where, groups

    def _widget_values(self, node: Node) -> list[Any]:
        values: list[Any] = []
        # The frontend keeps a value for every widget, also one fed by a link (it shows again when
        # the link is removed), so linked widgets need a value here too.
        for spec in CATALOG[node.type]["inputs"]:
            if not spec["widget"]:
                continue
            if spec["name"] not in node.widgets:
                raise KeyError(f"{node.type}: widget {spec['name']!r} needs a value")
            values.append(node.widgets[spec["name"]])
            if spec["extra_widgets"]:
                values.append("fixed" if spec["type"] == "INT" else _UPLOAD_VALUE.get(node.type, "image"))
        return values

    def _models(self, node: Node) -> list[dict[str, str]]:
        """What the missing-models dialog reads: the files this node's widgets name."""
        named = [v for v in node.widgets.values() if isinstance(v, str) and v in MODEL_FILES]
        return [{"name": n, "url": MODEL_FILES[n][1], "directory": MODEL_FILES[n][0]} for n in named]

    # -- the two formats ------------------------------------------------------------------------------
    def ui(self) -> dict[str, Any]:
        depth = self._depths()
        where, groups = self._placement()
        links: list[list[Any]] = []
        in_link: dict[tuple[int, str], int] = {}
        out_links: dict[tuple[int, int], list[int]] = {}
        for node in self.nodes:
            slots = [i["name"] for i in node.sockets()]
            for input_, (src, slot) in node.links_in.items():
                link_id = len(links) + 1
                kind = CATALOG[self.nodes[src - 1].type]["outputs"][slot]["type"]
                # The target slot indexes the node's ``inputs`` array (sockets and linked widgets
                # only), not the full input list of the node's signature.
                links.append([link_id, src, slot, node.id, slots.index(input_), kind])
                in_link[(node.id, input_)] = link_id
                out_links.setdefault((src, slot), []).append(link_id)
        ui_nodes = []
        order = sorted(self.nodes, key=lambda n: (depth[n.id], n.id))
        for rank, node in enumerate(order):
            sig = CATALOG[node.type]
            inputs = []
            for i in node.sockets():
                entry: dict[str, Any] = {"name": i["name"], "type": i["type"], "link": in_link.get((node.id, i["name"]))}
                if i["widget"]:
                    entry["widget"] = {"name": i["name"]}
                inputs.append(entry)
            outputs = [
                {"name": o["name"], "type": o["type"], "links": out_links.get((node.id, s), []), "slot_index": s}
                for s, o in enumerate(sig["outputs"])
            ]
            properties: dict[str, Any] = {"Node name for S&R": node.type}
            models = self._models(node)
            if models:
                properties["models"] = models
            pos, size = where[node.id]
            ui_node: dict[str, Any] = {
                "id": node.id,
                "type": node.type,
                "pos": pos,
                "size": size,
                "flags": {},
                "order": rank,
                "mode": 0,
                "inputs": inputs,
                "outputs": outputs,
                "properties": properties,
                "widgets_values": self._widget_values(node),
            }
            if node.title:
                ui_node["title"] = node.title
            ui_nodes.append(ui_node)
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-refam/{self.name}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(links),
            "nodes": ui_nodes,
            "links": links,
            "groups": groups,
            "config": {},
            # No stored view: the frontend fits the graph to the window when it opens the file.
            "extra": {"refam_note": self.note},
            "version": 0.4,
        }

    def api(self) -> dict[str, Any]:
        prompt: dict[str, Any] = {}
        for node in self.nodes:
            inputs: dict[str, Any] = {}
            for spec in CATALOG[node.type]["inputs"]:
                name = spec["name"]
                if name in node.links_in:
                    src, slot = node.links_in[name]
                    inputs[name] = [str(src), slot]
                elif spec["widget"]:
                    inputs[name] = node.widgets[name]
            prompt[str(node.id)] = {
                "class_type": node.type,
                "inputs": inputs,
                "_meta": {"title": node.title or TITLES.get(node.type, node.type)},
            }
        return prompt

    def write(self, out: Path = OUT) -> None:
        if not self.rows:
            raise ValueError(f"{self.name}: no layout")
        out.mkdir(exist_ok=True)
        (out / f"{self.name}.json").write_text(json.dumps(self.ui(), indent=1) + "\n")
        api_dir = out / "api"
        api_dir.mkdir(exist_ok=True)
        (api_dir / f"{self.name}.api.json").write_text(json.dumps(self.api(), indent=1) + "\n")


# -- pieces several workflows share ------------------------------------------------------------------
EXAMPLE_CAPTION = "two cats lying on a pink blanket next to two remote controls"


def flux_loaders(g: Graph):
    unet = g.add("UNETLoader", unet_name="flux1-dev.safetensors", weight_dtype="default")
    clip = g.add(
        "DualCLIPLoader",
        clip_name1="t5xxl_fp16.safetensors",
        clip_name2="clip_l.safetensors",
        type="flux",
        device="default",
    )
    vae = g.add("VAELoader", vae_name="ae.safetensors")
    return unet, clip, vae


def flux2_klein_loaders(g: Graph):
    """FLUX.2 klein 4B as ComfyUI's own klein template loads it: the model, Qwen3-4B (CLIP type
    flux2) and the FLUX.2 VAE."""
    unet = g.add("UNETLoader", unet_name="flux-2-klein-4b.safetensors", weight_dtype="default")
    clip = g.add("CLIPLoader", clip_name="qwen_3_4b.safetensors", type="flux2", device="default")
    vae = g.add("VAELoader", vae_name="flux2-vae.safetensors")
    return unet, clip, vae


def text_nodes(g: Graph, clip: Node, expressions: str, caption: str):
    cond = g.add("RefAMCaptionConditioning", caption=caption)
    expr = g.add("RefAMReferringExpression", expressions=expressions)
    g.link(clip, "CLIP", cond, "clip")
    g.link(clip, "CLIP", expr, "clip")
    return cond, expr


def capture_inputs(g: Graph, capture: Node, unet: Node, vae: Node, cond: Node, expr: Node) -> None:
    g.link(unet, "MODEL", capture, "model")
    g.link(vae, "VAE", capture, "vae")
    g.link(cond, "conditioning", capture, "conditioning")
    g.link(expr, "expression", capture, "expression")


def filter_node(g: Graph, capture: Node) -> Node:
    filt = g.add("RefAMFilterTokens")
    g.link(capture, "attention", filt, "attention")
    return filt


def heatmap_and_point(g: Graph, filt: Node, image: Node, image_output: str):
    heat = g.add("RefAMHeatmap")
    g.link(filt, "attention", heat, "attention")
    g.link(image, image_output, heat, "image")
    point = g.add("RefAMPoint")
    g.link(heat, "heatmaps", point, "heatmaps")
    return heat, point


def load_sam2(g: Graph) -> Node:
    return g.add("RefAMLoadSAM2", checkpoint="sam2.1_hiera_large.pt")


def video_source(g: Graph):
    video = g.add("LoadVideo", file="refam_clip.mp4")
    parts = g.add("GetVideoComponents")
    g.link(video, "VIDEO", parts, "video")
    return video, parts


def track_and_save(g: Graph, sam2: Node, parts: Node, heat: Node, point: Node, selection_from: Node, prompt_frame: str):
    prop = g.add("RefAMPropagateSAM2Video", prompt_frame=prompt_frame)
    g.link(sam2, "segmenter", prop, "segmenter")
    g.link(parts, "images", prop, "frames")
    g.link(point, "points", prop, "points")
    g.link(heat, "heatmaps", prop, "heatmaps")
    g.link(selection_from, "selection", prop, "selection")
    to_image = g.add("MaskToImage")
    g.link(prop, "mask", to_image, "mask")
    make = g.add("CreateVideo", fps=30.0)
    g.link(to_image, "IMAGE", make, "images")
    g.link(parts, "fps", make, "fps")
    save = g.add("SaveVideo", filename_prefix="refam_video_mask", format="auto", codec="auto")
    g.link(make, "VIDEO", save, "video")
    return prop, [to_image, make], [save]


def load(*columns: list[Node]) -> Group:
    return Group("1 · Load models and image", COLOURS["load"], list(columns))


def describe(*columns: list[Node]) -> Group:
    return Group("2 · Describe: caption and what to segment", COLOURS["describe"], list(columns))


def capture_group(*columns: list[Node]) -> Group:
    return Group("3 · Capture → heatmap → point", COLOURS["capture"], list(columns))


def segment_group(*columns: list[Node], title: str = "4 · Segment") -> Group:
    return Group(title, COLOURS["segment"], list(columns))


def output_group(*columns: list[Node], title: str = "5 · Output") -> Group:
    return Group(title, COLOURS["output"], list(columns))


# -- the shared front half: FLUX + image + expression -> captured attention -------------------------
def flux_front(g: Graph, expressions: str, caption: str = EXAMPLE_CAPTION, loaders=flux_loaders):
    unet, clip, vae = loaders(g)
    image = g.add("LoadImage", image="refam_example.png")
    cond, expr = text_nodes(g, clip, expressions, caption)
    capture = g.add("RefAMCaptureAttentionFlux")
    capture_inputs(g, capture, unet, vae, cond, expr)
    g.link(image, "IMAGE", capture, "image")
    filt = filter_node(g, capture)
    return {
        "unet": unet, "clip": clip, "vae": vae, "image": image, "cond": cond, "expr": expr,
        "capture": capture, "filter": filt,
    }


def segmentation_tail(g: Graph, front: dict):
    heat, point = heatmap_and_point(g, front["filter"], front["image"], "IMAGE")
    sam2 = load_sam2(g)
    seg = g.add("RefAMSegment")
    g.link(sam2, "segmenter", seg, "segmenter")
    g.link(front["image"], "IMAGE", seg, "image")
    g.link(point, "points", seg, "points")
    return heat, point, sam2, seg


def _segmentation_workflow(name: str, note: str, loaders, mask_prefix: str) -> Graph:
    """Load -> describe -> capture -> heatmap -> point -> SAM2 mask -> saved mask, on ``loaders``' model."""
    g = Graph(name, note)
    f = flux_front(g, "the cat on the left", loaders=loaders)
    heat, point, sam2, seg = segmentation_tail(g, f)
    to_image = g.add("MaskToImage")
    g.link(seg, "mask", to_image, "mask")
    save = g.add("SaveImage", filename_prefix=mask_prefix)
    g.link(to_image, "IMAGE", save, "images")
    g.layout(
        [load([f["unet"], f["vae"]], [f["clip"], sam2], [f["image"]]), describe([f["cond"]], [f["expr"]])],
        [
            capture_group([f["capture"], f["filter"]], [heat, point]),
            segment_group([seg]),
            output_group([to_image, save]),
        ],
    )
    return g


def referring_segmentation() -> Graph:
    return _segmentation_workflow(
        "refam_referring_segmentation",
        "RefAM: type what to segment (one expression per line) -> heatmap preview, point and SAM2 mask.",
        flux_loaders,
        "refam_mask",
    )


def referring_segmentation_flux2_klein() -> Graph:
    return _segmentation_workflow(
        "refam_referring_segmentation_flux2_klein",
        "RefAM on FLUX.2 klein 4B (Qwen3 text encoder): type what to segment -> heatmap preview, point and SAM2 "
        "mask. The operating point is FLUX.1's, untuned for FLUX.2.",
        flux2_klein_loaders,
        "refam_mask_flux2",
    )


def refer_and_inpaint() -> Graph:
    g = Graph(
        "refam_refer_and_inpaint",
        "RefAM finds the object named in the expression on FLUX.1-dev; its grown mask drives ComfyUI's own "
        "FLUX.1 Fill inpainting recipe (guidance 30, differential diffusion), composited back onto the photo.",
    )
    f = flux_front(g, "the cat on the left")
    heat, point, sam2, seg = segmentation_tail(g, f)
    fill = g.add("UNETLoader", title="Load FLUX.1 Fill (inpainting)", unet_name="flux1-fill-dev.safetensors",
                 weight_dtype="default")
    grow = g.add("GrowMask", expand=12, tapered_corners=True)
    g.link(seg, "mask", grow, "mask")
    prompt = g.add("CLIPTextEncode", title="Inpaint prompt", text="a sleeping red fox, photo")
    g.link(f["clip"], "CLIP", prompt, "clip")
    guidance = g.add("FluxGuidance", guidance=30.0)
    g.link(prompt, "CONDITIONING", guidance, "conditioning")
    negative = g.add("ConditioningZeroOut")
    g.link(prompt, "CONDITIONING", negative, "conditioning")
    inpaint = g.add("InpaintModelConditioning", noise_mask=True)
    g.link(guidance, "CONDITIONING", inpaint, "positive")
    g.link(negative, "CONDITIONING", inpaint, "negative")
    g.link(f["vae"], "VAE", inpaint, "vae")
    g.link(f["image"], "IMAGE", inpaint, "pixels")
    g.link(grow, "MASK", inpaint, "mask")
    diff = g.add("DifferentialDiffusion", strength=1.0)
    g.link(fill, "MODEL", diff, "model")
    sampler = g.add(
        "KSampler", seed=0, steps=20, cfg=1.0, sampler_name="euler", scheduler="normal", denoise=1.0
    )
    g.link(diff, "MODEL", sampler, "model")
    g.link(inpaint, "positive", sampler, "positive")
    g.link(inpaint, "negative", sampler, "negative")
    g.link(inpaint, "latent", sampler, "latent_image")
    decode = g.add("VAEDecode")
    g.link(sampler, "LATENT", decode, "samples")
    g.link(f["vae"], "VAE", decode, "vae")
    composite = g.add("ImageCompositeMasked", x=0, y=0, resize_source=False)
    g.link(f["image"], "IMAGE", composite, "destination")
    g.link(decode, "IMAGE", composite, "source")
    g.link(grow, "MASK", composite, "mask")
    save = g.add("SaveImage", filename_prefix="refam_inpaint")
    g.link(composite, "IMAGE", save, "images")
    g.layout(
        [load([f["unet"], f["vae"], fill], [f["clip"], sam2], [f["image"]]), describe([f["cond"], prompt], [f["expr"]])],
        [
            capture_group([f["capture"], f["filter"]], [heat, point]),
            segment_group([seg, grow]),
            output_group(
                [guidance, negative, diff], [inpaint, sampler], [decode, composite, save],
                title="5 · Inpaint (FLUX.1 Fill) and output",
            ),
        ],
    )
    return g


def diagnostics() -> Graph:
    g = Graph(
        "refam_token_diagnostics",
        "Per-token attention maps with their roles; global attention sinks (GAS) flagged; heatmap per block range.",
    )
    f = flux_front(g, "the cat on the left\nthe remote control")
    maps = g.add("RefAMTokenMaps", image_index=0)
    g.link(f["filter"], "attention", maps, "attention")
    heat_all = g.add("RefAMHeatmap", title="Heatmap: all blocks")
    heat_late = g.add("RefAMHeatmap", title="Heatmap: skip first 60%", skip_fraction=0.6)
    for heat in (heat_all, heat_late):
        g.link(f["filter"], "attention", heat, "attention")
        g.link(f["image"], "IMAGE", heat, "image")
    g.layout(
        [load([f["unet"], f["vae"]], [f["clip"]], [f["image"]]), describe([f["cond"]], [f["expr"]])],
        [
            capture_group([f["capture"]], [f["filter"]]),
            output_group([maps], [heat_all], [heat_late], title="4 · Token maps and heatmaps"),
        ],
    )
    return g


def video_flux_on_frames() -> Graph:
    g = Graph(
        "refam_video_flux_frame_sam2",
        "Video without Mochi: RefAM on a few candidate frames with FLUX, the most evident frame prompts SAM2, "
        "which tracks the object forward and backward through the clip.",
    )
    unet, clip, vae = flux_loaders(g)
    video, parts = video_source(g)
    pick = g.add("RefAMPickFrame", mode="evenly_spaced", candidates=4)
    g.link(parts, "images", pick, "frames")
    cond, expr = text_nodes(g, clip, "the person in white", "a person riding a bike on a dirt path")
    capture = g.add("RefAMCaptureAttentionFlux")
    capture_inputs(g, capture, unet, vae, cond, expr)
    g.link(pick, "frames", capture, "image")
    filt = filter_node(g, capture)
    heat, point = heatmap_and_point(g, filt, pick, "frames")
    sam2 = load_sam2(g)
    # Not the paper's protocol (that is the first frame): the most evident of 4 spread frames.
    prop, convert, save = track_and_save(g, sam2, parts, heat, point, pick, prompt_frame="best")
    g.layout(
        [load([unet, vae], [clip, sam2], [video], [parts, pick]), describe([cond], [expr])],
        [
            capture_group([capture, filt], [heat, point]),
            segment_group([prop], title="4 · Track (SAM2 video)"),
            output_group(convert, save),
        ],
    )
    return g


def video_mochi() -> Graph:
    g = Graph(
        "refam_video_mochi_sam2",
        "Video with Mochi (the paper's video path): one Mochi pass over the clip, the first frame's point prompts "
        "SAM2 (the paper's protocol; prompt_frame=best: the most evident latent frame), which propagates the mask "
        "through every frame.",
    )
    unet = g.add("UNETLoader", unet_name="mochi_preview_bf16.safetensors", weight_dtype="default")
    clip = g.add("CLIPLoader", clip_name="t5xxl_fp16.safetensors", type="mochi", device="default")
    vae = g.add("VAELoader", vae_name="mochi_vae.safetensors")
    video, parts = video_source(g)
    cond, expr = text_nodes(g, clip, "the person in white", "a person riding a bike on a dirt path")
    capture = g.add("RefAMCaptureAttentionMochi")
    capture_inputs(g, capture, unet, vae, cond, expr)
    g.link(parts, "images", capture, "frames")
    filt = filter_node(g, capture)
    heat, point = heatmap_and_point(g, filt, capture, "frames")
    sam2 = load_sam2(g)
    prop, convert, save = track_and_save(g, sam2, parts, heat, point, capture, prompt_frame="first")
    g.layout(
        [load([unet, vae], [clip, sam2], [video], [parts]), describe([cond], [expr])],
        [
            capture_group([capture], [filt], [heat, point]),
            segment_group([prop], title="4 · Track (SAM2 video)"),
            output_group(convert, save),
        ],
    )
    return g


WORKFLOWS = (
    referring_segmentation,
    referring_segmentation_flux2_klein,
    refer_and_inpaint,
    diagnostics,
    video_flux_on_frames,
    video_mochi,
)

if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    for build in WORKFLOWS:
        graph = build()
        graph.write(target)
        print(f"wrote {graph.name}: {len(graph.nodes)} nodes")
