"""ui_to_api against the real frontend's graphToPrompt() output, for each editor.

Every ``tests/fixtures/conversion/{cases,templates,templates_json}/X.json`` has beside it the
prompt that a real ComfyUI frontend produced for it, one file per editor: ``X.expected.json``
(frontend 1.32.9, the one ComfyUI 0.3.75 pins) and ``X.expected-1.58.json`` (frontend 1.58.1,
today's), written by ``scripts/make_conversion_expectations.py``. ``ui_to_api(...,
editor=...)`` must give the same prompt. Pure: no server, no browser, no 1.58 install.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import random
import re
from typing import Any

import pytest

from discomfort.errors import UnknownNodeTypesError, WorkflowError
from discomfort.graph import is_api_format, load_workflow, ui_to_api
from discomfort.graph.convert import renumber_colliding_inner_ids, widget_value_problem
from discomfort.graph.nodedefs import NodeDefs, build_node_def

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
CONVERSION = FIXTURES / "conversion"
# The expectation file of each editor (see scripts/make_conversion_expectations.py).
SUFFIXES = {"1.32": ".expected.json", "1.58": ".expected-1.58.json"}
EDITORS = list(SUFFIXES)
# Cases whose frontend output is random or dated: checked by their own tests below.
NONDETERMINISTIC = {"dynamic_prompt_choices", "filename_date"}


OBJECT_INFO = json.loads((FIXTURES / "object_info.json").read_text())


@pytest.fixture(scope="module")
def object_info() -> dict:
    return OBJECT_INFO


def expectation_path(path: pathlib.Path, editor: str) -> pathlib.Path:
    return path.with_name(path.stem + SUFFIXES[editor])


def workflows(folder: str, editor: str = "1.32") -> list[pathlib.Path]:
    return sorted(p for p in (CONVERSION / folder).glob("*.json")
                  if ".expected" not in p.name and expectation_path(p, editor).exists())


def expected_of(path: pathlib.Path, editor: str = "1.32") -> dict:
    return json.loads(expectation_path(path, editor).read_text())


def convert_like_fixture(path: pathlib.Path, object_info: dict, editor: str) -> dict:
    """Our conversion, with failures in the form the expectation files use."""
    try:
        return ui_to_api(load_workflow(path), object_info, seed=0, editor=editor)
    except UnknownNodeTypesError as exc:
        return {"__error__": "unknown_node_types", "missing": exc.missing}
    except WorkflowError as exc:
        return {"__error__": "convert", "message": str(exc)}


def same(got: dict, expected: dict) -> bool:
    if expected.get("__error__") == "convert":  # only the kind of failure is compared
        return got.get("__error__") == "convert"
    missing = expected.get("missing") or []
    if missing and all(m.startswith("workflow>") for m in missing):
        # The editor 1.32 could not register these group nodes (it reports their types as
        # missing): we refuse them with a WorkflowError that names each one instead.
        return got.get("__error__") == "convert" and all(
            m in got["message"] for m in missing)
    if got == expected:
        return True
    return refuses_or_fixes_unfit_values(got, expected)


def unfit_values(prompt: dict) -> list[tuple[str, str]]:
    """(node id, input) of every constant input that does not fit its widget (a string for an
    INT, a number out of range, a number for a text COMBO...), checked against object_info."""
    defs = NodeDefs(OBJECT_INFO)
    found = []
    for node_id, node in prompt.items():
        if node.get("class_type") not in defs:
            continue
        specs = {w.name: w for w in defs.get(node["class_type"]).widgets}
        found += [(node_id, name) for name, value in node["inputs"].items()
                  if not isinstance(value, list) and widget_value_problem(specs.get(name), value)]
    return found


def refuses_or_fixes_unfit_values(got: dict, expected: dict) -> bool:
    """Where the real editor's prompt passes on values that do not fit their widgets (values
    read against the wrong layout), we must not: either a WorkflowError naming one of those
    nodes and widgets, or the same prompt with fitting values on just those nodes."""
    unfit = unfit_values(expected) if "__error__" not in expected else []
    if not unfit:
        return False
    if got.get("__error__") == "convert":
        return any(f"node {node} " in got["message"] and f"widget {name!r}" in got["message"]
                   for node, name in unfit)
    flagged = {node for node, _ in unfit}
    if "__error__" in got or set(got) != set(expected) or unfit_values(got):
        return False

    def links(node: dict) -> dict:
        return {k: v for k, v in node["inputs"].items() if isinstance(v, list)}

    return all(got[n] == expected[n] if n not in flagged else
               (got[n]["class_type"] == expected[n]["class_type"]
                and links(got[n]) == links(expected[n])) for n in expected)


CASES = [(editor, p) for editor in EDITORS for p in workflows("cases", editor)
         if p.stem not in NONDETERMINISTIC]


def test_every_case_has_both_editors_expectations():
    """A case made for one editor only would silently test less."""
    for editor in EDITORS:
        missing = [p.name for p in (CONVERSION / "cases").glob("*.json")
                   if ".expected" not in p.name and not expectation_path(p, editor).exists()]
        assert not missing, f"no {editor} expectation for {missing}: run the script"


@pytest.mark.parametrize("editor,path", CASES, ids=[f"{e}-{p.stem}" for e, p in CASES])
def test_hand_made_case_matches_frontend(editor, path, object_info):
    got = convert_like_fixture(path, object_info, editor)
    assert same(got, expected_of(path, editor)), json.dumps(got, indent=1)[:3000]


@pytest.mark.parametrize("editor", EDITORS)
@pytest.mark.parametrize("folder", ["templates", "templates_json"])
def test_template_corpus_converts_like_frontend(folder, editor, object_info):
    paths = workflows(folder, editor)
    if not paths:
        pytest.skip(f"no template workflows with {editor} expectations under "
                    f"tests/fixtures/conversion/{folder}: run "
                    "scripts/make_conversion_expectations.py --fetch-templates "
                    "--fetch-today-templates")
    different = [p.name for p in paths if not same(convert_like_fixture(p, object_info, editor),
                                                   expected_of(p, editor))]
    identical = len(paths) - len(different)
    print(f"\n{folder} ({editor}): {identical}/{len(paths)} conversions identical to the editor")
    assert not different, f"{identical}/{len(paths)} identical; different: {different}"


@pytest.mark.parametrize("editor", EDITORS)
def test_input_workflow_is_not_modified(object_info, editor):
    for name in ("subgraph", "legacy_group_node", "primitive_node", "dynamic_prompt_comments",
                 "colliding_inner_ids", "two_group_nodes", "promoted_widgets"):
        workflow = load_workflow(CONVERSION / "cases" / f"{name}.json")
        before = json.dumps(workflow, sort_keys=True)
        ui_to_api(workflow, object_info, seed=0, editor=editor)
        assert json.dumps(workflow, sort_keys=True) == before, name


def test_default_editor_is_todays(object_info):
    """Without editor=, a workflow converts as the editor 1.58 does (a bypassed subgraph's
    nodes are not sent)."""
    path = CONVERSION / "cases" / "bypassed_subgraph.json"
    assert ui_to_api(load_workflow(path), object_info) == expected_of(path, "1.58")
    assert ui_to_api(load_workflow(path), object_info) != expected_of(path, "1.32")
    with pytest.raises(ValueError, match="editor='1.40'.*1.32, 1.58"):
        ui_to_api(load_workflow(path), object_info, editor="1.40")


@pytest.mark.parametrize("editor", EDITORS)
def test_dynamic_prompt_is_one_of_the_options_and_seeded(object_info, editor):
    path = CONVERSION / "cases" / "dynamic_prompt_choices.json"
    options = {"a red ball", "a green ball", "a light blue ball", "a dark blue ball"}
    assert expected_of(path, editor)["1"]["inputs"]["text"] in options  # what the editor drew
    workflow = load_workflow(path)
    seen = set()
    for seed in range(40):
        choices: list = []
        text = ui_to_api(workflow, object_info, seed=seed, choices=choices)["1"]["inputs"]["text"]
        assert text in options
        assert choices == [{"node": "1", "input": "text",
                            "text": "a {red|green|{light|dark} blue} ball", "value": text}]
        seen.add(text)
    assert seen == options
    first = ui_to_api(workflow, object_info, rng=random.Random(7))
    assert first == ui_to_api(workflow, object_info, rng=random.Random(7))


@pytest.mark.parametrize("editor", EDITORS)
def test_filename_date_patterns(object_info, editor):
    path = CONVERSION / "cases" / "filename_date.json"
    shape = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}/x_\d{2}-\d{1,2}-\d{1,2}")
    assert shape.fullmatch(expected_of(path, editor)["2"]["inputs"]["filename_prefix"])
    now = dt.datetime(2025, 3, 4, 5, 6, 7)
    prompt = ui_to_api(load_workflow(path), object_info, now=now, editor=editor)
    assert prompt["2"]["inputs"]["filename_prefix"] == "2025-03-04_05/x_25-3-4"


def test_api_format_passes_through_unchanged(object_info):
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}
    assert is_api_format(prompt)
    assert ui_to_api(prompt, object_info) is prompt
    assert not is_api_format(load_workflow(CONVERSION / "cases" / "reroute_chain.json"))


def test_unknown_node_types_are_listed_together(object_info):
    with pytest.raises(UnknownNodeTypesError) as info:
        ui_to_api(load_workflow(CONVERSION / "cases" / "unknown_types.json"), object_info)
    assert info.value.missing == ["NoSuchNodeA", "NoSuchNodeB"]


def test_dangling_link_is_a_workflow_error_for_1_32_and_dropped_by_1_58(object_info):
    workflow = load_workflow(CONVERSION / "cases" / "dangling_link.json")
    with pytest.raises(WorkflowError, match="link 99"):
        ui_to_api(workflow, object_info, editor="1.32")
    assert ui_to_api(workflow, object_info, editor="1.58")["2"]["inputs"] == {}


# --- widget values that do not fit (issue 11, part 3) ---------------------------------------

def spec_of(class_name: str, widget: str):
    return next(w for w in build_node_def(class_name, OBJECT_INFO[class_name]).widgets
                if w.name == widget)


@pytest.mark.parametrize("class_name,widget,value,problem", [
    ("KSampler", "steps", 20, None),
    ("KSampler", "steps", 20.0, None),                   # JSON has one kind of number
    ("KSampler", "steps", "flow", "INT: a whole number >= 1 and <= 10000"),
    ("KSampler", "steps", 0, "INT: a whole number >= 1 and <= 10000"),
    ("KSampler", "steps", 10001, "INT: a whole number >= 1 and <= 10000"),
    ("KSampler", "steps", 2.5, "INT: a whole number >= 1 and <= 10000"),
    ("KSampler", "steps", True, "INT: a whole number >= 1 and <= 10000"),
    ("KSampler", "cfg", 7.5, None),
    ("KSampler", "cfg", 100.5, "FLOAT: a number >= 0 and <= 100"),
    ("KSampler", "cfg", "euler", "FLOAT: a number >= 0 and <= 100"),
    ("KSampler", "sampler_name", "euler", None),
    ("KSampler", "sampler_name", 5, "COMBO: text, one of 'euler'"),
    ("CheckpointLoaderSimple", "ckpt_name", "not-on-this-server.safetensors", None),
    ("CheckpointLoaderSimple", "ckpt_name", 4096, "COMBO: text"),
    ("WebcamCapture", "capture_on_queue", False, None),
    ("WebcamCapture", "capture_on_queue", "true", "BOOLEAN: true or false"),
    ("CLIPTextEncode", "text", 12, None),                # text widgets are not checked
])
def test_widget_value_problem(class_name, widget, value, problem):
    got = widget_value_problem(spec_of(class_name, widget), value)
    if problem is None:
        assert got is None
    else:
        assert got is not None and got.startswith(problem), got


def promoted_workflow(values: list) -> dict:
    workflow = load_workflow(CONVERSION / "cases" / "promoted_widgets.json")
    workflow = json.loads(json.dumps(workflow))
    workflow["nodes"][0]["widgets_values"] = values
    workflow["nodes"][0]["title"] = "Make it"
    return workflow


@pytest.mark.parametrize("editor", EDITORS)
def test_promoted_values_that_do_not_fit_are_refused(object_info, editor):
    fine = ui_to_api(promoted_workflow([40, 30, 5]), object_info, editor=editor)
    assert fine["5:1"]["inputs"]["width"] == 40 and fine["5:2"]["inputs"]["blur_radius"] == 5
    with pytest.raises(WorkflowError) as info:  # shifted by one: a string where INT goes
        ui_to_api(promoted_workflow(["wide", 40, 30]), object_info, editor=editor)
    message = str(info.value)
    for part in ("node 5:1 (EmptyImage, title 'EmptyImage')", "widget 'width'", "'wide'",
                 "subgraph instance 5 (title 'Make it')", "INT: a whole number >= 1 and <= 16384",
                 "['wide', 40, 30]", "save the workflow again"):
        assert part in message, (part, message)
    with pytest.raises(WorkflowError, match=r"widget 'blur_radius' gets 99 .* <= 31"):
        ui_to_api(promoted_workflow([40, 30, 99]), object_info, editor=editor)


@pytest.mark.parametrize("name", ["3d_hunyuan3d-v2.1", "3d_hunyuan3d_image_to_model"])
def test_todays_templates_the_editor_mis_maps_are_refused(object_info, name):
    """The editor 1.58 itself sends these subgraphs' values shifted (a sampler's steps "flow",
    a loader's ckpt_name 4096, see the expectation): we name the first node instead."""
    path = CONVERSION / "templates_json" / f"{name}.json"
    assert unfit_values(expected_of(path, "1.58"))
    with pytest.raises(WorkflowError, match=r"from subgraph instance \d+ .* but it takes"):
        ui_to_api(load_workflow(path), object_info, editor="1.58")


