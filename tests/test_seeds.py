"""advance_controlled_widgets: the editor's control_after_generate step after each queue.

Hand-made UI workflows on the real ``object_info`` fixture; pure (no server, no browser).
"""

from __future__ import annotations

import copy
import json
import pathlib
import random

import pytest

from discomfort.graph import advance_controlled_widgets, ui_to_api

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
LIMIT = 1125899906842624  # 2**50
SG = "22222222-2222-4222-8222-222222222222"


@pytest.fixture(scope="module")
def object_info() -> dict:
    info = json.loads((FIXTURES / "object_info.json").read_text())
    # A combo with a control (no class in the fixture has one).
    info["PickOne"] = {
        "name": "PickOne", "display_name": "Pick one", "output": ["STRING"],
        "input": {"required": {"choice": [["a", "b", "c"], {"control_after_generate": True}]}},
        "input_order": {"required": ["choice"]},
    }
    return info


class FixedRandom(random.Random):
    """``random()`` returns the given values in turn."""

    def __init__(self, *values: float):
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def ksampler(node_id: int, seed, mode: str, *, node_mode: int = 0, seed_link=None) -> dict:
    return {"id": node_id, "type": "KSampler", "mode": node_mode,
            "inputs": [{"name": "seed", "type": "INT", "link": seed_link,
                        "widget": {"name": "seed"}}],
            "outputs": [{"name": "LATENT", "type": "LATENT", "links": []}],
            "properties": {}, "widgets_values": [seed, mode, 20, 8, "euler", "normal", 1]}


def node(node_id: int, type_: str, values: list, **extra) -> dict:
    return {"id": node_id, "type": type_, "mode": 0, "inputs": [], "outputs": [],
            "properties": {}, "widgets_values": values, **extra}


def workflow(*nodes: dict, links: list | None = None, subgraphs: list | None = None) -> dict:
    wf = {"last_node_id": 99, "last_link_id": 99, "nodes": list(nodes), "links": links or [],
          "groups": [], "config": {}, "extra": {}, "version": 0.4}
    if subgraphs:
        wf["definitions"] = {"subgraphs": subgraphs}
    return wf


def advance(wf: dict, object_info: dict, *randoms: float) -> tuple[dict, list[dict]]:
    return advance_controlled_widgets(wf, object_info, FixedRandom(*randoms))


def values_of(wf: dict, node_id: int) -> list:
    return next(n for n in wf["nodes"] if n["id"] == node_id)["widgets_values"]


# --- numbers ---------------------------------------------------------------------------------

def test_fixed_stays_and_is_reported(object_info):
    new, changes = advance(workflow(ksampler(1, 42, "fixed")), object_info)
    assert values_of(new, 1)[0] == 42
    assert changes == [{"node": 1, "subgraph": None, "widget": "seed", "mode": "fixed",
                        "old": 42, "new": 42}]


def test_increment_and_decrement_step_by_one(object_info):
    new, changes = advance(workflow(ksampler(1, 42, "increment"), ksampler(2, 42, "decrement")),
                           object_info)
    assert (values_of(new, 1)[0], values_of(new, 2)[0]) == (43, 41)
    assert [c["new"] for c in changes] == [43, 41]


def test_bounds_clamp_not_wrap(object_info):
    """The editor clamps to min/max; the 64-bit seed max is first capped at 2**50."""
    new, _ = advance(workflow(ksampler(1, 0, "decrement"), ksampler(2, LIMIT, "increment"),
                              ksampler(3, 2**60, "fixed")), object_info)
    assert [values_of(new, i)[0] for i in (1, 2, 3)] == [0, LIMIT, LIMIT]


def test_randomize_uses_the_frontend_range(object_info):
    """floor(random * (max - min) / step) * step + min, max capped at 2**50."""
    new, _ = advance(workflow(ksampler(1, 5, "randomize"), ksampler(2, 5, "randomize"),
                              node(3, "PrimitiveInt", [0, "randomize"])),
                     object_info, 0.5, 0.999999, 0.0)
    assert values_of(new, 1)[0] == LIMIT // 2
    assert values_of(new, 2)[0] == int(0.999999 * LIMIT)
    assert values_of(new, 3)[0] == -LIMIT  # PrimitiveInt: min -2**63+1 is capped at -2**50


def test_randomize_with_a_step_and_offset_min(object_info):
    info = copy.deepcopy(object_info)
    info["KSampler"]["input"]["required"]["seed"][1].update(min=1, max=10, step=3)
    new, _ = advance(workflow(ksampler(1, 1, "randomize"), ksampler(2, 1, "randomize")),
                     info, 0.0, 0.99)
    assert (values_of(new, 1)[0], values_of(new, 2)[0]) == (1, 7)  # 1, 4 or 7


def test_seeded_rng_is_deterministic_and_input_untouched(object_info):
    wf = workflow(ksampler(1, 5, "randomize"), ksampler(2, 5, "increment"))
    before = copy.deepcopy(wf)
    first = advance_controlled_widgets(wf, object_info, random.Random(7))
    second = advance_controlled_widgets(wf, object_info, random.Random(7))
    assert first == second
    assert wf == before
    assert 0 <= values_of(first[0], 1)[0] < LIMIT and values_of(first[0], 1)[0] != 5


