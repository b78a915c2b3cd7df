"""Shipped workflows vs the pack's node declarations (no ComfyUI needed).

Core ComfyUI nodes are checked against ``tests/data/comfy_core_nodes.json``, a snapshot of
ComfyUI's /object_info that ``test_comfy_server.py`` compares with a live server.
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


def test_three_workflows_each_with_an_api_twin():
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
