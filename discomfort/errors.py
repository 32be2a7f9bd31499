"""Every exception Discomfort raises, in one place.

Each one carries what a user needs to act on it. Where the WorkflowContext spec names a
built-in exception (KeyError, TypeError, FileExistsError, FileNotFoundError, MemoryError),
ours subclass it, so ``except KeyError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "DiscomfortError", "DiscomfortWarning",
    "InvalidArgumentError", "WrongTypeError", "ImageFileError", "UsageError", "CommandError",
    "InvalidIdError", "ConfigError", "RayNotInstalledError",
    "StoreError", "UnsafeStoreError", "StoreLockTimeout", "ContextClosedError", "KeyNotFoundError",
    "StoreMemoryError", "RefExportError", "ValueChangedError", "UnstorableValueError",
    "CorruptValueError", "RunNotFoundError", "AlreadyExistsError",
    "BindingError", "PortError",
    "ComfyServerError", "ComfyStartError", "ComfyInstallError", "ServeStateError",
    "NoSuchFileError", "UploadExistsError",
    "TokenError", "RemoteStoreError", "RemoteValueError", "RunExpiredError",
    "RemoteJobError",
    "WorkflowError", "UnknownNodeTypesError",
    "ComfyServerUnresponsive", "ComfyServerDied", "PromptValidationError", "ExecutionError",
    "ExecutionInterrupted", "RunTimeout", "MissingInputsError", "UnknownInputError",
    "UnusedInputError", "PortTypeError", "MissingOutputError", "PromptLost",
    "UnknownPromptError", "PromptNotEndedError",
]


class DiscomfortError(Exception):
    """Base class of everything Discomfort raises on purpose."""


class DiscomfortWarning(UserWarning):
    """Something that runs but is probably not what was meant (each names the fix)."""


# --- arguments, the command line ----------------------------------------------------------

class InvalidArgumentError(DiscomfortError, ValueError):
    """An argument whose value a function cannot use (out of range, an unknown format, a shape
    that is no image)."""


class WrongTypeError(DiscomfortError, TypeError):
    """An argument of a type the function does not take (the message names the ones it does)."""


class ImageFileError(DiscomfortError, ValueError):
    """A file that is not an image that can be read (missing files stay FileNotFoundError)."""


class UsageError(DiscomfortError):
    """``python -m discomfort``: a command line that does not fit its workflows (an unknown
    port, a value its port's type cannot take): printed like argparse's errors, exit status 2."""


class CommandError(DiscomfortError):
    """``python -m discomfort``: something the command cannot do (a picture that cannot be
    read, a warm server already running): exit status 1."""


# --- ids, configuration -------------------------------------------------------------------

class InvalidIdError(DiscomfortError, ValueError):
    """A run_id, unique_id or directory name that is not allowed (never touches a file)."""


class ConfigError(DiscomfortError, ValueError):
    """A configuration file or value that cannot be used."""


class RayNotInstalledError(DiscomfortError, ImportError):
    """``discomfort.ray`` was used without Ray installed (``pip install 'discomfort[ray]'``)."""


# --- the store ----------------------------------------------------------------------------

class StoreError(DiscomfortError):
    """The store's files are not what they must be (wrong owner, mode, or corrupt)."""


class UnsafeStoreError(StoreError, PermissionError):
    """The private root or a file in it is not ours alone: refused rather than trusted."""


class StoreLockTimeout(StoreError, TimeoutError):
    """Another thread or process held a run's lock past the deadline."""


class ContextClosedError(StoreError):
    """An operation on a WorkflowContext after its shutdown()."""


class KeyNotFoundError(DiscomfortError, KeyError):
    """A unique_id that is not stored in the context."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else ""


class StoreMemoryError(DiscomfortError, MemoryError):
    """Neither RAM nor disk could hold a value."""


class RefExportError(DiscomfortError, TypeError):
    """export_data of a pass-by-reference value, which is a recipe, not data."""


class ValueChangedError(DiscomfortError):
    """A port found a different value than the one its prompt was keyed on."""


class UnstorableValueError(DiscomfortError, TypeError):
    """A value the store will not keep as it is (a quantized or meta tensor; a ref or a source
    that is not plain JSON): the message says what to store instead."""


class CorruptValueError(StoreError, ValueError):
    """Stored bytes that are not a Discomfort value (damaged, or written by something else)."""


class RunNotFoundError(StoreError, FileNotFoundError):
    """A run to re-attach to that does not exist (never created, shut down, or half made)."""


class AlreadyExistsError(DiscomfortError, FileExistsError):
    """A run id that is taken, or an export destination that exists (without overwrite)."""


# --- ports --------------------------------------------------------------------------------

class BindingError(DiscomfortError, ValueError):
    """A port's binding (the hidden input the orchestrator sets) is malformed."""


class PortError(DiscomfortError):
    """A port node cannot produce or store its value (unbound with no default, unknown key)."""


# --- the server ---------------------------------------------------------------------------

class ComfyServerError(DiscomfortError):
    """The ComfyUI server failed; ``log_tail`` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = ""):
        self.log_tail = log_tail
        if log_tail:
            message = f"{message}\n--- last lines of the ComfyUI log ---\n{log_tail}"
        super().__init__(message)


class ComfyStartError(ComfyServerError):
    """The server did not become ready (died, timed out, or the handshake disagreed)."""


class ComfyInstallError(DiscomfortError, FileNotFoundError):
    """No usable ComfyUI installation was found."""


class ServeStateError(DiscomfortError, ValueError):
    """The warm server's state file (``serve.json``) cannot be trusted or read (says why)."""


class NoSuchFileError(DiscomfortError, FileNotFoundError):
    """A file that is not there: nothing to upload at a path, or no such file on the server to
    fetch (the message names it)."""


class UploadExistsError(DiscomfortError, FileExistsError):
    """An upload into a model folder that already holds a file of that name: pass
    ``overwrite=True`` to replace it."""


class TokenError(ComfyServerError, PermissionError):
    """The server refused us (HTTP 401): no token sent, the wrong one, or a proxy in front of it
    wants credentials (the message names which, and what to pass)."""


class RemoteStoreError(ComfyServerError):
    """A server that keeps our values for us (another machine) refused a request on its value
    routes: an id it does not allow, a value over its size limit or the run's byte budget, its
    value routes turned off (the message says why). ``status`` is the HTTP status."""

    def __init__(self, message: str, log_tail: str = "", status: int | None = None):
        super().__init__(message, log_tail)
        self.status = status


class RemoteValueError(DiscomfortError, TypeError):
    """A value that cannot travel to or from a server on another machine: only tensors, numpy
    arrays and plain JSON (str, int, float, bool, None, lists and dicts of those) do, never a
    pickle. The message names the key."""


class RunExpiredError(RemoteStoreError):
    """The server no longer has our run: its lease was not renewed in time (the client was gone
    or cut off) or the server restarted."""


class RemoteJobError(DiscomfortError, RuntimeError):
    """A job on a Ray actor raised an exception that is neither Discomfort's nor a builtin:
    its type name and message, as text (exceptions never travel pickled)."""


# --- workflows and conversion -------------------------------------------------------------

class WorkflowError(DiscomfortError, ValueError):
    """A workflow that cannot be read or used (malformed JSON, wrong shape, dangling link)."""


class UnknownNodeTypesError(WorkflowError):
    """Node types the server does not know; ``missing`` lists every one of them."""

    def __init__(self, missing: list[str]):
        self.missing = sorted(set(missing))
        super().__init__(
            f"the server has no node type(s) {', '.join(self.missing)}: install the custom "
            "nodes that provide them, or remove those nodes from the workflow")


# --- running prompts ----------------------------------------------------------------------

class ComfyServerUnresponsive(ComfyServerError, TimeoutError):
    """The server's process lives but it answers nothing (stopped, or its event loop wedged):
    no websocket message and no HTTP answer for ``unresponsive_timeout`` seconds."""


class ComfyServerDied(ComfyServerError):
    """The managed server died while we waited on it (the next call starts a fresh one)."""


class PromptValidationError(DiscomfortError, ValueError):
    """ComfyUI refused the prompt; ``node_errors`` is its per-node report."""

    def __init__(self, error: dict, node_errors: dict):
        self.error, self.node_errors = error or {}, node_errors or {}
        lines = [self.error.get("message") or "the prompt failed validation"]
        for node_id, report in self.node_errors.items():
            for item in report.get("errors", []):
                lines.append(f"  node {node_id} ({report.get('class_type')}): "
                             f"{item.get('message')}: {item.get('details')}")
                hint = _empty_list_hint(item)
                if hint:
                    lines.append("    " + hint)
        super().__init__("\n".join(lines))


# The model folder each stock loader's file input lists (what `model_paths` keys are named).
MODEL_INPUT_FOLDERS = {
    "ckpt_name": "checkpoints", "lora_name": "loras", "vae_name": "vae", "unet_name":
    "diffusion_models", "clip_name": "text_encoders", "clip_name1": "text_encoders",
    "clip_name2": "text_encoders", "control_net_name": "controlnet", "model_name":
    "upscale_models", "style_model_name": "style_models", "gligen_name": "gligen",
}


def _empty_list_hint(item: dict) -> str:
    """For "'x' not in []": the server has no such files at all; say how to give it some."""
    if item.get("type") != "value_not_in_list":
        return ""
    extra = item.get("extra_info") or {}
    config = extra.get("input_config") or [None]
    options = config[0]
    if options == "COMBO" and len(config) > 1 and isinstance(config[1], dict):  # a V3 combo
        options = config[1].get("options")
    if not isinstance(options, list) or options:
        return ""
    folder = MODEL_INPUT_FOLDERS.get(str(extra.get("input_name")), "<folder>")
    return (f"the server has no files for {extra.get('input_name')!r} at all: point it at your "
            f"models with Discomfort.create(model_paths={{{folder!r}: '/path/to/{folder}'}}) "
            "(or the same in a --config file), or copy one in with "
            f"discomfort.Worker.upload_data(path, {folder!r})")


class ExecutionError(DiscomfortError, RuntimeError):
    """A node raised while ComfyUI ran the prompt."""

    def __init__(self, data: dict):
        self.node_id = data.get("node_id")
        self.node_type = data.get("node_type")
        self.exception_type = data.get("exception_type")
        self.exception_message = (data.get("exception_message") or "").strip()
        self.traceback = "".join(data.get("traceback") or [])
        super().__init__(f"node {self.node_id} ({self.node_type}) raised {self.exception_type}: "
                         f"{self.exception_message}")


class ExecutionInterrupted(DiscomfortError):
    """The prompt was interrupted (or removed from the queue) before it finished."""


class RunTimeout(DiscomfortError, TimeoutError):
    """A run took longer than the timeout the caller gave."""


class MissingInputsError(PortError, KeyError):
    """Input ports whose keys are not stored and that have no default connected."""

    def __init__(self, missing: list[str]):
        self.missing = sorted(set(missing))
        super().__init__(
            f"no value for input port(s) {', '.join(map(repr, self.missing))}: pass them in "
            "`inputs`, save them in the context, or connect a default in the editor")

    def __str__(self) -> str:
        return self.args[0]


class UnknownInputError(PortError, KeyError):
    """A key in ``inputs`` that no input port of the run reads."""

    def __init__(self, key: str, ports: list[str], workflows: str):
        import difflib

        self.key, self.ports = key, ports
        close = difflib.get_close_matches(key, ports, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(map(repr, ports)) or "none"
        super().__init__(f"no input port {key!r} in {workflows}{hint} (the input ports are "
                         f"{listing})")

    def __str__(self) -> str:
        return self.args[0]


class UnusedInputError(PortError, ValueError):
    """A key in ``inputs`` whose input ports are connected to nothing: it would change nothing."""


class PortTypeError(PortError, TypeError):
    """A stored value does not fit the type of the port that will read it."""


class MissingOutputError(PortError):
    """An output port did not write its value in this run."""


class PromptLost(ComfyServerError):
    """A queued prompt the server no longer knows: neither queued, running nor in its history
    (the server was restarted, its queue cleared, or someone else deleted the prompt)."""


class UnknownPromptError(DiscomfortError, KeyError):
    """A prompt id the connector does not follow: it did not queue it, or its result was
    already read."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else ""


class PromptNotEndedError(DiscomfortError, RuntimeError):
    """The result of a prompt that has not ended yet was asked for."""
