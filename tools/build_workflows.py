"""Write the shipped example workflows: UI (litegraph) format + API-format twin of each.

One graph description per workflow, laid out left to right by depth, so the two formats can
never drift apart. Node signatures come from the pack's own specs and, for core nodes, from
``tests/data/comfy_core_nodes.json`` (a snapshot of ComfyUI's /object_info that a ComfyUI-gated
test checks against the real thing). Run: ``python tools/build_workflows.py [OUT_DIR]``.
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
TITLES = {s.node_id: s.display_name for s in NODE_SPECS}
# What the frontend stores for a loader's upload button.
_UPLOAD_VALUE = {"LoadImage": "image", "LoadVideo": "image"}


@dataclass
class Node:
    id: int
    type: str
    widgets: dict[str, Any]
    title: str | None = None
    links_in: dict[str, tuple[int, int]] = field(default_factory=dict)  # input -> (node, slot)


class Graph:
    def __init__(self, name: str, note: str) -> None:
        self.name, self.note = name, note
        self.nodes: list[Node] = []

    def add(self, type_: str, title: str | None = None, **widgets: Any) -> Node:
        sig = CATALOG[type_]
        names = {i["name"] for i in sig["inputs"]}
        unknown = set(widgets) - names
        if unknown:
            raise KeyError(f"{type_} has no inputs {unknown}")
        node = Node(len(self.nodes) + 1, type_, widgets, title)
        self.nodes.append(node)
        return node

    def link(self, src: Node, output: str, dst: Node, input_: str) -> None:
        outs = [o["name"] for o in CATALOG[src.type]["outputs"]]
        dst.links_in[input_] = (src.id, outs.index(output))

    # -- layout ------------------------------------------------------------------------------------
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

    # -- the two formats ------------------------------------------------------------------------------
    def ui(self) -> dict[str, Any]:
        depth = self._depths()
        column_y: dict[int, float] = {}
        links: list[list[Any]] = []
        out_links: dict[tuple[int, int], list[int]] = {}
        for node in self.nodes:
            for input_, (src, slot) in node.links_in.items():
                link_id = len(links) + 1
                kind = CATALOG[self.nodes[src - 1].type]["outputs"][slot]["type"]
                slot_in = [i["name"] for i in CATALOG[node.type]["inputs"]].index(input_)
                links.append([link_id, src, slot, node.id, slot_in, kind])
                out_links.setdefault((src, slot), []).append(link_id)
        ui_nodes = []
        order = sorted(self.nodes, key=lambda n: (depth[n.id], n.id))
        for rank, node in enumerate(order):
            sig = CATALOG[node.type]
            sockets = [i for i in sig["inputs"] if not i["widget"] or i["name"] in node.links_in]
            widgets = self._widget_values(node)
            height = 60 + 26 * max(len(sockets), len(sig["outputs"])) + 30 * len(widgets)
            if node.type == "LoadImage":
                height += 300
            if any(i["name"] in ("caption", "expressions", "text") for i in sig["inputs"]):
                height += 150  # room for the multiline text box
            x = 40 + depth[node.id] * 380
            y = column_y.get(depth[node.id], 40)
            column_y[depth[node.id]] = y + height + 40
            inputs = []
            for i in sockets:
                entry: dict[str, Any] = {"name": i["name"], "type": i["type"], "link": None}
                if i["name"] in node.links_in:
                    src, slot = node.links_in[i["name"]]
                    entry["link"] = next(
                        link[0] for link in links if link[3] == node.id and link[1] == src and link[2] == slot
                    )
                if i["widget"]:
                    entry["widget"] = {"name": i["name"]}
                inputs.append(entry)
            outputs = [
                {
                    "name": o["name"],
                    "type": o["type"],
                    "links": out_links.get((node.id, s), []),
                    "slot_index": s,
                }
                for s, o in enumerate(sig["outputs"])
            ]
            ui_node: dict[str, Any] = {
                "id": node.id,
                "type": node.type,
                "pos": [x, y],
                "size": [340, height],
                "flags": {},
                "order": rank,
                "mode": 0,
                "inputs": inputs,
                "outputs": outputs,
                "properties": {"Node name for S&R": node.type},
                "widgets_values": widgets,
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
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}, "refam_note": self.note},
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
        out.mkdir(exist_ok=True)
        (out / f"{self.name}.json").write_text(json.dumps(self.ui(), indent=1) + "\n")
        api_dir = out / "api"
        api_dir.mkdir(exist_ok=True)
        (api_dir / f"{self.name}.api.json").write_text(json.dumps(self.api(), indent=1) + "\n")


# -- pieces several workflows share ------------------------------------------------------------------
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


def text_nodes(g: Graph, clip: Node, expressions: str, caption: str = ""):
    cond = g.add("RefAMCaptionConditioning", caption=caption, guidance=3.5)
    expr = g.add(
        "RefAMReferringExpression",
        expressions=expressions,
        magnets="_ with to and pink",
        noun_phrase=True,
        spatial_bias=True,
    )
    g.link(clip, "CLIP", cond, "clip")
    g.link(clip, "CLIP", expr, "clip")
    return cond, expr


def capture_inputs(g: Graph, capture: Node, unet: Node, vae: Node, cond: Node, expr: Node) -> None:
    g.link(unet, "MODEL", capture, "model")
    g.link(vae, "VAE", capture, "vae")
    g.link(cond, "conditioning", capture, "conditioning")
    g.link(expr, "expression", capture, "expression")


def filter_node(g: Graph, capture: Node) -> Node:
    filt = g.add(
        "RefAMFilterTokens",
        drop_stop_words=True,
        drop_magnets=True,
        drop_eos=True,
        remove_gas=True,
        gas_threshold=10.0,
        noun_phrase=True,
    )
    g.link(capture, "attention", filt, "attention")
    return filt


def heatmap_and_point(g: Graph, filt: Node, image: Node, image_output: str):
    heat = g.add("RefAMHeatmap", blocks="all", skip_fraction=0.0, spatial_bias=True)
    g.link(filt, "attention", heat, "attention")
    g.link(image, image_output, heat, "image")
    point = g.add("RefAMPoint", mode="argmax", count=3, min_distance=2)
    g.link(heat, "heatmaps", point, "heatmaps")
    return heat, point


def load_sam2(g: Graph) -> Node:
    return g.add("RefAMLoadSAM2", checkpoint="sam2.1_hiera_large.pt", device="auto", dtype="auto")


def video_source(g: Graph):
    video = g.add("LoadVideo", file="refam_clip.mp4")
    parts = g.add("GetVideoComponents")
    g.link(video, "VIDEO", parts, "video")
    return parts


def track_and_save(g: Graph, parts: Node, heat: Node, point: Node, selection_from: Node) -> None:
    prop = g.add("RefAMPropagateSAM2Video", points_from=1, direction="both")
    g.link(load_sam2(g), "segmenter", prop, "segmenter")
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


# -- the shared front half: FLUX + image + expression -> captured attention -------------------------
def flux_front(g: Graph, expressions: str, caption: str = ""):
    unet, clip, vae = flux_loaders(g)
    image = g.add("LoadImage", image="refam_example.png")
    cond, expr = text_nodes(g, clip, expressions, caption)
    capture = g.add("RefAMCaptureAttentionFlux", sigma=0.75, seed=0, blocks="all", resolution=1024)
    capture_inputs(g, capture, unet, vae, cond, expr)
    g.link(image, "IMAGE", capture, "image")
    return {"unet": unet, "clip": clip, "vae": vae, "image": image, "filter": filter_node(g, capture)}


def segmentation_tail(g: Graph, front: dict):
    heat, point = heatmap_and_point(g, front["filter"], front["image"], "IMAGE")
    seg = g.add("RefAMSegment")
    g.link(load_sam2(g), "segmenter", seg, "segmenter")
    g.link(front["image"], "IMAGE", seg, "image")
    g.link(point, "points", seg, "points")
    return heat, seg


def referring_segmentation() -> Graph:
    g = Graph(
        "refam_referring_segmentation",
        "RefAM: type what to segment (one expression per line) -> heatmap preview, point and SAM2 mask.",
    )
    front = flux_front(g, "the cat on the left")
    _heat, seg = segmentation_tail(g, front)
    to_image = g.add("MaskToImage")
    g.link(seg, "mask", to_image, "mask")
    save = g.add("SaveImage", filename_prefix="refam_mask")
    g.link(to_image, "IMAGE", save, "images")
    return g


def refer_and_inpaint() -> Graph:
    g = Graph(
        "refam_refer_and_inpaint",
        "RefAM finds the object named in the expression; its mask drives a FLUX inpainting pass.",
    )
    front = flux_front(g, "the cat on the left")
    _heat, seg = segmentation_tail(g, front)
    grow = g.add("GrowMask", expand=12, tapered_corners=True)
    g.link(seg, "mask", grow, "mask")
    prompt = g.add("CLIPTextEncode", title="Inpaint prompt", text="a sleeping red fox, photo")
    g.link(front["clip"], "CLIP", prompt, "clip")
    guidance = g.add("FluxGuidance", guidance=30.0)
    g.link(prompt, "CONDITIONING", guidance, "conditioning")
    negative = g.add("ConditioningZeroOut")
    g.link(prompt, "CONDITIONING", negative, "conditioning")
    inpaint = g.add("InpaintModelConditioning", noise_mask=True)
    g.link(guidance, "CONDITIONING", inpaint, "positive")
    g.link(negative, "CONDITIONING", inpaint, "negative")
    g.link(front["vae"], "VAE", inpaint, "vae")
    g.link(front["image"], "IMAGE", inpaint, "pixels")
    g.link(grow, "MASK", inpaint, "mask")
    diff = g.add("DifferentialDiffusion", strength=1.0)
    g.link(front["unet"], "MODEL", diff, "model")
    sampler = g.add(
        "KSampler", seed=0, steps=20, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0
    )
    g.link(diff, "MODEL", sampler, "model")
    g.link(inpaint, "positive", sampler, "positive")
    g.link(inpaint, "negative", sampler, "negative")
    g.link(inpaint, "latent", sampler, "latent_image")
    decode = g.add("VAEDecode")
    g.link(sampler, "LATENT", decode, "samples")
    g.link(front["vae"], "VAE", decode, "vae")
    composite = g.add("ImageCompositeMasked", x=0, y=0, resize_source=False)
    g.link(front["image"], "IMAGE", composite, "destination")
    g.link(decode, "IMAGE", composite, "source")
    g.link(grow, "MASK", composite, "mask")
    save = g.add("SaveImage", filename_prefix="refam_inpaint")
    g.link(composite, "IMAGE", save, "images")
    return g


def diagnostics() -> Graph:
    g = Graph(
        "refam_token_diagnostics",
        "Per-token attention maps with their roles; global attention sinks (GAS) flagged; heatmap per block range.",
    )
    front = flux_front(g, "the cat on the left\nthe remote control")
    maps = g.add("RefAMTokenMaps", image_index=0)
    g.link(front["filter"], "attention", maps, "attention")
    heat_all = g.add("RefAMHeatmap", title="Heatmap: all blocks", blocks="all", skip_fraction=0.0, spatial_bias=True)
    heat_late = g.add(
        "RefAMHeatmap", title="Heatmap: skip first 60%", blocks="all", skip_fraction=0.6, spatial_bias=True
    )
    for heat in (heat_all, heat_late):
        g.link(front["filter"], "attention", heat, "attention")
        g.link(front["image"], "IMAGE", heat, "image")
    return g


def video_flux_on_frames() -> Graph:
    g = Graph(
        "refam_video_flux_frame_sam2",
        "Video without Mochi: RefAM on a few candidate frames with FLUX, the most evident frame prompts SAM2, "
        "which tracks the object forward and backward through the clip.",
    )
    unet, clip, vae = flux_loaders(g)
    parts = video_source(g)
    pick = g.add("RefAMPickFrame", mode="evenly_spaced", candidates=4, index=0)
    g.link(parts, "images", pick, "frames")
    cond, expr = text_nodes(g, clip, "the person in white")
    capture = g.add("RefAMCaptureAttentionFlux", sigma=0.75, seed=0, blocks="all", resolution=1024)
    capture_inputs(g, capture, unet, vae, cond, expr)
    g.link(pick, "frames", capture, "image")
    heat, point = heatmap_and_point(g, filter_node(g, capture), pick, "frames")
    track_and_save(g, parts, heat, point, pick)
    return g


def video_mochi() -> Graph:
    g = Graph(
        "refam_video_mochi_sam2",
        "Video with Mochi (the paper's video path): one Mochi pass over the clip, the most evident latent frame's "
        "point prompts SAM2, which propagates the mask through every frame.",
    )
    unet = g.add("UNETLoader", unet_name="mochi_preview_bf16.safetensors", weight_dtype="default")
    clip = g.add("CLIPLoader", clip_name="t5xxl_fp16.safetensors", type="mochi", device="default")
    vae = g.add("VAELoader", vae_name="mochi_vae.safetensors")
    parts = video_source(g)
    cond, expr = text_nodes(g, clip, "the person in white")
    capture = g.add("RefAMCaptureAttentionMochi", sigma=0.01, seed=0, blocks="all", resolution=480)
    capture_inputs(g, capture, unet, vae, cond, expr)
    g.link(parts, "images", capture, "frames")
    heat, point = heatmap_and_point(g, filter_node(g, capture), capture, "frames")
    track_and_save(g, parts, heat, point, capture)
    return g


WORKFLOWS = (referring_segmentation, refer_and_inpaint, diagnostics, video_flux_on_frames, video_mochi)

if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    for build in WORKFLOWS:
        graph = build()
        graph.write(target)
        print(f"wrote {graph.name}: {len(graph.nodes)} nodes")
