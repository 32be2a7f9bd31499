"""ui_to_api against the real frontend's graphToPrompt() output.

Every ``tests/fixtures/conversion/{cases,templates}/X.json`` has beside it the prompt that the
ComfyUI frontend 1.32.9 produced for it (``X.expected.json``, written by
``scripts/make_conversion_expectations.py``); the converter must give the same prompt.
Pure: no server, no browser.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import random
import re

import pytest

from discomfort.errors import UnknownNodeTypesError, WorkflowError
from discomfort.graph import is_api_format, load_workflow, ui_to_api

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
CONVERSION = FIXTURES / "conversion"
EXPECTED = ".expected.json"
# Cases whose frontend output is random or dated: checked by their own tests below.
NONDETERMINISTIC = {"dynamic_prompt_choices", "filename_date"}


@pytest.fixture(scope="module")
def object_info() -> dict:
    return json.loads((FIXTURES / "object_info.json").read_text())


def workflows(folder: str) -> list[pathlib.Path]:
    return sorted(p for p in (CONVERSION / folder).glob("*.json")
                  if not p.name.endswith(EXPECTED) and p.with_name(p.stem + EXPECTED).exists())


def expected_of(path: pathlib.Path) -> dict:
    return json.loads(path.with_name(path.stem + EXPECTED).read_text())


def convert_like_fixture(path: pathlib.Path, object_info: dict) -> dict:
    """Our conversion, with failures in the form the expectation files use."""
    try:
        return ui_to_api(load_workflow(path), object_info, seed=0)
    except UnknownNodeTypesError as exc:
        return {"__error__": "unknown_node_types", "missing": exc.missing}
    except WorkflowError as exc:
        return {"__error__": "convert", "message": str(exc)}


def same(got: dict, expected: dict) -> bool:
    if expected.get("__error__") == "convert":  # only the kind of failure is compared
        return got.get("__error__") == "convert"
    return got == expected


CASES = [p for p in workflows("cases") if p.stem not in NONDETERMINISTIC]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_hand_made_case_matches_frontend(path, object_info):
    got = convert_like_fixture(path, object_info)
    assert same(got, expected_of(path)), json.dumps(got, indent=1)[:3000]


def test_template_corpus_converts_like_frontend(object_info):
    paths = workflows("templates")
    if not paths:
        pytest.skip("no template workflows under tests/fixtures/conversion/templates: run "
                    "scripts/make_conversion_expectations.py --fetch-templates")
    different = [p.name for p in paths
                 if not same(convert_like_fixture(p, object_info), expected_of(p))]
    identical = len(paths) - len(different)
    print(f"\ntemplate corpus: {identical}/{len(paths)} conversions identical to the frontend")
    assert not different, f"{identical}/{len(paths)} identical; different: {different}"


def test_input_workflow_is_not_modified(object_info):
    for name in ("subgraph", "legacy_group_node", "primitive_node", "dynamic_prompt_comments"):
        workflow = load_workflow(CONVERSION / "cases" / f"{name}.json")
        before = json.dumps(workflow, sort_keys=True)
        ui_to_api(workflow, object_info, seed=0)
        assert json.dumps(workflow, sort_keys=True) == before, name


def test_dynamic_prompt_is_one_of_the_options_and_seeded(object_info):
    path = CONVERSION / "cases" / "dynamic_prompt_choices.json"
    options = {"a red ball", "a green ball", "a light blue ball", "a dark blue ball"}
    assert expected_of(path)["1"]["inputs"]["text"] in options  # what the editor drew
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


def test_filename_date_patterns(object_info):
    path = CONVERSION / "cases" / "filename_date.json"
    shape = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}/x_\d{2}-\d{1,2}-\d{1,2}")
    assert shape.fullmatch(expected_of(path)["2"]["inputs"]["filename_prefix"])
    now = dt.datetime(2025, 3, 4, 5, 6, 7)
    prompt = ui_to_api(load_workflow(path), object_info, now=now)
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


def test_dangling_link_is_a_workflow_error(object_info):
    with pytest.raises(WorkflowError, match="link 99"):
        ui_to_api(load_workflow(CONVERSION / "cases" / "dangling_link.json"), object_info)


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
    workflow = {"nodes": [], "links": []}
    assert load_workflow(workflow) is workflow
    assert ui_to_api(workflow, {}) == {}
