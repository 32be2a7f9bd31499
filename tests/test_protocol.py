"""The protocol core on message sequences recorded from the real server (no server needed),
on the same sequences as a newer server would send them (fields and messages it adds), and
on jobs-API replies hand-made after ComfyUI's source (0.3.75 has no jobs API; see each file's
``source``); last, the connector driving it through the jobs API of a small stand-in server."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from discomfort.errors import (
    ComfyServerDied,
    ExecutionError,
    ExecutionInterrupted,
    PromptLost,
    PromptValidationError,
)
from discomfort.protocol import (
    HISTORY,
    JOB,
    QUEUE,
    Event,
    PromptTracker,
    history_entry,
    history_outcome,
    jobs_api_available,
    prompt_reply,
    queue_state,
)
from discomfort.report import PromptReport

if TYPE_CHECKING:
    from aiohttp import web

RECORDED = Path(__file__).parent / "fixtures" / "protocol"


def recorded(name: str) -> dict:
    return json.loads((RECORDED / f"{name}.json").read_text())


def job(name: str) -> tuple[int, dict]:
    reply = json.loads((RECORDED / "jobs" / f"{name}.json").read_text())
    return reply["status"], reply["body"]


def tracker_for(case: dict, **kwargs) -> PromptTracker:
    classes = {k: v["class_type"] for k, v in case["prompt"].items()}
    return PromptTracker(case["prompt_id"], classes, **kwargs)


def feed(tracker: PromptTracker, messages: list) -> list:
    """Each websocket message in turn, as the connector's reader does; the events it gave."""
    events = []
    for message in messages:
        tracker.receive_message(message)
        events += tracker.events_received()
    return events


def answer(tracker: PromptTracker, replies: dict) -> list[str]:
    """Answer what the tracker asks from ``replies`` (kind -> list of (status, body), used in
    order) until it asks nothing; the kinds it asked, in order."""
    asked: list[str] = []
    replies = {kind: list(answers) for kind, answers in replies.items()}
    while (kind := tracker.wants()) is not None:
        assert len(asked) < 10, asked  # it must not ask forever
        asked.append(kind)
        tracker.receive_reply(kind, *replies[kind].pop(0))
    return asked


def report_of(case: dict, events: list) -> PromptReport:
    report = PromptReport(case["prompt_id"], case["case"],
                          {k: v["class_type"] for k, v in case["prompt"].items()})
    for event in events:
        report.on_event(event)
    return report


# --- the websocket alone ---------------------------------------------------------------------

@pytest.mark.parametrize("name, final, error", [
    ("success", "execution_success", None), ("cached", "execution_success", None),
    ("execution_error", "execution_error", ExecutionError),
    ("interrupted", "execution_interrupted", ExecutionInterrupted),
    ("partly_refused", "execution_success", None),
])
def test_each_recorded_sequence_ends_once_with_its_outcome(name, final, error):
    case = recorded(name)
    tracker = tracker_for(case)
    events = feed(tracker, case["messages"])
    assert [e.type for e in events if e.is_final] == [final] and events[-1].is_final
    assert tracker.done and tracker.wants() is None  # nothing to ask: the websocket said it all
    if error is None:
        assert tracker.result().type == final
    else:
        with pytest.raises(error):
            tracker.result()
    tracker.receive_history(case["history"])  # the record, read late, adds no second outcome
    feed(tracker, case["messages"])
    assert tracker.events_received() == []
    assert tracker.outcome is not None and tracker.outcome.type == final
    assert str(uuid.UUID(case["prompt_id"])) == case["prompt_id"]  # canonical ids


def test_what_ran_and_what_was_cached():
    success, cached = recorded("success"), recorded("cached")
    ran = report_of(success, feed(tracker_for(success), success["messages"]))
    again = report_of(cached, feed(tracker_for(cached), cached["messages"]))
    assert ran.executed_types() == {"EmptyImage": 1, "ImageInvert": 1, "PreviewImage": 1}
    assert again.executed == [] and again.cached_types() == {
        "EmptyImage": 1, "ImageInvert": 1, "PreviewImage": 1}
    [file] = again.files  # a cached output node replays its files
    assert file.type == "temp" and file.class_type == "PreviewImage"


def test_an_execution_error_names_node_type_and_message():
    case = recorded("execution_error")
    tracker = tracker_for(case)
    feed(tracker, case["messages"])
    with pytest.raises(ExecutionError) as caught:
        tracker.result()
    assert (caught.value.node_id, caught.value.node_type) == ("2", "DiscomfortTestFail")
    assert caught.value.exception_message == "on purpose" and "Traceback" not in str(caught.value)


