"""ComfyUI's prompt protocol, without I/O: the one place that reads what the server says.

Everything ComfyUI answers about a prompt goes through here: websocket messages become
:class:`Event` objects, ``/queue``, ``/history`` and jobs-API replies become plain facts,
``POST /prompt`` replies become a prompt id or a typed validation error. Following one prompt
to its end is :class:`PromptTracker` (the shape of h11 or websockets' protocol objects): fed
messages and replies, it yields the prompt's events and exactly one outcome, and says which
request it needs next. The async connector and the synchronous ``ComfyServer.run_prompt`` are
thin drivers that move bytes, keep the clocks and feed it; it is tested on recorded message
sequences with no server at all.

It is tolerant by design: message types and fields it does not know (newer servers send
feature flags, ``progress_state``, asset blocks...) pass through untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import (
    ExecutionError,
    ExecutionInterrupted,
    PromptLost,
    PromptNotEndedError,
    PromptValidationError,
)

FINAL_MESSAGES = ("execution_success", "execution_error", "execution_interrupted")


@dataclass(frozen=True)
class Event:
    """A server message about one prompt: ``type`` as ComfyUI names it (``executing``,
    ``progress``, ``executed``, ``execution_cached``, ``execution_success``...), ``data`` its
    payload, and the node it is about (``node``, ``class_type``; None for prompt-wide ones)."""

    type: str
    data: dict = field(default_factory=dict)
    node: str | None = None
    class_type: str | None = None

    @property
    def is_final(self) -> bool:
        return self.type in FINAL_MESSAGES

    @property
    def prompt_id(self) -> str | None:
        return self.data.get("prompt_id")


def decode_message(text: str | bytes | dict) -> dict | None:
    """A websocket text frame as a dict; None for anything else (binary previews, junk)."""
    if isinstance(text, dict):
        return text
    try:
        message = json.loads(text)
    except (TypeError, ValueError):
        return None
    return message if isinstance(message, dict) else None


def message_prompt_id(message: Any) -> str | None:
    """The prompt a decoded websocket message is about (None: the server's own news)."""
    data = message.get("data") if isinstance(message, dict) else None
    prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
    return None if prompt_id is None else str(prompt_id)


def event_from_message(message: Any, class_types: dict[str, str] | None = None) -> Event | None:
    """An :class:`Event` from one decoded websocket message, or None when it names no
    prompt. Unknown message types and fields pass through untouched."""
    if not isinstance(message, dict):
        return None
    data = message.get("data")
    if not isinstance(data, dict) or data.get("prompt_id") is None:
        return None
    node = data.get("node", data.get("node_id"))
    node = None if node is None else str(node)
    class_type = data.get("node_type") or (class_types or {}).get(node) if node else None
    return Event(str(message.get("type", "")), data, node, class_type)


def outcome_error(event: Event) -> Exception | None:
    """The exception a final event stands for (None for success)."""
    if event.type == "execution_error":
        return ExecutionError(event.data)
    if event.type == "execution_interrupted":
        return ExecutionInterrupted(f"prompt {event.prompt_id} was interrupted")
    return None


# --- replies to HTTP requests ----------------------------------------------------------------

@dataclass(frozen=True)
class QueueState:
    """``GET /queue``: the ids running now and those waiting."""

    running: frozenset[str]
    pending: frozenset[str]

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending


def queue_state(reply: Any) -> QueueState:
    def ids(key: str) -> frozenset[str]:
        items = reply.get(key) if isinstance(reply, dict) else None
        return frozenset(str(item[1]) for item in items or []
                         if isinstance(item, (list, tuple)) and len(item) > 1)

    return QueueState(ids("queue_running"), ids("queue_pending"))


def history_entry(reply: Any, prompt_id: str) -> dict | None:
    """``GET /history/{id}``: the prompt's entry, None while there is none ({} for unknown)."""
    entry = reply.get(prompt_id) if isinstance(reply, dict) else None
    return entry if isinstance(entry, dict) else None


def history_outcome(entry: dict | None) -> Event | None:
    """The final event recorded in a history entry (how a lost websocket event is recovered);
    None while the prompt has not finished."""
    messages = ((entry or {}).get("status") or {}).get("messages") or []
    for item in reversed(messages):
        if isinstance(item, (list, tuple)) and len(item) == 2 and item[0] in FINAL_MESSAGES:
            data = item[1] if isinstance(item[1], dict) else {}
            return event_from_message({"type": item[0], "data": data}) or Event(item[0], data)
    return None


def history_messages(entry: dict | None) -> list[str]:
    """The message types a history entry records, in order."""
    messages = ((entry or {}).get("status") or {}).get("messages") or []
    return [item[0] for item in messages if isinstance(item, (list, tuple)) and item]


def prompt_reply(status: int, body: Any) -> PromptValidationError | None:
    """``POST /prompt``: the validation error a reply stands for, or None when it was taken
    whole. A 200 with non-empty ``node_errors`` is an error too: ComfyUI would run the valid
    outputs and silently skip the rest."""
    if status == 400 and isinstance(body, dict):
        return PromptValidationError(body.get("error") or {}, body.get("node_errors") or {})
    if status == 200 and isinstance(body, dict) and body.get("node_errors"):
        return PromptValidationError({"message": "some outputs failed validation"},
                                     body["node_errors"])
    return None


# --- the jobs API (ComfyUI >= 0.6) -----------------------------------------------------------

JOBS_PROBE_PATH = "/api/jobs?limit=1"
JOB_RUNNING = ("pending", "in_progress")
JOB_FINAL = {"completed": "execution_success", "failed": "execution_error",
             "cancelled": "execution_interrupted"}


def jobs_api_available(status: int, reply: Any) -> bool:
    """``GET /api/jobs?limit=1``: does the server have the jobs API? A 200 listing ``jobs``
    says yes; 0.3.x answers 404 (an empty body), and anything else is taken as no."""
    return status == 200 and isinstance(reply, dict) and isinstance(reply.get("jobs"), list)


def job_outcome(reply: Any) -> Event | None:
    """``GET /api/jobs/{id}``: the final event a finished job stands for; None while it is
    pending or running (or its status is one this client does not know).

    The job's ``execution_status`` carries the history's messages, so the exact final event is
    taken from there when it is present; else the status alone decides (``failed`` with the
    job's ``execution_error``). Servers before ``cancelled`` existed report an interrupted
    prompt as ``failed``: its messages still say ``execution_interrupted``."""
    if not isinstance(reply, dict) or reply.get("status") not in JOB_FINAL:
        return None
    prompt_id = reply.get("id")
    recorded = history_outcome({"status": reply.get("execution_status")})
    if recorded is not None:
        return recorded
    kind = JOB_FINAL[reply["status"]]
    data = {"prompt_id": prompt_id}
    if kind == "execution_error":
        error = reply.get("execution_error")
        data.update(error if isinstance(error, dict) else
                    {"exception_message": "the server reports the job failed, without details"})
        data["prompt_id"] = prompt_id
    return event_from_message({"type": kind, "data": data}) or Event(kind, data)


# --- following one prompt --------------------------------------------------------------------

HISTORY, QUEUE, JOB = "history", "queue", "job"


class PromptTracker:
    """Follows one queued prompt to exactly one outcome, without I/O or clocks.

    The driver feeds it what the server says (:meth:`receive_message` for each websocket
    frame, :meth:`receive_history`, :meth:`receive_queue`, :meth:`receive_job` for replies),
    what happened to the connection (:meth:`connection_lost`, :meth:`connection_made`) and
    when to look (:meth:`check`, on the driver's own timer); it takes the prompt's events with
    :meth:`events_received` and asks :meth:`wants` which request to send next (``"history"``,
    ``"queue"``, ``"job"`` or None; :meth:`path` names the route). When :attr:`done`,
    :meth:`result` returns the final event or raises the typed error: ``ExecutionError``,
    ``ExecutionInterrupted``, ``PromptLost`` (the server no longer knows the prompt), or what
    the driver passed to :meth:`fail`.

    Events lost while the websocket was away are recovered from the server's record: the final
    one from ``/api/jobs/{id}`` where the server has the jobs API, else ``/history/{id}``;
    ``/queue`` then tells a prompt still waiting or running from one that vanished. History is
    asked again after ``/queue`` says "gone", since a prompt that ends between the two
    requests leaves the queue and enters the history in one step.
    """

    def __init__(self, prompt_id: str, class_types: dict[str, str] | None = None, *,
                 jobs_api: bool = False, websocket: bool = True, want_entry: bool = False):
        self.prompt_id = prompt_id
        self.class_types = {str(k): str(v) for k, v in (class_types or {}).items()}
        self.jobs_api = jobs_api
        self.connected = websocket      # False: a driver that only polls
        self.want_entry = want_entry    # keep asking /history after the outcome, for its entry
        self.outcome: Event | None = None
        self.error: Exception | None = None
        self.entry: dict | None = None  # the history entry, once read
        self.job: dict | None = None    # the last jobs-API reply
        self.where: str | None = None   # "pending" or "running", as the server last said
        self._events: list[Event] = []
        self._step: str | None = None   # the request a check waits for
        self._gone_from_queue = False
        self._cancelling = False

    # --- what the driver feeds in ----------------------------------------------------------

    def receive_message(self, message: Any) -> None:
        """One websocket frame (text, bytes or a decoded dict); others' and junk are ignored."""
        event = event_from_message(decode_message(message), self.class_types)
        if event is None or event.prompt_id != self.prompt_id or self.done:
            return
        if event.type == "execution_start":
            self.where = "running"
        if event.is_final:
            self._finish(event)
        else:
            self._events.append(event)

    def receive_history(self, reply: Any) -> None:
        """``GET /history/{id}``."""
        entry = history_entry(reply, self.prompt_id)
        final = history_outcome(entry)
        if final is not None:
            self.entry = entry
            if not self.done:
                self._finish(self._classed(final))
            return
        if self.done or self._step != HISTORY:
            return
        if entry or not self._gone_from_queue:
            self._step = None if entry else QUEUE
        else:
            self._vanished()

    def receive_queue(self, reply: Any) -> None:
        """``GET /queue``."""
        if self.done:
            return
        queue = queue_state(reply)
        if self.prompt_id in queue:
            self.where = "running" if self.prompt_id in queue.running else "pending"
        if self._step != QUEUE:
            return
        if self.prompt_id in queue:
            self._step = None
        else:  # ended or vanished: the history, asked after this, tells which
            self._gone_from_queue, self._step = True, HISTORY

    def receive_job(self, status: int, reply: Any) -> None:
        """``GET /api/jobs/{id}``: its HTTP status (404: the server has no such job) and body."""
        if self.done:
            return
        if status == 404:
            if self._step == JOB:
                self._vanished()
            return
        if status != 200 or not isinstance(reply, dict):
            return
        self.job = reply
        final = job_outcome(reply)
        if final is not None:
            self._finish(self._classed(final))
            return
        if reply.get("status") in JOB_RUNNING:
            self.where = "running" if reply["status"] == "in_progress" else "pending"
        if self._step == JOB:
            self._step = None

    def receive_reply(self, kind: str, status: int, reply: Any) -> None:
        """The reply to the request :meth:`wants` named."""
        if kind == JOB:
            self.receive_job(status, reply)
        elif status == 200 and kind == HISTORY:
            self.receive_history(reply)
        elif status == 200 and kind == QUEUE:
            self.receive_queue(reply)

    def connection_lost(self) -> None:
        """The websocket went away: events may be lost from now on, so look now."""
        self.connected = False
        self.check()

    def connection_made(self) -> None:
        """The websocket is back; what came while it was away is only in the record."""
        self.connected = True
        self.check()

    def check(self) -> None:
        """Ask the server's record (the driver's timer says when): the outcome if it ended,
        else whether the prompt is still queued or running."""
        if self.done or self._step is not None:
            return
        self._gone_from_queue = False
        self._step = JOB if self.jobs_api else HISTORY

    def cancel_requested(self, removed: bool = False) -> None:
        """We asked the server to stop this prompt: if it vanishes now, it was removed, not
        lost. ``removed``: we deleted it from the queue ourselves, so no event will come."""
        self._cancelling = True
        if removed and not self.done:
            self._finish(Event("execution_interrupted", {"prompt_id": self.prompt_id}))
        else:
            self.check()

    def fail(self, error: Exception) -> None:
        """End with the driver's own error (the server died, the client shut down)."""
        if not self.done:
            self.error, self._step = error, None

    # --- what the driver reads back ----------------------------------------------------------

    def events_received(self) -> list[Event]:
        """The prompt's events since the last call, in order; the final one last, once."""
        events, self._events = self._events, []
        return events

    def wants(self) -> str | None:
        """The request to send next: ``"history"``, ``"queue"``, ``"job"``, or None."""
        if not self.done:
            return self._step
        if self.want_entry and self.entry is None and self.outcome is not None:
            return HISTORY
        return None

    def path(self, kind: str) -> str:
        return {HISTORY: f"/history/{self.prompt_id}", QUEUE: "/queue",
                JOB: f"/api/jobs/{self.prompt_id}"}[kind]

    @property
    def done(self) -> bool:
        return self.outcome is not None or self.error is not None

    def result(self) -> Event:
        """The final event of a successful prompt; raises what ended any other."""
        if self.error is not None:
            raise self.error
        if self.outcome is None:
            raise PromptNotEndedError(f"prompt {self.prompt_id} has not ended yet")
        return self.outcome

    # --- internals ---------------------------------------------------------------------------

    def _classed(self, event: Event) -> Event:
        class_type = event.class_type or self.class_types.get(event.node or "")
        return Event(event.type, event.data, event.node, class_type)

    def _finish(self, event: Event) -> None:
        self.outcome, self._step = event, None
        self.error = outcome_error(event)
        self._events.append(event)

    def _vanished(self) -> None:
        if self._cancelling:
            self._finish(Event("execution_interrupted", {"prompt_id": self.prompt_id}))
            return
        self.fail(PromptLost(
            f"prompt {self.prompt_id} is neither queued nor in the history: the server lost it "
            "(was it restarted, its queue cleared, or the prompt deleted by another client?)"))
