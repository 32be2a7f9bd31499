"""``python -m discomfort``: run, inspect and convert workflows from a shell.

    python -m discomfort run WORKFLOW... [--set key=value]... [--iterations N] [--out DIR]
    python -m discomfort ports WORKFLOW [--object-info FILE | --fetch-types]
    python -m discomfort convert WORKFLOW [--object-info FILE]
    python -m discomfort serve

``--set`` values take the type of their input port, read from the workflows without a server:
STRING and COMBO ports keep the text, INT/FLOAT/BOOLEAN ports parse it, other ports take JSON
when it parses, else text; ``key=@picture.png`` loads an image as a tensor. ``ports`` of an
editor-format workflow needs no server (its links carry the types). ``serve`` keeps a headless
server warm; ``run``, ``convert`` and ``ports --fetch-types`` attach to it while it answers,
and otherwise start one of their own (``--no-serve``: always).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# UsageError and CommandError are the command line's own; they live in errors.py with the rest
from .errors import CommandError, ConfigError, DiscomfortError, UsageError

ANY = "*"
TEXT_TYPES = ("STRING", "COMBO")
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
SERVE_HINT = "`python -m discomfort serve` keeps one warm"


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- --set values -----------------------------------------------------------------------------

def _split_setting(text: str) -> tuple[str, str]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes key=value, got {text!r}")
    return key, raw


def _whole_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number >= 1, not {text!r}")
    return value


def _load_image(key: str, path: str):
    from .images import open_image_as_tensor

    try:
        return open_image_as_tensor(path)
    except FileNotFoundError:
        raise CommandError(f"--set {key}=@{path}: there is no file {path}") from None
    except (OSError, ValueError) as exc:
        raise CommandError(f"--set {key}=@{path}: {exc}") from None


def convert_setting(key: str, kind: str, raw: str) -> Any:
    """The value of ``--set key=raw`` for an input port of type ``kind`` (``"*"``: unknown)."""
    def refuse(why: str) -> UsageError:
        return UsageError(f"--set {key}={raw}: input port {key!r} takes {kind}, and {raw!r} {why}")

    if kind in TEXT_TYPES:
        return raw
    if kind == "INT":
        try:
            return int(raw.strip())
        except ValueError:
            raise refuse("is not a whole number") from None
    if kind == "FLOAT":
        try:
            value = float(raw)
        except ValueError:
            raise refuse("is not a number") from None
        if not math.isfinite(value):
            raise refuse("is not a finite number")
        return value
    if kind == "BOOLEAN":
        word = raw.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise refuse("is not one of true/false, 1/0, yes/no")
    if raw.startswith("@"):
        return _load_image(key, raw[1:])
    if kind == "IMAGE":
        raise refuse(f"is no image: give a picture file, as {key}=@picture.png")
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def merge_kinds(kinds) -> str:
    """One type from a port's types in several workflows: the one concrete type, else "*"."""
    found = {k for k in kinds if isinstance(k, str) and k not in ("", ANY)}
    return found.pop() if len(found) == 1 else ANY


class InputPorts:
    """The input ports of the workflows of a ``run``, typed without a server: an editor
    workflow's links carry the types; an API prompt's ports are ``"*"`` until the server's
    node definitions type them (:meth:`type_with`)."""

    def __init__(self, workflows: list[str]):
        from .graph import discover_port_nodes, is_api_format, load_workflow

        self.names = workflows
        self.kinds: dict[str, list[str]] = {}
        self.api: list[dict] = []  # the API-format workflows, typed later
        for path in workflows:
            workflow = load_workflow(path)
            if is_api_format(workflow):
                self.api.append(workflow)
            for uid, info in discover_port_nodes(workflow)["inputs"].items():
                self.kinds.setdefault(uid, []).append(info["type"])

    def kind(self, key: str) -> str:
        return merge_kinds(self.kinds[key])

    def needs_server(self, key: str) -> bool:
        """Only a server's node definitions can type this port (it is in an API prompt)."""
        return self.kind(key) == ANY and bool(self.api)

    def check_keys(self, keys) -> None:
        for key in keys:
            if key in self.kinds:
                continue
            names = sorted(self.kinds)
            where = ", ".join(self.names)
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            ports = f"the input ports are {', '.join(names)}" if names else \
                "they have no input ports"
            raise UsageError(f"no input port {key!r} in {where}{hint}; {ports}")

    def type_with(self, object_info: dict) -> None:
        from .graph.ports import find_ports

        for workflow in self.api:
            inputs, _ = find_ports(workflow, object_info)
            for port in inputs:
                self.kinds.setdefault(port.unique_id, []).append(port.type)