def test_other_prompts_messages_are_not_this_ones():
    success, error = recorded("success"), recorded("execution_error")
    tracker = tracker_for(success)
    assert feed(tracker, error["messages"]) == [] and not tracker.done


def test_refused_prompts_are_validation_errors_naming_the_node():
    case = recorded("refused")
    error = prompt_reply(case["post_prompt"]["status"], case["post_prompt"]["body"])
    assert isinstance(error, PromptValidationError) and "node 1 (EmptyImage)" in str(error)
    partly = recorded("partly_refused")
    error = prompt_reply(partly["post_prompt"]["status"], partly["post_prompt"]["body"])
    assert isinstance(error, PromptValidationError) and set(error.node_errors) == {"9"}
    assert prompt_reply(200, {"prompt_id": "x", "number": 1, "node_errors": {}}) is None


# --- events lost: the outcome from the record ------------------------------------------------

def test_a_disconnect_mid_prompt_is_recovered_from_history_and_queue():
    case = recorded("interrupted")
    tracker = tracker_for(case)
    feed(tracker, case["messages"][:8])  # the websocket went away while the node slept
    tracker.connection_lost()
    # not in the history yet, but running: nothing more to ask until the next check
    assert answer(tracker, {HISTORY: [(200, case["history_running"])],
                            QUEUE: [(200, case["queue_running"])]}) == [HISTORY, QUEUE]
    assert not tracker.done and tracker.where == "running"
    tracker.check()  # the driver's next poll: it has ended since
    assert answer(tracker, {HISTORY: [(200, case["history"])]}) == [HISTORY]
    [final] = tracker.events_received()
    assert final.type == "execution_interrupted" and final.class_type == "DiscomfortTestSleep"
    with pytest.raises(ExecutionInterrupted):
        tracker.result()
    tracker.connection_made()  # the websocket back, late: nothing new
    feed(tracker, case["messages"][8:])
    assert tracker.events_received() == [] and tracker.wants() is None


def test_a_disconnect_mid_prompt_is_recovered_from_the_jobs_api():
    case = recorded("success")
    tracker = tracker_for(case, jobs_api=True)
    feed(tracker, case["messages"][:5])
    tracker.connection_lost()
    assert answer(tracker, {JOB: [job("success_in_progress")]}) == [JOB]  # one request, no queue
    assert not tracker.done and tracker.where == "running"
    tracker.check()
    assert answer(tracker, {JOB: [job("success_completed")]}) == [JOB]
    assert tracker.result().type == "execution_success"
    assert tracker.job is not None and tracker.job["outputs"]["3"]["images"][0]["type"] == "temp"


def test_the_final_event_lost_but_history_has_it():
    case = recorded("success")
    tracker = tracker_for(case)
    lost = [m for m in case["messages"] if m.get("type") != "execution_success"]
    events = feed(tracker, lost)
    assert not tracker.done and tracker.wants() is None  # waiting: only the driver's timer helps
    tracker.check()
    assert answer(tracker, {HISTORY: [(200, case["history"])]}) == [HISTORY]
    assert tracker.result().type == "execution_success"
    assert report_of(case, events + tracker.events_received()).executed_types() == {
        "EmptyImage": 1, "ImageInvert": 1, "PreviewImage": 1}


def test_a_prompt_that_ends_between_the_history_and_the_queue_reply_is_not_lost():
    case = recorded("success")
    tracker = tracker_for(case)
    tracker.check()
    asked = answer(tracker, {HISTORY: [(200, case["history_running"]), (200, case["history"])],
                             QUEUE: [(200, case["queue"])]})  # gone from the queue: it ended
    assert asked == [HISTORY, QUEUE, HISTORY] and tracker.result().type == "execution_success"


@pytest.mark.parametrize("jobs_api", [False, True])
def test_a_prompt_that_vanished_is_a_clear_error(jobs_api):
    case = recorded("removed")  # deleted from the queue by someone else: no event, no history
    tracker = tracker_for(case, jobs_api=jobs_api)
    assert feed(tracker, case["messages"]) == []
    tracker.check()  # while it waited, behind another prompt
    answer(tracker, {HISTORY: [(200, case["history"])], QUEUE: [(200, case["queue_pending"])],
                     JOB: [job("removed_pending")]})
    assert not tracker.done and tracker.where == "pending"
    tracker.check()  # after it was deleted
    asked = answer(tracker, {HISTORY: [(200, case["history"]), (200, case["history_later"])],
                             QUEUE: [(200, case["queue"])], JOB: [job("removed_not_found")]})
    assert asked == ([JOB] if jobs_api else [HISTORY, QUEUE, HISTORY])
    with pytest.raises(PromptLost, match="neither queued nor in the history"):
        tracker.result()
    assert tracker.events_received() == []


