"""Shipped workflows vs the pack's node declarations (no ComfyUI needed).

Core ComfyUI nodes are checked against ``tests/data/comfy_core_nodes.json``, a snapshot of
ComfyUI's /object_info that ``tests/nodes/test_comfy_server.py`` compares with a live server.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from nodes import NODE_SPECS
from nodes.spec import CATEGORY, spec_signature

WORKFLOWS = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
CORE = json.loads((REPO_ROOT / "tests" / "data" / "comfy_core_nodes.json").read_text())["nodes"]
CATALOG = {**CORE, **{s.node_id: spec_signature(s) for s in NODE_SPECS}}


def _api_twin(path):
    return json.loads((path.parent / "api" / f"{path.stem}.api.json").read_text())


def test_image_workflows_are_shipped_and_every_workflow_has_an_api_twin():
    names = {p.stem for p in WORKFLOWS}
    assert {"refam_referring_segmentation", "refam_refer_and_inpaint", "refam_token_diagnostics"} <= names
    for path in WORKFLOWS:
        assert (path.parent / "api" / f"{path.stem}.api.json").is_file()


def test_node_declarations():
    ids = [s.node_id for s in NODE_SPECS]
    assert len(set(ids)) == len(ids) and all(i.startswith("RefAM") for i in ids)
    assert CATEGORY == "RefAM"
    for spec in NODE_SPECS:
        for p in spec.inputs:
            assert p.tooltip.strip(), f"{spec.node_id}.{p.name} has no tooltip"
            if p.kind == "COMBO" and not callable(p.options):
                assert p.default in p.choices()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_ui_workflow_matches_node_signatures(path):
    wf = json.loads(path.read_text())
    links = {link[0]: link for link in wf["links"]}
    for node in wf["nodes"]:
        sig = CATALOG.get(node["type"])
        assert sig is not None, f"{path.name}: node type {node['type']} is neither RefAM's nor in ComfyUI core"
        linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
        widgets = [i for i in sig["inputs"] if i["widget"]]  # linked widgets keep a value too
        expected = sum(1 + i["extra_widgets"] for i in widgets)
        assert len(node["widgets_values"]) == expected, f"{path.name}: {node['type']} widget count"
        for i in sig["inputs"]:
            if not i["widget"] and not i["optional"]:
                assert i["name"] in linked, f"{path.name}: {node['type']}.{i['name']} is not connected"
        for entry in node.get("inputs", []):
            if entry.get("link") is None:
                continue
            _, src, slot, dst, _slot_in, kind = links[entry["link"]]
            assert dst == node["id"]
            src_node = next(n for n in wf["nodes"] if n["id"] == src)
            out_type = CATALOG[src_node["type"]]["outputs"][slot]["type"]
            want = next(i["type"] for i in sig["inputs"] if i["name"] == entry["name"])
            assert out_type == want == kind, f"{path.name}: {src_node['type']} -> {node['type']}.{entry['name']}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_api_twin_is_the_same_graph(path):
    ui = json.loads(path.read_text())
    api = _api_twin(path)
    assert set(api) == {str(n["id"]) for n in ui["nodes"]}
    links = {link[0]: link for link in ui["links"]}
    for node in ui["nodes"]:
        entry = api[str(node["id"])]
        assert entry["class_type"] == node["type"]
        sig = CATALOG[node["type"]]
        names = {i["name"] for i in sig["inputs"]}
        assert set(entry["inputs"]) <= names, f"unknown inputs {set(entry['inputs']) - names}"
        values = iter(node["widgets_values"])
        for i in sig["inputs"]:
            value = entry["inputs"].get(i["name"])
            if isinstance(value, list):
                link = next(links[x["link"]] for x in node["inputs"] if x["name"] == i["name"])
                assert value == [str(link[1]), link[2]]
                if i["widget"]:  # a linked widget still holds its (unused) value in the UI file
                    for _ in range(1 + i["extra_widgets"]):
                        next(values)
            elif i["widget"]:
                assert value == next(values)
                for _ in range(i["extra_widgets"]):
                    next(values)
            elif not i["optional"]:
                pytest.fail(f"{node['type']}.{i['name']} missing in the API twin")


def test_workflows_are_what_the_builder_writes(tmp_path):
    """The JSON files are generated; a hand edit that drifts from the builder fails here."""
    shipped = REPO_ROOT / "example_workflows"
    builder = REPO_ROOT / "tools" / "build_workflows.py"
    subprocess.run([sys.executable, str(builder), str(tmp_path)], check=True, capture_output=True)
    for built in tmp_path.rglob("*.json"):
        assert built.read_bytes() == (shipped / built.relative_to(tmp_path)).read_bytes(), built.name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_links_point_at_the_slots_the_frontend_reads(path):
    """A link's slots index the nodes' ``inputs`` / ``outputs`` arrays as written in the file (the
    frontend repairs a workflow whose links disagree with them, and says so in its console)."""
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert wf["last_link_id"] == max(link[0] for link in wf["links"])
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        target = nodes[dst]["inputs"][dst_slot]
        assert target["link"] == link_id, f"{path.name}: link {link_id} lands on {nodes[dst]['type']}.{target['name']}"
        assert target["type"] == kind
        origin = nodes[src]["outputs"][src_slot]
        assert link_id in origin["links"] and origin["type"] == kind
    # sockets first, then widgets fed by a link: the order the frontend gives a node's inputs
    for node in wf["nodes"]:
        is_widget = ["widget" in entry for entry in node["inputs"]]
        assert is_widget == sorted(is_widget), f"{path.name}: {node['type']} lists a widget input before a socket"


LOADER_FOLDERS = {
    "UNETLoader": "diffusion_models",
    "DualCLIPLoader": "text_encoders",
    "CLIPLoader": "text_encoders",
    "VAELoader": "vae",
    "RefAMLoadSAM2": "sam2",
    "RefAMLoadSAM": "sams",
}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_model_file_is_declared_for_the_missing_models_dialog(path):
    wf = json.loads(path.read_text())
    for node in wf["nodes"]:
        if node["type"] not in LOADER_FOLDERS:
            continue
        files = [v for v in node["widgets_values"] if isinstance(v, str) and v.endswith((".safetensors", ".pt", ".pth"))]
        declared = node["properties"].get("models", [])
        assert sorted(m["name"] for m in declared) == sorted(files), f"{path.name}: {node['type']} declares {declared}"
        for model in declared:
            assert model["directory"] == LOADER_FOLDERS[node["type"]]
            assert model["url"].startswith("https://") and model["url"].endswith(model["name"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_two_rows_of_labelled_groups_hold_every_node(path):
    wf = json.loads(path.read_text())
    groups = wf["groups"]
    assert len({g["bounding"][1] for g in groups}) == 2, f"{path.name}: groups are not laid out in two rows"
    assert all(g["title"].strip() for g in groups)
    for node in wf["nodes"]:
        x, y = node["pos"]
        w, h = node["size"]
        top = y - 30  # the title bar sits above pos
        holding = [
            g["title"]
            for g in groups
            if g["bounding"][0] <= x and x + w <= g["bounding"][0] + g["bounding"][2]
            and g["bounding"][1] <= top and y + h <= g["bounding"][1] + g["bounding"][3]
        ]
        assert len(holding) == 1, f"{path.name}: {node['type']} lies in {holding}"


def _producer(wf: dict, node: dict, input_name: str) -> dict:
    link_id = next(i["link"] for i in node["inputs"] if i["name"] == input_name)
    src = next(link[1] for link in wf["links"] if link[0] == link_id)
    return next(n for n in wf["nodes"] if n["id"] == src)


def test_refer_and_inpaint_follows_comfyuis_flux_fill_recipe():
    """RefAM reads FLUX.1-dev; the inpainting pass is ComfyUI's own FLUX.1 Fill template: the Fill
    model through Differential Diffusion, guidance 30 on the prompt, a zeroed negative, cfg 1."""
    wf = json.loads((REPO_ROOT / "example_workflows" / "refam_refer_and_inpaint.json").read_text())
    by_type = {}
    for node in wf["nodes"]:
        by_type.setdefault(node["type"], []).append(node)
    capture = by_type["RefAMCaptureAttentionFlux"][0]
    assert _producer(wf, capture, "model")["widgets_values"][0] == "flux1-dev.safetensors"
    sampler = by_type["KSampler"][0]
    diff = _producer(wf, sampler, "model")
    assert diff["type"] == "DifferentialDiffusion"
    assert _producer(wf, diff, "model")["widgets_values"][0] == "flux1-fill-dev.safetensors"
    cond = _producer(wf, sampler, "positive")
    assert cond["type"] == "InpaintModelConditioning"
    guidance = _producer(wf, cond, "positive")
    assert guidance["type"] == "FluxGuidance" and guidance["widgets_values"] == [30.0]
    assert _producer(wf, cond, "negative")["type"] == "ConditioningZeroOut"
    seed, _control, steps, cfg, sampler_name, scheduler, denoise = sampler["widgets_values"]
    assert (cfg, sampler_name, scheduler, denoise) == (1.0, "euler", "normal", 1.0)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflows_condition_on_a_caption(path):
    """The paper conditions the denoising pass on a caption; every example carries one to edit."""
    wf = json.loads(path.read_text())
    captions = [n["widgets_values"][0] for n in wf["nodes"] if n["type"] == "RefAMCaptionConditioning"]
    assert captions and all(c.strip() for c in captions)