# --- servers: warm (serve) or our own ------------------------------------------------------------

def _warm_server(args) -> dict[str, Any] | None:
    """The settings that attach to the warm server (url, token), or None to start a server
    as ``--config`` says."""
    if getattr(args, "no_serve", False):
        return None
    from .connector import load_connector_config
    from .serve_state import find_warm_server

    settings = load_connector_config(args.config) if args.config else None
    if settings is not None and settings.url:
        return None  # the settings name their own server
    warm = find_warm_server()
    if warm.stale:
        note(f"ignoring a stale warm-server file: {warm.stale}")
    if warm.info is None:
        return None
    if settings is not None and settings.as_json() != warm.info.get("settings"):
        note(f"the warm server at {warm.url} runs with other server settings than {args.config}; "
             "starting a headless ComfyUI with these")
        return None
    return {"url": warm.url, **({"token": warm.token} if warm.token else {})}


async def open_server(args, create: Callable[..., Awaitable[Any]]) -> Any:
    """``create`` (``ComfyConnector.create`` or ``Discomfort.create``) attached to the warm
    server when one answers, else as ``--config`` says; where the time went, on stderr."""
    from .errors import ComfyServerError

    began = time.monotonic()
    warm = _warm_server(args)
    if warm is not None:
        url = warm["url"]
        try:
            made = await create(**warm)
        except ComfyServerError as exc:
            note(f"could not attach to the warm server {url}: {exc}")
        else:
            note(f"attached to warm server {url} ({time.monotonic() - began:.2f} s)")
            return made
    began = time.monotonic()
    if not (args.config and _names_url(args.config)):
        note("starting a headless ComfyUI...")
    made = await create(args.config)
    connector = getattr(made, "Worker", made)
    took = time.monotonic() - began
    if connector.managed:
        note(f"started a headless ComfyUI in {took:.1f} s; {SERVE_HINT}")
    else:
        note(f"attached to {connector.url} ({took:.2f} s)")
    return made


def _names_url(config: str) -> bool:
    from .connector import load_connector_config

    return bool(load_connector_config(config).url)


async def _fetch_object_info(args) -> dict:
    from .connector import ComfyConnector

    async with await open_server(args, ComfyConnector.create) as connector:
        return await connector.object_info()


def _read_object_info(path: Path) -> dict:
    from .jsonfile import read_json_object

    return read_json_object(path, "node definitions", ConfigError)


# --- the parser ----------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    config_help = "server settings (JSON); default: a managed headless server"
    parser = argparse.ArgumentParser(prog="python -m discomfort", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help=config_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str, warm: bool = True) -> argparse.ArgumentParser:
        made = sub.add_parser(name, help=text, description=text)
        # --config before the command or after it (SUPPRESS: absent here keeps the other one)
        made.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
        if warm:
            made.add_argument("--no-serve", action="store_true",
                              help="start a fresh server even when `serve` keeps one warm")
        made.set_defaults(subparser=made)
        return made

    run = command("run", "run workflows in order, N times; save their outputs")
    run.add_argument("workflows", nargs="+")
    run.add_argument("--set", dest="inputs", action="append", type=_split_setting, default=[],
                     metavar="KEY=VALUE", help="a value for an input port, typed as the port "
                     "(repeatable); KEY=@picture.png loads an image")
    run.add_argument("--iterations", type=_whole_number, default=1, metavar="N")
    run.add_argument("--out", type=Path, help="write each output here (images as PNG)")
    run.add_argument("--seed", type=int, help="seed for randomized widgets and dynamic prompts")
    run.add_argument("--fixed-seeds", action="store_true", help="keep every saved widget value")
    run.add_argument("--no-progress", action="store_true")
    ports = command("ports", "list a workflow's input and output ports")
    ports.add_argument("workflow")
    ports.add_argument("--object-info", type=Path, help="a saved GET /object_info to type the ports")
    ports.add_argument("--fetch-types", action="store_true",
                       help="type the ports with a server's node definitions (the warm server, "
                       "else a headless one started for this)")
    convert = command("convert", "print a workflow's API prompt")
    convert.add_argument("workflow")
    convert.add_argument("--object-info", type=Path, help="a saved GET /object_info")
    command("serve", "keep a headless ComfyUI warm for the other commands, until Ctrl-C or "
            "SIGTERM", warm=False)
    return parser


