"""Port discovery, pass_by rules and stitching partial workflows (pure graph code, no server)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from discomfort.errors import ConfigError, PortTypeError, WorkflowError
from discomfort.graph import is_api_format, ui_to_api
from discomfort.graph.discover import discover_port_nodes
from discomfort.graph.pass_by import DEFAULT_RULES, load_rules, pass_by_for
from discomfort.graph.stitch import stitch_workflows
from discomfort.graph.workflow import is_link

# These tests stitch API prompts without object_info on purpose (the warning has its own test).
pytestmark = pytest.mark.filterwarnings("ignore::discomfort.errors.DiscomfortWarning")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
STITCH = FIXTURES / "stitch"
OBJECT_INFO = json.loads((FIXTURES / "object_info.json").read_text())


def load(name: str) -> dict:
    return json.loads((STITCH / name).read_text())


# --- helpers ----------------------------------------------------------------------------------

def shape(prompt: dict) -> list[str]:
    """A prompt's structure with the ids abstracted away: for every node, its class, its
    constant inputs and (recursively) what its linked inputs come from. Two prompts are equal
    in structure when these multisets are equal."""
    memo: dict[str, tuple] = {}

    def sig(node_id: str, depth: int = 0) -> tuple:
        assert depth < 200, "cycle"
        if node_id not in memo:
            node = prompt[node_id]
            items = []
            for name, value in sorted(node["inputs"].items()):
                if is_link(value):
                    items.append((name, sig(str(value[0]), depth + 1), value[1]))
                else:
                    items.append((name, json.dumps(value, sort_keys=True)))
            memo[node_id] = (node["class_type"], tuple(items))
        return memo[node_id]

    return sorted(repr(sig(n)) for n in prompt)


def check_links_resolve(prompt: dict) -> None:
    for node_id, node in prompt.items():
        assert isinstance(node_id, str)
        for name, value in node["inputs"].items():
            if is_link(value):
                assert str(value[0]) in prompt, (node_id, name, value)


def check_ui(workflow: dict) -> None:
    """What the editor needs to open a workflow cleanly: unique ids, counters past them, and
    links that agree with both of their ends."""
    nodes = {}
    for node in workflow["nodes"]:
        assert node["id"] not in nodes, f"node id {node['id']} twice"
        nodes[node["id"]] = node
    links = {}
    for link in workflow["links"]:
        assert isinstance(link, list) and len(link) == 6, link
        assert link[0] not in links, f"link id {link[0]} twice"
        links[link[0]] = link
    assert workflow["last_node_id"] >= max(nodes)
    assert workflow["last_link_id"] >= max(links, default=0)
    for link_id, (_, origin, oslot, target, tslot, _type) in links.items():
        assert link_id in (nodes[origin]["outputs"][oslot].get("links") or []), link_id
        assert nodes[target]["inputs"][tslot]["link"] == link_id, link_id
    for node in nodes.values():
        for index, slot in enumerate(node.get("inputs") or []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                assert (link[3], link[4]) == (node["id"], index)
        for index, slot in enumerate(node.get("outputs") or []):
            for link_id in slot.get("links") or []:
                assert (links[link_id][1], links[link_id][2]) == (node["id"], index)
    group_ids = [g["id"] for g in workflow.get("groups") or [] if "id" in g]
    assert len(group_ids) == len(set(group_ids))
    reroutes = (workflow.get("extra") or {}).get("reroutes") or []
    assert len({r["id"] for r in reroutes}) == len(reroutes)
    for reroute in reroutes:
        assert all(i in links for i in reroute["linkIds"])


def api(*nodes: tuple) -> dict:
    """An API prompt from ``(id, class_type, inputs)`` tuples."""
    return {node_id: {"class_type": kind, "inputs": inputs} for node_id, kind, inputs in nodes}


def part_a(color: int = 0) -> dict:
    return api(("1", "EmptyImage", {"width": 64, "height": 48, "batch_size": 1, "color": color}),
               ("2", "DiscomfortOutput", {"value": ["1", 0], "unique_id": "img"}))


def part_b() -> dict:
    return api(("1", "DiscomfortInput", {"unique_id": "img"}),
               ("2", "ImageInvert", {"image": ["1", 0]}),
               ("3", "DiscomfortOutput", {"value": ["2", 0], "unique_id": "inv"}))


def part_c() -> dict:
    return api(("1", "DiscomfortInput", {"unique_id": "inv"}),
               ("2", "ImageBlur", {"image": ["1", 0], "blur_radius": 3, "sigma": 1.5}),
               ("3", "DiscomfortOutput", {"value": ["2", 0], "unique_id": "out"}))


def whole() -> dict:
    return api(("1", "EmptyImage", {"width": 64, "height": 48, "batch_size": 1, "color": 0}),
               ("2", "ImageInvert", {"image": ["1", 0]}),
               ("3", "ImageBlur", {"image": ["2", 0], "blur_radius": 3, "sigma": 1.5}),
               ("4", "DiscomfortOutput", {"value": ["3", 0], "unique_id": "out"}))


# --- pass_by rules ----------------------------------------------------------------------------

def test_default_rules():
    assert pass_by_for("MODEL", DEFAULT_RULES) == "ref"
    assert pass_by_for("IMAGE", DEFAULT_RULES) == "val"
    assert pass_by_for("*", DEFAULT_RULES) == "val"
    assert pass_by_for("SOME_CUSTOM_OBJECT", DEFAULT_RULES) == "ref"   # unknown: by reference
    assert pass_by_for("INT,FLOAT", DEFAULT_RULES) == "val"
    assert pass_by_for("IMAGE,MODEL", DEFAULT_RULES) == "ref"
    assert load_rules() == DEFAULT_RULES and load_rules() is not DEFAULT_RULES


def test_load_rules_merges_a_user_file(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"AUDIO": "val", "LATENT": "ref"}))
    rules = load_rules(path)
    assert rules["AUDIO"] == "val" and rules["LATENT"] == "ref" and rules["MODEL"] == "ref"
    assert pass_by_for("AUDIO", rules) == "val"
    assert DEFAULT_RULES["LATENT"] == "val"                           # defaults untouched


@pytest.mark.parametrize("content, match", [
    (json.dumps({"AUDIO": "copy"}), "AUDIO"),
    (json.dumps(["val"]), "not an object"),
    ("{not json", "not valid JSON"),
])
def test_bad_rules_are_config_errors(tmp_path, content, match):
    path = tmp_path / "rules.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        load_rules(path)
    with pytest.raises(ConfigError, match="missing.json does not exist"):
        load_rules(tmp_path / "missing.json")


# --- discover_port_nodes ----------------------------------------------------------------------

def test_discover_ui_types_from_links():
    found = discover_port_nodes(FIXTURES / "run" / "invert_ui.json")   # a path works
    # the link leaving the input port says "*": the consumer's input slot tells IMAGE
    assert found["inputs"] == {"img": {"node_ids": [1], "type": "IMAGE", "pass_by": "val"}}
    assert found["outputs"] == {"inverted": {"node_ids": [3], "type": "IMAGE", "pass_by": "val"}}
    assert found["execution_order"] == [1, 2, 3]


def test_discover_ui_loop_port_and_ref_type():
    found = discover_port_nodes(FIXTURES.parent.parent / "workflows" / "kaleidoscope.json")
    assert found["inputs"]["canvas"]["type"] == found["outputs"]["canvas"]["type"] == "IMAGE"
    model = discover_port_nodes(load("model_out_ui.json"))
    assert model["outputs"] == {"img": {"node_ids": [2], "type": "MODEL", "pass_by": "ref"}}


def test_discover_ui_shared_inputs_duplicate_outputs_and_muted_ports():
    workflow = load("part_b_ui.json")
    extra_in = copy.deepcopy(workflow["nodes"][0])
    extra_in.update(id=9, outputs=[{"name": "value", "type": "*", "links": []}])
    workflow["nodes"].append(extra_in)
    found = discover_port_nodes(workflow)
    assert found["inputs"]["img"]["node_ids"] == [1, 9]
    assert found["inputs"]["img"]["type"] == "IMAGE"

    muted = copy.deepcopy(workflow["nodes"][2])
    muted.update(id=10, mode=2, inputs=[{"name": "value", "type": "*", "link": None}])
    workflow["nodes"].append(muted)
    assert discover_port_nodes(workflow)["outputs"]["inv"]["node_ids"] == [3]  # muted: not a port

    muted["mode"] = 0
    with pytest.raises(WorkflowError, match=r"output ports 3 and 10 both write 'inv'"):
        discover_port_nodes(workflow)


def test_discover_ui_execution_order_breaks_ties_by_id():
    workflow = load("whole_ui.json")
    workflow["nodes"].reverse()
    extra = copy.deepcopy(workflow["nodes"][-1])          # the EmptyImage, unlinked, id 0
    extra.update(id=0, outputs=[{"name": "IMAGE", "type": "IMAGE", "links": []}])
    workflow["nodes"].append(extra)
    assert discover_port_nodes(workflow)["execution_order"] == [0, 1, 2, 3, 4]


def test_discover_api_types_from_object_info():
    prompt = ui_to_api(load("part_b_ui.json"), OBJECT_INFO)
    found = discover_port_nodes(prompt, OBJECT_INFO)
    assert found["inputs"] == {"img": {"node_ids": ["1"], "type": "IMAGE", "pass_by": "val"}}
    assert found["outputs"] == {"inv": {"node_ids": ["3"], "type": "IMAGE", "pass_by": "val"}}
    untyped = discover_port_nodes(prompt)
    assert untyped["inputs"]["img"]["type"] == "*" and untyped["inputs"]["img"]["pass_by"] == "val"
    model = discover_port_nodes(ui_to_api(load("model_out_ui.json"), OBJECT_INFO), OBJECT_INFO)
    assert model["outputs"]["img"] == {"node_ids": ["2"], "type": "MODEL", "pass_by": "ref"}


def test_discover_api_rules_duplicates_and_order():
    prompt = api(("10", "DiscomfortOutput", {"value": ["9", 0], "unique_id": "x"}),
                 ("9", "ImageInvert", {"image": ["2", 0]}),
                 ("2", "EmptyImage", {"width": 8, "height": 8, "batch_size": 1, "color": 0}),
                 ("3", "EmptyImage", {"width": 8, "height": 8, "batch_size": 1, "color": 0}))
    found = discover_port_nodes(prompt, OBJECT_INFO, rules={**DEFAULT_RULES, "IMAGE": "ref"})
    assert found["outputs"]["x"]["pass_by"] == "ref"
    assert found["execution_order"] == ["2", "3", "9", "10"]   # numeric, not text, order
    prompt["11"] = {"class_type": "DiscomfortOutput", "inputs": {"value": ["3", 0], "unique_id": "x"}}
    with pytest.raises(WorkflowError, match="10 and 11 both write 'x'"):
        discover_port_nodes(prompt)


def test_discover_rejects_what_is_not_a_workflow():
    with pytest.raises(WorkflowError, match="not a ComfyUI workflow"):
        discover_port_nodes({"1": {"inputs": {}}})
    unnamed = part_b()
    unnamed["1"]["inputs"]["unique_id"] = ""
    with pytest.raises(WorkflowError, match="no unique_id"):
        discover_port_nodes(unnamed)
    ui = load("part_b_ui.json")
    ui["nodes"][0]["widgets_values"] = [""]
    with pytest.raises(WorkflowError, match="no unique_id"):
        discover_port_nodes(ui)


def test_discover_rejects_a_cycle():
    prompt = api(("1", "ImageInvert", {"image": ["2", 0]}), ("2", "ImageInvert", {"image": ["1", 0]}))
    with pytest.raises(WorkflowError, match="cycle"):
        discover_port_nodes(prompt)


# --- stitching API prompts --------------------------------------------------------------------

def test_stitch_api_three_parts_equals_the_whole():
    parts = [part_a(), part_b(), part_c()]
    before = copy.deepcopy(parts)
    result = stitch_workflows(parts, delete_input_ports=True, delete_output_ports=True,
                              object_info=OBJECT_INFO)
    prompt = result["stitched_workflow"]
    assert parts == before                                       # inputs untouched
    assert shape(prompt) == shape(whole())
    assert is_api_format(prompt) and json.loads(json.dumps(prompt)) == prompt
    assert all(set(node) <= {"class_type", "inputs", "_meta"} for node in prompt.values())
    check_links_resolve(prompt)
    assert result["inputs"] == {}
    assert result["outputs"] == {"out": {"node_ids": [next(i for i, n in prompt.items()
                                                           if n["class_type"] == "DiscomfortOutput")],
                                         "type": "IMAGE", "pass_by": "val"}}
    order = result["execution_order"]
    assert [prompt[i]["class_type"] for i in order] == \
        ["EmptyImage", "ImageInvert", "ImageBlur", "DiscomfortOutput"]


def test_stitch_api_two_parts_keeps_ports_by_default():
    result = stitch_workflows([part_a(), part_b()])
    prompt = result["stitched_workflow"]
    assert len(prompt) == 5 and len(set(prompt)) == 5            # ids 1, 2 renumbered
    check_links_resolve(prompt)
    invert = next(n for n in prompt.values() if n["class_type"] == "ImageInvert")
    source = prompt[invert["inputs"]["image"][0]]
    assert source["class_type"] == "EmptyImage"                  # reads the producer, not a port
    assert set(result["inputs"]) == {"img"} and set(result["outputs"]) == {"img", "inv"}
    # only the output port is deleted: the input port stays
    only_out = stitch_workflows([part_a(), part_b()], delete_output_ports=True)
    kinds = sorted(n["class_type"] for n in only_out["stitched_workflow"].values())
    assert kinds == ["DiscomfortInput", "DiscomfortOutput", "EmptyImage", "ImageInvert"]


def test_stitch_api_unjoined_ports_stay():
    lone = api(("1", "DiscomfortInput", {"unique_id": "other"}),
               ("2", "ImageInvert", {"image": ["1", 0]}),
               ("3", "DiscomfortOutput", {"value": ["2", 0], "unique_id": "img2"}))
    result = stitch_workflows([part_a(), lone], True, True)
    kinds = sorted(n["class_type"] for n in result["stitched_workflow"].values())
    assert kinds.count("DiscomfortInput") == 1 and kinds.count("DiscomfortOutput") == 2
    assert set(result["inputs"]) == {"other"} and set(result["outputs"]) == {"img", "img2"}


def test_stitch_api_latest_earlier_output_wins():
    result = stitch_workflows([part_a(color=1), part_a(color=2), part_b()], True, True)
    prompt = result["stitched_workflow"]
    invert = next(n for n in prompt.values() if n["class_type"] == "ImageInvert")
    assert prompt[invert["inputs"]["image"][0]]["inputs"]["color"] == 2
    # kept: the first part's producer (an unused node); the superseded output is gone
    assert sum(n["class_type"] == "DiscomfortOutput" for n in prompt.values()) == 1
    # without deletion the superseded writer is still removed: one writer per key
    kept = stitch_workflows([part_a(color=1), part_a(color=2), part_b()])
    assert len(kept["outputs"]["img"]["node_ids"]) == 1
    writer = kept["stitched_workflow"][kept["outputs"]["img"]["node_ids"][0]]
    assert kept["stitched_workflow"][writer["inputs"]["value"][0]]["inputs"]["color"] == 2


def test_stitch_api_input_and_output_of_one_part_are_not_joined_to_each_other():
    loop = api(("1", "DiscomfortInput", {"unique_id": "img"}),
               ("2", "ImageInvert", {"image": ["1", 0]}),
               ("3", "DiscomfortOutput", {"value": ["2", 0], "unique_id": "img"}))
    result = stitch_workflows([loop, part_b()], True, True)
    prompt = result["stitched_workflow"]
    assert set(result["inputs"]) == {"img"}                       # the loop's own input stays
    assert shape(prompt) == shape(api(
        ("1", "DiscomfortInput", {"unique_id": "img"}),
        ("2", "ImageInvert", {"image": ["1", 0]}),
        ("3", "ImageInvert", {"image": ["2", 0]}),
        ("4", "DiscomfortOutput", {"value": ["3", 0], "unique_id": "inv"})))


def test_stitch_api_pass_through_port():
    relay = api(("1", "DiscomfortInput", {"unique_id": "img"}),
                ("2", "DiscomfortOutput", {"value": ["1", 0], "unique_id": "inv"}))
    result = stitch_workflows([part_a(), relay, part_c()], True, True)
    assert shape(result["stitched_workflow"]) == shape(api(
        ("1", "EmptyImage", {"width": 64, "height": 48, "batch_size": 1, "color": 0}),
        ("2", "ImageBlur", {"image": ["1", 0], "blur_radius": 3, "sigma": 1.5}),
        ("3", "DiscomfortOutput", {"value": ["2", 0], "unique_id": "out"})))


def test_stitch_api_type_mismatch_names_both_ports():
    model = api(("5", "CheckpointLoaderSimple", {"ckpt_name": "m.safetensors"}),
                ("6", "DiscomfortOutput", {"value": ["5", 0], "unique_id": "img"}))
    with pytest.raises(PortTypeError) as error:
        stitch_workflows([model, part_b()], object_info=OBJECT_INFO)
    message = str(error.value)
    assert "'img'" in message and "node 6 of workflow 1" in message
    assert "node 1 of workflow 2" in message and "MODEL" in message and "IMAGE" in message
    # without object_info the types are unknown ("*"), which matches anything
    stitch_workflows([model, part_b()])
    # VAE (slot 2) into a "*" consumer is fine too
    relay = api(("1", "DiscomfortInput", {"unique_id": "img"}),
                ("2", "DiscomfortOutput", {"value": ["1", 0], "unique_id": "copy"}))
    stitch_workflows([model, relay], object_info=OBJECT_INFO)


def test_stitch_api_flattened_and_odd_ids():
    first = api(("7:3", "EmptyImage", {"width": 8, "height": 8, "batch_size": 1, "color": 0}),
                ("12", "DiscomfortOutput", {"value": ["7:3", 0], "unique_id": "img"}))
    second = api(("7:3", "ImageInvert", {"image": ["b", 0]}),
                 ("b", "DiscomfortInput", {"unique_id": "img"}))
    prompt = stitch_workflows([first, second], True, True)["stitched_workflow"]
    assert sorted(prompt) == ["19:3", "7:3"]
    assert prompt["19:3"]["inputs"]["image"] == ["7:3", 0]


def test_stitch_api_errors():
    with pytest.raises(WorkflowError, match="list of workflows"):
        stitch_workflows(part_a())
    with pytest.raises(WorkflowError, match="at least one"):
        stitch_workflows([])
    with pytest.raises(WorkflowError, match="editor workflows with API prompts"):
        stitch_workflows([part_a(), load("part_b_ui.json")])
    dangling = api(("1", "ImageInvert", {"image": ["5", 0]}))
    with pytest.raises(WorkflowError, match="not in that workflow"):
        stitch_workflows([part_a(), dangling])
    unfed = api(("1", "DiscomfortOutput", {"unique_id": "img"}))
    with pytest.raises(WorkflowError, match="nothing is connected"):
        stitch_workflows([unfed, part_b()])


# --- stitching editor workflows ---------------------------------------------------------------

UI_PARTS = ["part_a_ui.json", "part_b_ui.json", "part_c_ui.json"]


def test_stitch_ui_three_parts_converts_to_the_whole():
    parts = [load(name) for name in UI_PARTS]
    before = copy.deepcopy(parts)
    result = stitch_workflows(parts, delete_input_ports=True, delete_output_ports=True)
    stitched = result["stitched_workflow"]
    assert parts == before
    check_ui(stitched)
    prompt = ui_to_api(stitched, OBJECT_INFO)
    assert shape(prompt) == shape(ui_to_api(load("whole_ui.json"), OBJECT_INFO))
    assert result["inputs"] == {}
    assert result["outputs"]["out"]["type"] == "IMAGE"
    by_id = {n["id"]: n["type"] for n in stitched["nodes"]}
    assert [by_id[i] for i in result["execution_order"]] == \
        ["EmptyImage", "ImageInvert", "ImageBlur", "DiscomfortOutput"]
    # the rewired link now says what it carries
    invert = next(n for n in stitched["nodes"] if n["type"] == "ImageInvert")
    link = next(x for x in stitched["links"] if x[0] == invert["inputs"][0]["link"])
    assert link[5] == "IMAGE" and by_id[link[1]] == "EmptyImage"


def test_stitch_ui_paths_and_kept_ports():
    result = stitch_workflows([STITCH / name for name in UI_PARTS])
    stitched = result["stitched_workflow"]
    check_ui(stitched)
    assert len(stitched["nodes"]) == 8
    prompt = ui_to_api(stitched, OBJECT_INFO)
    check_links_resolve(prompt)
    kinds = sorted(n["class_type"] for n in prompt.values())
    assert kinds.count("DiscomfortInput") == 2 and kinds.count("DiscomfortOutput") == 3
    assert set(result["inputs"]) == {"img", "inv"}
    assert set(result["outputs"]) == {"img", "inv", "out"}
    # the joined input ports no longer feed anything; their consumers read the producers
    blur = next(n for n in prompt.values() if n["class_type"] == "ImageBlur")
    assert prompt[blur["inputs"]["image"][0]]["class_type"] == "ImageInvert"
    # the stitched workflow is itself a valid prompt for the orchestrator's port discovery
    assert discover_port_nodes(prompt, OBJECT_INFO)["outputs"]["out"]["type"] == "IMAGE"


def test_stitch_ui_renumbers_and_lays_out_side_by_side():
    parts = [load(name) for name in UI_PARTS]
    stitched = stitch_workflows(parts)["stitched_workflow"]
    check_ui(stitched)
    assert sorted(n["id"] for n in stitched["nodes"]) == list(range(1, 9))
    assert stitched["last_node_id"] == 8 and stitched["last_link_id"] == 5
    assert [g["id"] for g in stitched["groups"]] == [1, 2]
    assert [g["title"] for g in stitched["groups"]] == ["Make an image", "Invert"]

    def span(ids):
        nodes = [n for n in stitched["nodes"] if n["id"] in ids]
        return min(n["pos"][0] for n in nodes), max(n["pos"][0] + n["size"][0] for n in nodes)

    a, b, c = span({1, 2}), span({3, 4, 5}), span({6, 7, 8})
    assert a[1] < b[0] and b[1] < c[0]                            # no overlap, left to right
    invert_group = stitched["groups"][1]
    assert invert_group["bounding"][0] <= b[0] and invert_group["bounding"][0] > a[1]
    # the first part stays where it was; y is never moved
    assert span({1, 2})[0] == 0 and all(n["pos"][1] == 0 for n in stitched["nodes"])


def test_stitch_ui_keeps_extra_and_reroutes():
    parts = [load(name) for name in UI_PARTS]
    parts[1]["extra"]["reroutes"] = [{"id": 1, "pos": [150, 40], "linkIds": [2]}]
    parts[1]["extra"]["linkExtensions"] = [{"id": 2, "parentId": 1}]
    stitched = stitch_workflows(parts)["stitched_workflow"]
    check_ui(stitched)
    extra = stitched["extra"]
    assert extra["ds"] == parts[0]["extra"]["ds"] and extra["partB"] is True
    assert [r["id"] for r in extra["reroutes"]] == [1, 2]
    second = extra["reroutes"][1]
    invert = next(n for n in stitched["nodes"] if n["type"] == "ImageInvert")
    link = next(x for x in stitched["links"] if x[0] == second["linkIds"][0])
    assert link[1] == invert["id"] and len(second["linkIds"]) == 1  # follows its link's new id
    assert {"id": second["linkIds"][0], "parentId": 2} in extra["linkExtensions"]
    assert second["pos"][0] > 150
    # deleting the output port the first reroute served drops that reroute and its extension
    deleted = stitch_workflows(parts[:2], delete_output_ports=True)["stitched_workflow"]
    check_ui(deleted)
    assert [r["id"] for r in deleted["extra"]["reroutes"]] == [2]
    assert [e["parentId"] for e in deleted["extra"]["linkExtensions"]] == [2]
    # ... and when no reroute is left, no empty lists are left behind either
    bare = stitch_workflows(parts, True, True)["stitched_workflow"]
    check_ui(bare)
    assert "reroutes" not in bare["extra"] and "linkExtensions" not in bare["extra"]


def test_stitch_ui_type_mismatch_names_both_ports():
    with pytest.raises(PortTypeError) as error:
        stitch_workflows([load("model_out_ui.json"), load("part_b_ui.json")])
    message = str(error.value)
    assert "output port 'img' (node 2 of workflow 1)" in message
    assert "input port 'img' (node 1 of workflow 2, node 3 when stitched)" in message
    assert "MODEL" in message and "IMAGE" in message


def test_stitch_ui_latest_earlier_output_wins():
    first, second = load("part_a_ui.json"), load("part_a_ui.json")
    first["nodes"][0]["widgets_values"][3] = 1
    second["nodes"][0]["widgets_values"][3] = 2
    result = stitch_workflows([first, second, load("part_b_ui.json")])
    stitched = result["stitched_workflow"]
    check_ui(stitched)
    prompt = ui_to_api(stitched, OBJECT_INFO)
    invert = next(n for n in prompt.values() if n["class_type"] == "ImageInvert")
    assert prompt[invert["inputs"]["image"][0]]["inputs"]["color"] == 2
    assert len(result["outputs"]["img"]["node_ids"]) == 1       # the superseded writer is gone


def test_stitch_ui_pass_through_port_and_groups_without_ids():
    relay = load("part_b_ui.json")
    relay["nodes"] = [relay["nodes"][0], relay["nodes"][2]]          # In("img") -> Out("inv")
    relay["nodes"][0]["outputs"][0]["links"] = [1]
    relay["nodes"][1]["inputs"][0]["link"] = 1
    relay["links"] = [[1, 1, 0, 3, 0, "*"]]
    del relay["groups"][0]["id"]
    result = stitch_workflows([load("part_a_ui.json"), relay, load("part_c_ui.json")], True, True)
    stitched = result["stitched_workflow"]
    check_ui(stitched)
    assert "id" not in stitched["groups"][1]
    assert [n["type"] for n in stitched["nodes"]] == ["EmptyImage", "ImageBlur", "DiscomfortOutput"]
    assert stitched["links"][0][5] == "IMAGE"
    assert shape(ui_to_api(stitched, OBJECT_INFO)) == shape(api(
        ("1", "EmptyImage", {"width": 64, "height": 48, "batch_size": 1, "color": 16711680}),
        ("2", "ImageBlur", {"image": ["1", 0], "blur_radius": 3, "sigma": 1.5}),
        ("3", "DiscomfortOutput", {"value": ["2", 0], "unique_id": "out"})))


def test_stitch_ui_version_1_links():
    part = load("part_b_ui.json")
    part["links"] = [dict(zip(["id", "origin_id", "origin_slot", "target_id", "target_slot",
                               "type"], link, strict=True)) for link in part["links"]]
    part["state"] = {"lastNodeId": 3, "lastLinkId": 2, "lastGroupId": 1, "lastRerouteId": 0}
    del part["last_node_id"], part["last_link_id"]
    stitched = stitch_workflows([load("part_a_ui.json"), part], True, True)["stitched_workflow"]
    check_ui(stitched)
    assert "state" not in stitched
    prompt = ui_to_api(stitched, OBJECT_INFO)
    assert shape(prompt) == shape(api(
        ("1", "EmptyImage", {"width": 64, "height": 48, "batch_size": 1, "color": 16711680}),
        ("2", "ImageInvert", {"image": ["1", 0]}),
        ("3", "DiscomfortOutput", {"value": ["2", 0], "unique_id": "inv"})))


def test_stitch_ui_duplicate_outputs_inside_one_part():
    part = load("part_a_ui.json")
    twin = copy.deepcopy(part["nodes"][1])
    twin.update(id=3, inputs=[{"name": "value", "type": "*", "link": None}])
    part["nodes"].append(twin)
    with pytest.raises(WorkflowError, match="output ports 2 and 3 both write 'img'"):
        stitch_workflows([part, load("part_b_ui.json")])


# --- subgraph definitions ---------------------------------------------------------------------

SUBGRAPH = FIXTURES / "conversion" / "cases" / "subgraph.json"


def test_stitch_ui_merges_identical_subgraph_definitions():
    part = json.loads(SUBGRAPH.read_text())
    result = stitch_workflows([part, copy.deepcopy(part)])
    stitched = result["stitched_workflow"]
    check_ui(stitched)
    assert len(stitched["definitions"]["subgraphs"]) == 1
    single = ui_to_api(part, OBJECT_INFO, seed=0)
    assert shape(ui_to_api(stitched, OBJECT_INFO, seed=0)) == sorted(shape(single) * 2)


def test_stitch_ui_renames_conflicting_subgraph_definitions():
    first = json.loads(SUBGRAPH.read_text())
    second = copy.deepcopy(first)
    sg_id = first["definitions"]["subgraphs"][0]["id"]
    blur = next(n for n in second["definitions"]["subgraphs"][0]["nodes"] if n["type"] == "ImageBlur")
    blur["widgets_values"] = [5, 0.3]                                 # a different definition
    stitched = stitch_workflows([first, second])["stitched_workflow"]
    check_ui(stitched)
    ids = [d["id"] for d in stitched["definitions"]["subgraphs"]]
    assert len(ids) == 2 and ids[0] == sg_id and ids[1] != sg_id
    instance_types = [n["type"] for n in stitched["nodes"] if n["type"] in ids]
    assert instance_types == [sg_id, sg_id, ids[1], ids[1]]
    expected = shape(ui_to_api(first, OBJECT_INFO, seed=0)) + shape(ui_to_api(second, OBJECT_INFO, seed=0))
    assert shape(ui_to_api(stitched, OBJECT_INFO, seed=0)) == sorted(expected)
    # deterministic: the same inputs give the same new id
    again = stitch_workflows([first, second])["stitched_workflow"]
    assert [d["id"] for d in again["definitions"]["subgraphs"]] == ids


def test_stitch_ui_renames_nested_definitions_that_conflict():
    first = json.loads((FIXTURES / "conversion" / "cases" / "nested_subgraph.json").read_text())
    second = copy.deepcopy(first)
    inner = next(d for d in second["definitions"]["subgraphs"]
                 if any(n["type"] == "ImageInvert" for n in d["nodes"]))
    inner["name"] = "changed"                                        # only the inner one differs
    stitched = stitch_workflows([first, second])["stitched_workflow"]
    check_ui(stitched)
    # the inner one is renamed, so the outer one (which uses it) changes and is renamed too
    assert len(stitched["definitions"]["subgraphs"]) == 4
    expected = shape(ui_to_api(first, OBJECT_INFO)) + shape(ui_to_api(second, OBJECT_INFO))
    assert shape(ui_to_api(stitched, OBJECT_INFO)) == sorted(expected)


@pytest.mark.parametrize("names", [
    ("02_qwen_Image_edit_subgraphed.json", "flux1_dev_uso_reference_image_gen.json"),
    ("sdxl_simple_example.json", "image_qwen_image_instantx_inpainting_controlnet.json",
     "sdxl_simple_example.json", "video_hunyuan_video_1.5_720p_i2v.json"),
])
def test_stitch_real_templates_keeps_every_node(names):
    templates = FIXTURES / "conversion" / "templates"
    parts = [json.loads((templates / name).read_text()) for name in names]
    stitched = stitch_workflows(parts)["stitched_workflow"]
    check_ui(stitched)
    assert len(stitched["nodes"]) == sum(len(p["nodes"]) for p in parts)
    assert len(stitched["groups"]) == sum(len(p.get("groups") or []) for p in parts)
    expected = []
    for part in parts:
        expected += shape(ui_to_api(part, OBJECT_INFO, seed=0))
    assert shape(ui_to_api(stitched, OBJECT_INFO, seed=0)) == sorted(expected)