def test_a_prompt_we_removed_ourselves_ends_interrupted_not_lost():
    case = recorded("removed")
    tracker = tracker_for(case, jobs_api=True)
    tracker.cancel_requested()  # POST /api/jobs/{id}/cancel said it was cancelled
    answer(tracker, {JOB: [job("removed_not_found")]})
    with pytest.raises(ExecutionInterrupted):
        tracker.result()
    removed = tracker_for(case)
    removed.cancel_requested(removed=True)  # we deleted it from the queue: no event will come
    assert [e.type for e in removed.events_received()] == ["execution_interrupted"]
    assert removed.wants() is None


def test_a_drivers_own_error_ends_the_prompt_once():
    case = recorded("success")
    tracker = tracker_for(case)
    tracker.fail(ComfyServerDied("gone"))
    feed(tracker, case["messages"])
    with pytest.raises(ComfyServerDied):
        tracker.result()
    assert tracker.events_received() == [] and tracker.outcome is None


# --- a driver that only polls (the synchronous client) ---------------------------------------

@pytest.mark.parametrize("jobs_api", [False, True])
def test_a_polling_driver_gets_the_outcome_and_the_history_entry(jobs_api):
    case = recorded("interrupted")
    tracker = tracker_for(case, jobs_api=jobs_api, websocket=False, want_entry=True)
    assert tracker.wants() is None  # the driver's clock says when to look
    tracker.check()
    answer(tracker, {HISTORY: [(200, case["history_running"])],
                     QUEUE: [(200, case["queue_running"])], JOB: [job("interrupted_in_progress")]})
    assert not tracker.done
    tracker.check()
    asked = answer(tracker, {HISTORY: [(200, case["history"])],
                             JOB: [job("interrupted_cancelled")]})
    assert asked == ([JOB, HISTORY] if jobs_api else [HISTORY])  # the entry: from /history
    outcome = history_outcome(tracker.entry)
    assert outcome is not None and outcome.type == "execution_interrupted"
    with pytest.raises(ExecutionInterrupted):
        tracker.result()


# --- the jobs API ----------------------------------------------------------------------------

def test_the_jobs_api_is_detected_from_its_list_reply():
    probe = recorded("jobs_probe")  # the real 0.3.75: 404, empty body
    assert (probe["status"], probe["comfyui_version"]) == (404, "0.3.75")
    assert not jobs_api_available(probe["status"], probe["body"])
    assert jobs_api_available(*job("list"))
    assert not jobs_api_available(200, "<html>the editor</html>")  # a front end catching all


@pytest.mark.parametrize("name, error", [
    ("success_completed", None), ("execution_error_failed", ExecutionError),
    ("interrupted_cancelled", ExecutionInterrupted),
    ("interrupted_failed_older_server", ExecutionInterrupted),  # before "cancelled" existed
])
def test_a_finished_job_gives_the_same_outcome_as_the_history(name, error):
    status, body = job(name)
    case = recorded(json.loads((RECORDED / "jobs" / f"{name}.json").read_text())["from"])
    by_job, by_history = tracker_for(case, jobs_api=True), tracker_for(case)
    by_job.check()
    by_job.receive_job(status, body)
    by_history.check()
    by_history.receive_history(case["history"])
    for tracker in (by_job, by_history):
        [final] = tracker.events_received()
        outcome = history_outcome(history_entry(case["history"], case["prompt_id"]))
        assert outcome is not None and final.type == outcome.type
        if error is None:
            assert tracker.result() == final
        else:
            with pytest.raises(error):
                tracker.result()


def test_a_job_without_its_messages_is_judged_by_its_status():
    status, body = job("execution_error_failed")
    body = {k: v for k, v in body.items() if k != "execution_status"}
    tracker = tracker_for(recorded("execution_error"), jobs_api=True)
    tracker.check()
    tracker.receive_job(status, body)
    with pytest.raises(ExecutionError) as caught:
        tracker.result()
    assert caught.value.node_type == "DiscomfortTestFail"


# --- a newer server ----------------------------------------------------------------------------