# --- run -----------------------------------------------------------------------------------------

def describe(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__} {list(value.shape)} {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def write_output(out: Path, key: str, value: Any) -> list[Path]:
    """An image batch as PNG, JSON-able values as JSON, anything else as a cloudpickle."""
    from .images import save_comfy_image_to_disk

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    out.mkdir(parents=True, exist_ok=True)
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) == 4 and shape[-1] in (3, 4):
        return save_comfy_image_to_disk(value, out / f"{safe}.png")
    try:
        text = json.dumps(value, indent=2)
    except (TypeError, ValueError):
        import cloudpickle

        path = out / f"{safe}.pkl"
        path.write_bytes(cloudpickle.dumps(value))
        return [path]
    path = out / f"{safe}.json"
    path.write_text(text + "\n")
    return [path]


async def _run(args) -> int:
    from .orchestrator import Discomfort

    settings = dict(args.inputs)  # a key given twice: the last value
    ports = InputPorts(args.workflows)
    ports.check_keys(settings)  # before any server starts
    values = {key: convert_setting(key, ports.kind(key), raw)
              for key, raw in settings.items() if not ports.needs_server(key)}
    async with await open_server(args, Discomfort.create) as discomfort:
        later = [key for key in settings if key not in values]
        if later:
            ports.type_with(await discomfort.Worker.object_info())
            values.update((key, convert_setting(key, ports.kind(key), settings[key])) for key in later)
        inputs = {key: values[key] for key in settings}  # in the order given
        began = time.monotonic()
        result = await discomfort.run(args.workflows, inputs=inputs, iterations=args.iterations,
                                      fixed_seeds=args.fixed_seeds, seed=args.seed,
                                      progress=not args.no_progress)
        count = len(args.workflows)
        note(f"ran {count} workflow{'s' * (count != 1)} x {args.iterations} in "
             f"{time.monotonic() - began:.2f} s")
    for key, value in result.items():
        written = write_output(args.out, key, value) if args.out else []
        print(f"{key}: {describe(value)}" + "".join(f" -> {p}" for p in written))
    return 0


# --- ports and convert ---------------------------------------------------------------------------

def _has_default(workflow: dict, node_id: Any) -> bool:
    from .graph import is_api_format
    from .graph.workflow import is_link

    if is_api_format(workflow):
        return is_link((workflow.get(str(node_id), {}).get("inputs") or {}).get("default"))
    for node in workflow.get("nodes") or []:
        if isinstance(node, dict) and str(node.get("id")) == str(node_id):
            return any(isinstance(slot, dict) and slot.get("name") == "default"
                       and slot.get("link") is not None for slot in node.get("inputs") or [])
    return False


def _port_rows(workflow: dict, object_info: dict | None) -> list[tuple[str, str, str, str, str]]:
    """(role, unique_id, type, node id, remark) of every port, inputs first."""
    from .graph import discover_port_nodes, is_api_format, ui_to_api
    from .graph.ports import find_ports
    from .graph.workflow import id_key

    if object_info is not None:
        prompt = workflow if is_api_format(workflow) else ui_to_api(workflow, object_info)
        inputs, outputs = find_ports(prompt, object_info)
        return [(p.role, p.unique_id, p.type, p.node_id,
                 " (list)" if p.is_list else " (has default)" if p.has_default else "")
                for p in inputs + outputs]
    found = discover_port_nodes(workflow)
    rows = []
    for role, table in (("input", found["inputs"]), ("output", found["outputs"])):
        ports = sorted(((node_id, uid, info["type"]) for uid, info in table.items()
                        for node_id in info["node_ids"]), key=lambda row: id_key(row[0]))
        for node_id, uid, kind in ports:
            remark = " (has default)" if role == "input" and _has_default(workflow, node_id) else ""
            rows.append((role, uid, kind, str(node_id), remark))
    return rows