def test_muted_and_bypassed_nodes_advance_too(object_info):
    new, _ = advance(workflow(ksampler(1, 1, "increment", node_mode=2),
                              ksampler(2, 1, "increment", node_mode=4)), object_info)
    assert (values_of(new, 1)[0], values_of(new, 2)[0]) == (2, 2)


def test_linked_widget_is_flagged(object_info):
    wf = workflow(ksampler(1, 1, "increment", seed_link=5),
                  node(2, "PrimitiveInt", [3, "fixed"],
                       outputs=[{"name": "INT", "type": "INT", "links": [5]}]),
                  links=[[5, 2, 0, 1, 0, "INT"]])
    _, changes = advance(wf, object_info)
    assert changes[0]["linked"] is True and "linked" not in changes[1]


# --- combos -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value,mode,filter_,randoms,expected", [
    ("a", "increment", "", (), "b"),
    ("c", "increment", "", (), "c"),           # stops at the end
    ("c", "increment-wrap", "", (), "a"),
    ("a", "decrement", "", (), "a"),
    ("b", "randomize", "", (0.7,), "c"),
    ("b", "fixed", "", (), "b"),
    ("zz", "increment", "", (), "a"),         # not in the list: index -1 + 1
    ("a", "increment", "/[ac]/", (), "c"),   # moves within the filtered options
    ("b", "decrement", "C", (), "c"),         # filtered to ["c"]: an unknown value lands on it
])
def test_combo_control(object_info, value, mode, filter_, randoms, expected):
    new, changes = advance(workflow(node(1, "PickOne", [value, mode, filter_])), object_info,
                           *randoms)
    assert values_of(new, 1) == [expected, mode, filter_]
    assert changes[0]["new"] == expected


# --- PrimitiveNode and subgraphs ---------------------------------------------------------------

def primitive_workflow(values: list) -> dict:
    return workflow(
        ksampler(1, 0, "fixed", seed_link=7),
        node(2, "PrimitiveNode", values, outputs=[{"name": "INT", "type": "INT", "links": [7],
                                                    "widget": {"name": "seed"}}]),
        links=[[7, 2, 0, 1, 0, "INT"]])


def test_primitive_node_has_its_own_control(object_info):
    wf = primitive_workflow([10, "increment"])
    new, changes = advance(wf, object_info)
    assert values_of(new, 2) == [11, "increment"]
    assert {"node": 2, "subgraph": None, "widget": "value", "mode": "increment", "old": 10,
            "new": 11} in changes
    assert ui_to_api(new, object_info)["1"]["inputs"]["seed"] == 11


def test_primitive_node_defaults(object_info):
    """Without a saved mode: "randomize" when the target asks for a control (seed)."""
    new, _ = advance(primitive_workflow([10]), object_info, 0.25)
    assert values_of(new, 2) == [LIMIT // 4, "randomize"]  # the editor saves the mode too
    assert values_of(new, 1)[0] == LIMIT // 4  # and writes the value into its target


def test_unconnected_primitive_node_is_left_alone(object_info):
    wf = workflow(node(2, "PrimitiveNode", [5, "increment"],
                       outputs=[{"name": "INT", "type": "INT", "links": []}]))
    assert advance(wf, object_info) == (wf, [])


def subgraph_workflow() -> dict:
    inner = ksampler(3, 100, "increment")
    definition = {"id": SG, "name": "Sampler", "inputNode": {"id": -10}, "outputNode": {"id": -20},
                  "inputs": [], "outputs": [], "nodes": [inner], "links": [], "widgets": []}
    instance = {"id": 5, "type": SG, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                "widgets_values": []}
    return workflow(instance, subgraphs=[definition])


def test_subgraph_nodes_advance_once_per_definition(object_info):
    wf = subgraph_workflow()
    wf["nodes"].append(dict(wf["nodes"][0], id=6))  # a second instance
    new, changes = advance(wf, object_info)
    assert new["definitions"]["subgraphs"][0]["nodes"][0]["widgets_values"][0] == 101
    assert changes == [{"node": 3, "subgraph": SG, "widget": "seed", "mode": "increment",
                        "old": 100, "new": 101}]
    prompt = ui_to_api(new, object_info)
    assert prompt["5:3"]["inputs"]["seed"] == prompt["6:3"]["inputs"]["seed"] == 101


def test_converted_prompt_uses_the_new_values(object_info):
    wf = workflow(ksampler(1, 5, "randomize"), node(2, "PickOne", ["a", "increment", ""]))
    assert ui_to_api(wf, object_info)["1"]["inputs"]["seed"] == 5
    new, _ = advance(wf, object_info, 0.5)
    prompt = ui_to_api(new, object_info)
    assert prompt["1"]["inputs"]["seed"] == LIMIT // 2
    assert prompt["2"]["inputs"]["choice"] == "b"


def test_iterations_give_the_editor_sequence(object_info):
    wf = workflow(ksampler(1, LIMIT - 2, "increment"))
    used = []
    for _ in range(4):
        used.append(ui_to_api(wf, object_info)["1"]["inputs"]["seed"])
        wf, _ = advance_controlled_widgets(wf, object_info, random.Random(0))
    assert used == [LIMIT - 2, LIMIT - 1, LIMIT, LIMIT]
