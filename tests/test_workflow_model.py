"""The workflow model every graph module reads: links, modes, input specs, types, rewiring."""

import pytest

from discomfort.errors import WorkflowError
from discomfort.graph.workflow import (
    ANY,
    Link,
    UIGraph,
    check_single_writers,
    consumers,
    input_spec,
    is_active,
    is_link,
    output_spec,
    parse_link,
    rewire,
    topological_order,
    types_compatible,
)

OBJECT_INFO = {
    "KSampler": {
        "input": {"required": {"seed": ["INT", {"min": 0, "max": 10}],
                               "sampler_name": [["euler", "ddim"], {"tooltip": "t"}],
                               "model": ["MODEL"]},
                  "optional": {"extra": ["FLOAT"]}},
        "output": ["LATENT"], "output_is_list": [False]},
    "Split": {"input": {}, "output": ["IMAGE", "INT"], "output_is_list": [True]},
}


def test_links_in_both_saved_shapes_are_one_model():
    listed = parse_link([5, 1, 0, 2, 3, "IMAGE"])
    keyed = parse_link({"id": 5, "origin_id": 1, "origin_slot": 0, "target_id": 2,
                        "target_slot": 3, "type": "IMAGE"})
    assert listed == keyed == Link(5, 1, 0, 2, 3, "IMAGE")
    assert listed.as_list() == [5, 1, 0, 2, 3, "IMAGE"]
    assert parse_link([5, 1, 0, 2, 3]).type == ANY
    assert parse_link([5, 1]) is None and parse_link("5") is None


def test_modes_and_api_links():
    assert is_active({}) and is_active({"mode": 0})
    assert not is_active({"mode": 2}) and not is_active({"mode": 4})
    assert is_link(["3", 0]) and is_link([3, 1])
    assert not is_link(["3", "0"]) and not is_link(["3", True]) and not is_link([1, 2, 3])


@pytest.mark.parametrize("a, b, ok", [
    ("IMAGE", "IMAGE", True), ("image", "IMAGE", True), ("*", "MODEL", True), ("", "X", True),
    ("IMAGE,MASK", "MASK", True), ("IMAGE, MASK", "mask", True), ("IMAGE", "LATENT", False),
    ("IMAGE,MASK", "LATENT,INT", False),
])
def test_one_type_compatibility_rule(a, b, ok):
    assert types_compatible(a, b) is ok and types_compatible(b, a) is ok


def test_input_and_output_specs_from_object_info():
    assert input_spec(OBJECT_INFO, "KSampler", "seed") == ("INT", {"min": 0, "max": 10})
    assert input_spec(OBJECT_INFO, "KSampler", "sampler_name") == (
        "COMBO", {"tooltip": "t", "options": ["euler", "ddim"]})
    assert input_spec(OBJECT_INFO, "KSampler", "extra") == ("FLOAT", {})
    assert input_spec(OBJECT_INFO, "KSampler", "nope") is None
    assert input_spec(None, "KSampler", "seed") is None
    assert output_spec(OBJECT_INFO, "Split", 0) == ("IMAGE", True)
    assert output_spec(OBJECT_INFO, "Split", 1) == ("INT", False)
    assert output_spec(OBJECT_INFO, "Split", 2) == (ANY, False)
    assert output_spec(OBJECT_INFO, "Unknown", 0) == (ANY, False)


PROMPT = {
    "1": {"class_type": "A", "inputs": {"x": 1}},
    "2": {"class_type": "Port", "inputs": {}},
    "3": {"class_type": "B", "inputs": {"a": ["2", 0], "b": ["1", 0], "c": ["2", 0]}},
}


def test_rewire_points_every_reader_elsewhere_and_leaves_the_input_alone():
    before = repr(PROMPT)
    linked = rewire(PROMPT, "2", ["1", 0])
    assert "2" not in linked and linked["3"]["inputs"] == {"a": ["1", 0], "b": ["1", 0], "c": ["1", 0]}
    assert linked["3"]["inputs"]["a"] is not linked["3"]["inputs"]["c"]  # no shared lists
    assert rewire(PROMPT, "2", 7)["3"]["inputs"] == {"a": 7, "b": ["1", 0], "c": 7}
    kept = rewire(PROMPT, "2", ["1", 0], drop=False)
    assert "2" in kept and consumers(kept, "2") == []
    assert repr(PROMPT) == before
    assert consumers(PROMPT, "2") == [("3", "a"), ("3", "c")]


def test_two_writers_of_one_key_and_cycles_are_errors():
    check_single_writers([("a", 1), ("b", 2)])
    with pytest.raises(WorkflowError, match="output ports 1 and 3 both write 'a'"):
        check_single_writers([("a", 1), ("b", 2), ("a", 3)])
    assert topological_order(["10", "2", "1"], [("10", "2")]) == ["1", "10", "2"]
    with pytest.raises(WorkflowError, match="cycle through node.s. 1, 2"):
        topological_order(["1", "2"], [("1", "2"), ("2", "1")])


def test_ui_graph_reads_types_through_reroutes():
    workflow = {
        "nodes": [
            {"id": 1, "type": "Loader", "outputs": [{"type": "MODEL", "links": [1]}]},
            {"id": 2, "type": "Reroute", "inputs": [{"name": "", "link": 1}],
             "outputs": [{"type": "*", "links": [2]}]},
            {"id": 3, "type": "Sampler", "inputs": [{"name": "model", "type": "MODEL", "link": 2}]},
        ],
        "links": [[1, 1, 0, 2, 0, "*"], {"id": 2, "origin_id": 2, "origin_slot": 0,
                                          "target_id": 3, "target_slot": 0, "type": "*"}],
    }
    graph = UIGraph(workflow)
    reroute_out = graph.links[2]
    assert graph.upstream_type(reroute_out) == "MODEL"
    assert graph.downstream_types(graph.links[1]) == ["MODEL"]
    assert graph.holds(reroute_out) and graph.target_input(reroute_out)["name"] == "model"
    assert graph.in_link(graph.node(3), "model") is reroute_out
    with pytest.raises(WorkflowError, match="a workflow node is a str"):
        UIGraph({"nodes": ["x"]})
