"""The protocol core on message sequences recorded from the real server (no server needed),
and on the same sequences as a newer server would send them (fields and messages it adds)."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import pytest

from discomfort.errors import ExecutionError, ExecutionInterrupted, PromptValidationError
from discomfort.protocol import (
    decode_message, event_from_message, history_entry, history_outcome, outcome_error,
    prompt_reply, queue_state,
)
from discomfort.report import PromptReport

RECORDED = Path(__file__).parent / "fixtures" / "protocol"


def recorded(name: str) -> dict:
    return json.loads((RECORDED / f"{name}.json").read_text())


def replay(case: dict, messages: list | None = None) -> tuple[PromptReport, object]:
    """Feed a case's websocket messages, as the connector's reader does, into one prompt's
    report; returns the report and the final event (None if none came)."""
    classes = {k: v["class_type"] for k, v in case["prompt"].items()}
    report, final = PromptReport(case["prompt_id"], case["case"], classes), None
    for raw in case["messages"] if messages is None else messages:
        event = event_from_message(decode_message(raw), classes)
        if event is None or event.prompt_id != case["prompt_id"]:
            continue
        assert final is None, f"an event after the final one: {event.type}"
        report.on_event(event)
        final = event if event.is_final else None
    return report, final


@pytest.mark.parametrize("name, final, error", [
    ("success", "execution_success", None), ("cached", "execution_success", None),
    ("execution_error", "execution_error", ExecutionError),
    ("interrupted", "execution_interrupted", ExecutionInterrupted),
    ("partly_refused", "execution_success", None),
])
def test_each_recorded_sequence_ends_once_with_its_outcome(name, final, error):
    case = recorded(name)
    _, event = replay(case)
    assert event.type == final
    assert (type(outcome_error(event)) if error else outcome_error(event)) == error
    entry = history_entry(case["history"], case["prompt_id"])
    assert history_outcome(entry).type == final  # the same outcome when events were lost
    assert case["prompt_id"] not in queue_state(case["queue"])
    assert str(uuid.UUID(case["prompt_id"])) == case["prompt_id"]  # canonical ids


def test_what_ran_and_what_was_cached():
    (success, _), (cached, _) = replay(recorded("success")), replay(recorded("cached"))
    assert success.executed_types() == {"EmptyImage": 1, "ImageInvert": 1, "PreviewImage": 1}
    assert cached.executed == [] and cached.cached_types() == {
        "EmptyImage": 1, "ImageInvert": 1, "PreviewImage": 1}
    [file] = cached.files  # a cached output node replays its files
    assert file.type == "temp" and file.class_type == "PreviewImage"


def test_an_execution_error_names_node_type_and_message():
    error = outcome_error(replay(recorded("execution_error"))[1])
    assert (error.node_id, error.node_type) == ("2", "DiscomfortTestFail")
    assert error.exception_message == "on purpose" and "Traceback" not in str(error)


def test_refused_prompts_are_validation_errors_naming_the_node():
    case = recorded("refused")
    error = prompt_reply(case["post_prompt"]["status"], case["post_prompt"]["body"])
    assert isinstance(error, PromptValidationError) and "node 1 (EmptyImage)" in str(error)
    partly = recorded("partly_refused")
    error = prompt_reply(partly["post_prompt"]["status"], partly["post_prompt"]["body"])
    assert isinstance(error, PromptValidationError) and set(error.node_errors) == {"9"}
    assert prompt_reply(200, {"prompt_id": "x", "number": 1, "node_errors": {}}) is None


def test_a_disconnect_mid_prompt_leaves_no_outcome_until_history_gives_it():
    case = recorded("interrupted")
    cut = case["messages"][:8]  # the websocket went away while the node slept
    assert replay(case, cut)[1] is None
    assert history_outcome(history_entry({}, case["prompt_id"])) is None  # not written yet
    assert history_outcome(history_entry(case["history"], case["prompt_id"])).type == \
        "execution_interrupted"


def newer(messages: list) -> list:
    """The same sequence as a newer server sends it: extra fields everywhere, asset blocks in
    outputs, a feature-flags handshake and message types this client has never seen."""
    out = [{"type": "feature_flags", "data": {"supports_preview_metadata": True}}]
    for message in copy.deepcopy(messages):
        data = message.get("data")
        if isinstance(data, dict):
            data["added_later"] = {"nested": [1, 2]}
            for items in (data.get("output") or {}).values():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict):
                        item["asset"] = {"id": "a1", "hash": "blake3:00"}
        out.append(message)
        if message.get("type") == "execution_start":
            out.append({"type": "some_future_message", "data": {"prompt_id": data["prompt_id"],
                                                                 "anything": True}})
            out.append({"type": "progress_text", "data": ["not", "a", "dict"]})
    return out + [b"\x00\x00\x00\x01 binary junk", "not json"]


def test_a_newer_servers_sequence_gives_the_same_outcome_and_report():
    case = recorded("success")
    (old, _), (new, final) = replay(case), replay(case, newer(case["messages"]))
    assert final.type == "execution_success"
    assert new.executed == old.executed and new.cached == old.cached
    assert [f.filename for f in new.files] == [f.filename for f in old.files]