def newer(messages: list) -> list:
    """The same sequence as a newer server sends it: extra fields everywhere, asset blocks in
    outputs, a feature-flags handshake and message types this client has never seen."""
    out = [{"type": "feature_flags", "data": {"supports_preview_metadata": True, "assets": True}}]
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
            out.append({"type": "progress_state", "data": {"prompt_id": data["prompt_id"],
                                                           "nodes": {"9": {"state": "new"}}}})
    return out + [b"\x00\x00\x00\x01 binary junk", "not json", json.dumps({"type": 3})]


@pytest.mark.parametrize("name", ["success", "execution_error", "interrupted"])
def test_a_newer_servers_sequence_gives_the_same_outcome_and_report(name):
    case = recorded(name)
    old_tracker, new_tracker = tracker_for(case), tracker_for(case)
    old = report_of(case, feed(old_tracker, case["messages"]))
    new = report_of(case, feed(new_tracker, newer(case["messages"])))
    assert new_tracker.outcome is not None and old_tracker.outcome is not None
    assert new_tracker.outcome.type == old_tracker.outcome.type
    assert type(new_tracker.error) is type(old_tracker.error)
    assert new.executed == old.executed and new.cached == old.cached
    assert [f.filename for f in new.files] == [f.filename for f in old.files]
    assert case["prompt_id"] not in queue_state(case["queue"])


# --- the connector's jobs-API path, against a stand-in for a newer server ---------------------

class NewerServer:
    """A stand-in for a ComfyUI with the jobs API (none runs here): it answers with the
    hand-made job replies, drops every websocket once a prompt is posted (so the outcome can
    only come from ``/api/jobs/{id}``), and records the routes asked."""

    def __init__(self, replies: list[tuple[int, dict]]):
        self.replies = list(replies)
        self.asked: list[str] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.prompt_id: str | None = None

    async def start(self) -> str:
        from aiohttp import web

        from discomfort.store import default_root

        async def websocket(request):
            if self.prompt_id is not None:
                return web.Response(status=503)
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            self.sockets.append(ws)
            await ws.send_json({"type": "status", "data": {"status": {"exec_info": {}}}})
            async for _ in ws:
                pass
            return ws

        async def post_prompt(request):
            self.prompt_id = (await request.json())["prompt_id"]
            for ws in self.sockets:
                await ws.close()
            return web.json_response({"prompt_id": self.prompt_id, "number": 1, "node_errors": {}})

        async def job_reply(request):
            status, body = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
            body = dict(body, id=self.prompt_id) if "id" in body else body
            return web.json_response(body, status=status)

        def answer(body):
            async def handler(request):
                return web.json_response(body)
            return handler

        @web.middleware
        async def record(request, handler):
            self.asked.append(f"{request.method} {request.path}")
            return await handler(request)

        app = web.Application(middlewares=[record])
        app.add_routes([
            web.get("/system_stats", answer({"system": {"argv": ["main.py", "--cache-lru", "4"]}})),
            web.get("/discomfort/info", answer({"root": str(default_root())})),
            web.get("/api/jobs", answer(job("list")[1])), web.get("/ws", websocket),
            web.post("/prompt", post_prompt), web.get("/api/jobs/{id}", job_reply),
        ])
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        await self.runner.cleanup()


PROMPT = recorded("success")["prompt"]


@pytest.mark.parametrize("replies, error", [
    ([job("success_in_progress"), job("success_completed")], None),
    ([job("success_in_progress"), job("removed_not_found")], PromptLost),
])
async def test_the_connector_follows_a_prompt_through_the_jobs_api(replies, error):
    pytest.importorskip("aiohttp", reason="the core tests on other Pythons have numpy only")
    from discomfort.connector import ComfyConnector

    server = NewerServer(replies)
    connector = await ComfyConnector.create(url=await server.start(), unresponsive_timeout=10)
    try:
        assert connector.jobs_api is True  # detected from the /api/jobs list
        prompt_id = await connector.queue(PROMPT)
        events: list[Event] = []
        if error is None:
            await connector.wait(prompt_id, timeout=20, on_event=events.append, history=False)
            assert [e.type for e in events] == ["execution_success"]
        else:
            with pytest.raises(error):
                await connector.wait(prompt_id, timeout=20, history=False)
        asked = [a for a in server.asked if prompt_id in a]
        assert asked.count(f"GET /api/jobs/{prompt_id}") >= 2
        assert not any("/history" in a or a.endswith("/queue") for a in server.asked)
    finally:
        await connector.kill_api()
        await server.stop()
