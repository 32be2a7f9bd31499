"""ComfyUI's prompt protocol, without I/O: the one place that reads what the server says.

Everything ComfyUI answers about a prompt goes through here: websocket messages become
:class:`Event` objects, ``/queue`` and ``/history`` replies become plain facts, ``POST
/prompt`` replies become a prompt id or a typed validation error, and a final event becomes
the outcome (or the exception) of a prompt. The async connector and the synchronous test
client are thin drivers that move bytes and feed this module; it can be tested on recorded
message sequences with no server at all.

It is tolerant by design: message types and fields it does not know (newer servers send
feature flags, ``progress_state``, asset blocks...) pass through untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ExecutionError, ExecutionInterrupted, PromptValidationError

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
