"""``python -m discomfort``: run, inspect and convert workflows from a shell.

    python -m discomfort run WORKFLOW... [--set key=value]... [--iterations N] [--out DIR]
    python -m discomfort ports WORKFLOW
    python -m discomfort convert WORKFLOW

``--set`` values are JSON when they parse as JSON, else text; ``key=@picture.png`` loads an
image as a tensor. ``ports`` and ``convert`` of an editor-format workflow need the server's
node definitions: pass ``--object-info FILE``, or one is fetched from a headless server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import DiscomfortError


def _parse_setting(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes key=value, got {text!r}")
    if raw.startswith("@"):
        from .images import open_image_as_tensor

        return key, open_image_as_tensor(raw[1:])
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m discomfort", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="server settings (JSON); default: a managed headless server")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run workflows in order, N times; save their outputs")
    run.add_argument("workflows", nargs="+")
    run.add_argument("--set", dest="inputs", action="append", type=_parse_setting, default=[],
                     metavar="KEY=VALUE", help="a value for an input port (repeatable)")
    run.add_argument("--iterations", type=int, default=1)
    run.add_argument("--out", type=Path, help="write each output here (images as PNG)")
    run.add_argument("--seed", type=int, help="seed for randomized widgets and dynamic prompts")
    run.add_argument("--fixed-seeds", action="store_true", help="keep every saved widget value")
    run.add_argument("--no-progress", action="store_true")
    for name, text in (("ports", "list a workflow's input and output ports"),
                       ("convert", "print a workflow's API prompt")):
        command = sub.add_parser(name, help=text)
        command.add_argument("workflow")
        command.add_argument("--object-info", type=Path, help="a saved GET /object_info")
    return parser


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


async def _object_info(args) -> dict:
    if args.object_info:
        return json.loads(args.object_info.read_text())
    from .connector import ComfyConnector

    print("fetching node definitions from a headless ComfyUI...", file=sys.stderr)
    async with await ComfyConnector.create(args.config) as connector:
        return await connector.object_info()


async def _main(args) -> int:
    from .graph import is_api_format, load_workflow, ui_to_api
    from .graph.ports import find_ports

    if args.command == "run":
        from .orchestrator import Discomfort

        async with await Discomfort.create(args.config) as discomfort:
            result = await discomfort.run(args.workflows, inputs=dict(args.inputs),
                                          iterations=args.iterations, fixed_seeds=args.fixed_seeds,
                                          seed=args.seed, progress=not args.no_progress)
        for key, value in result.items():
            written = write_output(args.out, key, value) if args.out else []
            print(f"{key}: {describe(value)}" + "".join(f" -> {p}" for p in written))
        return 0
    workflow = load_workflow(args.workflow)
    if is_api_format(workflow):
        object_info = await _object_info(args) if args.object_info else None
        prompt = workflow
    else:
        object_info = await _object_info(args)
        prompt = ui_to_api(workflow, object_info)
    if args.command == "convert":
        print(json.dumps(prompt, indent=2))
        return 0
    inputs, outputs = find_ports(prompt, object_info)
    for port in inputs + outputs:
        extra = " (list)" if port.is_list else " (has default)" if port.has_default else ""
        print(f"{port.role:6} {port.unique_id!r:24} {port.type:12} node {port.node_id}{extra}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except (DiscomfortError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `... | head` stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