# --- renumbered inner ids, group nodes (1.58) -----------------------------------------------

def test_renumbering_follows_the_editor_counter():
    sg: dict[str, Any] = {"id": "s", "nodes": [{"id": 2, "type": "A"}, {"id": 7, "type": "B"},
                               {"id": 9, "type": "C"}],
          "links": [{"id": 1, "origin_id": 2, "origin_slot": 0, "target_id": 9, "target_slot": 0},
                    [2, 7, 0, 2, 0, "X"]],
          "widgets": [{"id": 2, "name": "w"}]}
    workflow = {"last_node_id": 8, "nodes": [{"id": 2, "type": "s", "properties": {
        "proxyWidgets": [["2", "w"], ["-1", "v"]]}}, {"id": 3, "type": "A"}],
        "links": [], "definitions": {"subgraphs": [sg]}}
    got = renumber_colliding_inner_ids(workflow)
    inner = got["definitions"]["subgraphs"][0]
    # 2 collides -> 9 (last_node_id + 1); then the inner 9 collides with that -> 10.
    assert [n["id"] for n in inner["nodes"]] == [9, 7, 10]
    assert (inner["links"][0]["origin_id"], inner["links"][0]["target_id"]) == (9, 10)
    assert inner["links"][1][1] == 7 and inner["links"][1][3] == 9
    assert inner["widgets"] == [{"id": 9, "name": "w"}]
    assert got["nodes"][0]["properties"]["proxyWidgets"] == [["9", "w"], ["-1", "v"]]
    assert [n["id"] for n in sg["nodes"]] == [2, 7, 9]  # the input is left alone
    no_collision = {"nodes": [{"id": 1}], "links": [],
                    "definitions": {"subgraphs": [{"id": "s", "nodes": [{"id": 5}]}]}}
    assert renumber_colliding_inner_ids(no_collision) is no_collision