async def _ports(args) -> int:
    from .graph import is_api_format, load_workflow

    workflow = load_workflow(args.workflow)
    object_info = None
    if args.object_info:
        object_info = _read_object_info(args.object_info)
    elif args.fetch_types:
        object_info = await _fetch_object_info(args)
    rows = _port_rows(workflow, object_info)
    for role, uid, kind, node_id, remark in rows:
        print(f"{role:6} {uid!r:24} {kind:12} node {node_id}{remark}")
    untyped = sorted({uid for _, uid, kind, _, _ in rows if kind == ANY})
    if untyped and object_info is None:
        how = ("pass --object-info FILE (a saved GET /object_info), or --fetch-types to ask a "
               "server (the warm one of `python -m discomfort serve`, else one started for this)")
        if is_api_format(workflow):
            note("warning: port types are unknown (*) without the server's node definitions: an "
                 f"API-format workflow does not record them; {how}")
        else:
            note(f"warning: the workflow's links give no type for {', '.join(map(repr, untyped))} "
                 f"(nothing typed is wired to them); {how}")
    return 0


async def _convert(args) -> int:
    from .graph import is_api_format, load_workflow, ui_to_api

    workflow = load_workflow(args.workflow)
    if is_api_format(workflow):
        prompt = workflow
    else:
        object_info = (_read_object_info(args.object_info) if args.object_info
                       else await _fetch_object_info(args))
        prompt = ui_to_api(workflow, object_info)
    print(json.dumps(prompt, indent=2))
    return 0


# --- serve ---------------------------------------------------------------------------------------

async def _serve(args) -> int:
    from .connector import ComfyConnector, load_connector_config
    from .serve_state import find_warm_server, new_state, remove_state, write_state
    from .store.procs import start_time

    settings = load_connector_config(args.config)
    if settings.url:
        raise UsageError(f"{args.config} names a url; serve starts a server of its own")
    warm = find_warm_server()
    if warm.info is not None:
        raise CommandError(f"a warm server already runs at {warm.url}; stop it first "
                           f"(kill {warm.info.get('serve_pid')})")
    if warm.stale:
        note(f"replacing a stale warm-server file: {warm.stale}")

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    started = False

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            stop.set()
            if not started:
                note(f"{sig.name}: stopping once the server has started (again to abort)")
        elif not started:  # a second signal while starting: the server stops itself without us
            note(f"{sig.name}: aborting")
            os._exit(1)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    note("starting a headless ComfyUI...")
    began = time.monotonic()
    connector = await ComfyConnector.create(args.config)
    started = True
    code = 0
    try:
        server = connector.server
        pid = server.pid if server is not None else None
        if server is None or pid is None:  # settings without a url always start their own
            raise CommandError("serve needs a server of its own, and none was started")
        config = os.path.abspath(args.config) if args.config else None
        path = write_state(new_state(connector.url, pid, start_time(pid), settings.as_json(),
                                     config, getattr(server, "token", None)))
        print(f"warm ComfyUI at {connector.url} (started in {time.monotonic() - began:.1f} s, "
              f"pid {pid}; state in {path})", flush=True)
        if getattr(connector, "editor_url", None):
            print(f"its editor: {connector.editor_url}", flush=True)
        print(f"`python -m discomfort run ...` now attaches to it; stop it with Ctrl-C or "
              f"`kill {os.getpid()}`", flush=True)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                if not server.alive():
                    note(f"error: the warm ComfyUI died; its log ends:\n{server.log_tail()}")
                    code = 1
                    break
        if stop.is_set():
            note("stopping the warm ComfyUI...")
    finally:
        remove_state(owner_pid=os.getpid())  # first: no new command attaches to a closing server
        await connector.kill_api()
    note("stopped")
    return code


# --- main ----------------------------------------------------------------------------------------

COMMANDS = {"run": _run, "ports": _ports, "convert": _convert, "serve": _serve}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(COMMANDS[args.command](args))
    except UsageError as exc:
        args.subparser.print_usage(sys.stderr)
        print(f"{args.subparser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except (DiscomfortError, FileNotFoundError) as exc:  # CommandError is a DiscomfortError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head` stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