def test_group_node_link_to_a_missing_inner_node(object_info):
    """1.32 cannot load such a group node: a WorkflowError naming it; 1.58 drops the link."""
    workflow = load_workflow(CONVERSION / "cases" / "group_node_missing_inner.json")
    with pytest.raises(WorkflowError) as info:
        ui_to_api(workflow, object_info, editor="1.32")
    for part in ("group node 3 (workflow>broken", "extra.groupNodes['broken']", "inner node(s) 5",
                 "it has 0, 1", "editor='1.58'"):
        assert part in str(info.value), (part, str(info.value))
    prompt = ui_to_api(workflow, object_info, editor="1.58")
    assert prompt["4"]["inputs"]["images"] == ["7:6", 0]
    assert prompt["7:6"]["inputs"]["image"] == ["7:5", 0]


def test_not_a_workflow_is_rejected(object_info):
    with pytest.raises(WorkflowError):
        ui_to_api({"nodes": "nope"}, object_info)


def test_load_workflow_names_the_file_and_the_json_error(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"nodes": [}')
    with pytest.raises(WorkflowError, match=r"broken\.json.*line 1 column"):
        load_workflow(bad)
    with pytest.raises(WorkflowError, match="holds a JSON list, not an object"):
        (tmp_path / "list.json").write_text("[]")
        load_workflow(tmp_path / "list.json")
    with pytest.raises(WorkflowError, match="missing.json does not exist"):
        load_workflow(tmp_path / "missing.json")
    workflow: dict = {"nodes": [], "links": []}
    assert load_workflow(workflow) is workflow
    assert ui_to_api(workflow, {}) == {}
