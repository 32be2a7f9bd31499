"""Regenerate the expected UI -> API conversions with the real ComfyUI frontend.

Every ``*.json`` under ``tests/fixtures/conversion/{cases,templates,templates_json}`` that is
not itself an expectation is loaded into the editor page of a real ComfyUI server (headless
Chromium), and ``(await app.graphToPrompt()).output`` is written beside it, one file per
editor: ``<name>.expected.json`` for frontend 1.32.9 (the one ComfyUI 0.3.75 pins, in the
venv) and ``<name>.expected-1.58.json`` for frontend 1.58.1 (today's editor, installed by this
script with ``pip --target --no-deps`` into ``~/.cache/discomfort/frontend-1.58.1`` and served
with ``--front-end-root``). ``tests/test_convert.py`` compares
``discomfort.graph.ui_to_api(..., editor=...)`` to those files, with no server and no browser.

Needs (see the project README): the project's venv (``make setup``: ComfyUI and its
``comfyui-frontend-package``), Debian's ``chromium`` at
``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python package
(never ``playwright install``: the system browser is used).

    .venv/bin/python scripts/make_conversion_expectations.py [--editor 1.32|1.58|all]
        [--fetch-templates] [--fetch-today-templates] [NAME ...]

``--fetch-templates`` first downloads the ``comfyui-workflow-templates`` packages pinned by
ComfyUI 0.3.75 with pip and extracts their UI-format workflows into ``templates/``.
``--fetch-today-templates`` downloads today's ``comfyui-workflow-templates-json`` (pinned below)
and keeps, in ``templates_json/``, only the workflows whose node types the server has (checked
against its ``/object_info``; 1.58 no longer reports missing types itself); the others are
listed with their missing types in ``templates_json.skipped.json``. NAME filters the workflows
by file-name substring. ``--editor`` defaults to ``all``.

When the frontend fails on a workflow (a node type the server does not know, a dangling
link), the expectation is ``{"__error__": <kind>, ...}`` instead of a prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

from discomfort.graph.convert import renames
from discomfort.server import ComfyServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "conversion"
CASES = FIXTURES / "cases"
TEMPLATES = FIXTURES / "templates"
TODAY_TEMPLATES = FIXTURES / "templates_json"
TODAY_SKIPPED = FIXTURES / "templates_json.skipped.json"
TODAY_TEMPLATES_PACKAGE = "comfyui-workflow-templates-json==0.1.123"
# The editors expectations are made with: version, expectation suffix, pip pin (None: the
# frontend package the venv's ComfyUI uses).
EDITORS = {
    "1.32": ("1.32.9", ".expected.json", None),
    "1.58": ("1.58.1", ".expected-1.58.json", "comfyui-frontend-package==1.58.1"),
}
CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "discomfort"
# Node types that exist only in the editor (never in /object_info).
EDITOR_ONLY_TYPES = {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# The template packages that ComfyUI 0.3.75's requirements.txt pins (comfyui-workflow-templates
# 0.7.25 is a meta package over these).
TEMPLATE_PACKAGES = [
    "comfyui-workflow-templates-core==0.3.12",
    "comfyui-workflow-templates-media-api==0.3.14",
    "comfyui-workflow-templates-media-video==0.3.12",
    "comfyui-workflow-templates-media-image==0.3.17",
    "comfyui-workflow-templates-media-other==0.3.15",
]
EXPECTED_MARK = ".expected"  # every expectation file has this in its name
TITLES_MODULE = ROOT / "discomfort" / "graph" / "editor_titles.py"
TITLES_VARIABLES = {"1.32": "EDITOR_TITLES", "1.58": "EDITOR_TITLES_1_58"}

# Runs in the page: load one workflow, convert it, and tell what went wrong if it did.
CONVERT_JS = """
async ([workflow, renamed]) => {
  const app = window.app;
  try {
    await app.loadGraphData(workflow, true, false, null,
      {showMissingNodesDialog: false, showMissingModelsDialog: false});
  } catch (e) {
    return {error: 'load', message: String(e)};
  }
  const LG = window.LiteGraph;
  const missing = [];
  // `renamed`: the old types this editor's loadGraphData() renames before it looks for
  // missing types (1.32 has a few; 1.58 none).
  const visit = (nodes) => { for (const n of nodes || []) {
    const type = renamed[n.type] || n.type;
    if (!(type in LG.registered_node_types)) missing.push(type); } };
  visit(workflow.nodes);
  for (const sg of (workflow.definitions && workflow.definitions.subgraphs) || []) visit(sg.nodes);
  try {
    const {output} = await app.graphToPrompt();
    return {output, missing};
  } catch (e) {
    return {error: 'convert', message: String(e && e.message || e), name: e && e.name, missing};
  }
}
"""


def fetch_templates() -> None:
    """pip-download the pinned template packages and extract their UI-format workflows."""
    TEMPLATES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                        *TEMPLATE_PACKAGES], check=True)
        count = 0
        for wheel in sorted(pathlib.Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                for info in zf.infolist():
                    if "/templates/" not in info.filename or not info.filename.endswith(".json"):
                        continue
                    data = zf.read(info)
                    doc = json.loads(data)
                    if isinstance(doc, dict) and "nodes" in doc and "links" in doc:
                        (TEMPLATES / pathlib.PurePosixPath(info.filename).name).write_bytes(data)
                        count += 1
    print(f"extracted {count} UI-format template workflows into {TEMPLATES}")


def fetch_today_templates(object_info: dict) -> None:
    """Today's template workflows, kept only where the server (0.3.75) has every node type."""
    TODAY_TEMPLATES.mkdir(parents=True, exist_ok=True)
    kept, skipped = 0, {}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                        TODAY_TEMPLATES_PACKAGE], check=True)
        for wheel in sorted(pathlib.Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                for info in sorted(zf.infolist(), key=lambda i: i.filename):
                    if "/templates/" not in info.filename or not info.filename.endswith(".json"):
                        continue
                    data = zf.read(info)
                    doc = json.loads(data)
                    if not (isinstance(doc, dict) and "nodes" in doc and "links" in doc):
                        continue
                    name = pathlib.PurePosixPath(info.filename).name
                    missing = missing_types(doc, object_info)
                    if missing:
                        skipped[name] = missing
                    else:
                        (TODAY_TEMPLATES / name).write_bytes(data)
                        kept += 1
    TODAY_SKIPPED.write_text(json.dumps({"package": TODAY_TEMPLATES_PACKAGE,
                                         "skipped": skipped}, indent=1) + "\n")
    print(f"{TODAY_TEMPLATES_PACKAGE}: kept {kept} workflows in {TODAY_TEMPLATES}, skipped "
          f"{len(skipped)} with node types the server lacks ({TODAY_SKIPPED.name})")


def missing_types(workflow: dict, object_info: dict) -> list[str]:
    """Node types (root and subgraph definitions) neither the server nor the editor has."""
    subgraphs = (workflow.get("definitions") or {}).get("subgraphs") or []
    known = set(object_info) | EDITOR_ONLY_TYPES | {sg.get("id") for sg in subgraphs}
    groups = (workflow.get("extra") or {}).get("groupNodes") or {}
    known |= {f"workflow{sep}{name}" for name in groups for sep in (">", "/")}
    nodes = list(workflow.get("nodes") or []) + [n for sg in subgraphs for n in sg.get("nodes") or []]
    nodes += [n for g in groups.values() for n in g.get("nodes") or []]
    return sorted({str(n.get("type")) for n in nodes if n.get("type") not in known})


def workflow_files(filters: list[str]) -> list[pathlib.Path]:
    files = [p for d in (CASES, TEMPLATES, TODAY_TEMPLATES) if d.is_dir()
             for p in sorted(d.glob("*.json")) if EXPECTED_MARK not in p.name]
    return [p for p in files
            if not filters or any(f in str(p.relative_to(FIXTURES)) for f in filters)]


def expectation(result: dict) -> dict:
    """What the test compares to: the prompt, or the kind of failure."""
    if result.get("missing"):
        return {"__error__": "unknown_node_types", "missing": sorted(set(result["missing"]))}
    if "error" in result:
        return {"__error__": result["error"], "message": result.get("message", "")}
    return result["output"]


def frontend_root(editor: str) -> pathlib.Path | None:
    """The static folder to serve for ``editor`` (None: the venv's own package), installed
    into the cache on first use."""
    version, _, pin = EDITORS[editor]
    if pin is None:
        return None
    target = CACHE / f"frontend-{version}"
    static = target / "comfyui_frontend_package" / "static"
    if not (static / "index.html").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(target), pin], check=True)
    return static


async def generate(server: ComfyServer, files: list[pathlib.Path], editor: str) -> None:
    from playwright.async_api import async_playwright

    version, suffix, _ = EDITORS[editor]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(server.editor_url, wait_until="load")  # the token, as a cookie
            await page.wait_for_function(
                "window.app && window.app.graph && window.LiteGraph && "
                "'KSampler' in window.LiteGraph.registered_node_types", timeout=60000)
            served = await page.evaluate("window.__COMFYUI_FRONTEND_VERSION__ || null")
            if served != version:
                raise SystemExit(f"the page runs frontend {served}, not {version}: check the "
                                 "--front-end-root the server was started with")
            await write_titles(page, server, editor)
            for path in files:
                workflow = json.loads(path.read_text())
                result = await page.evaluate(CONVERT_JS, [workflow, renames(editor)])
                out = path.with_name(path.name[:-len(".json")] + suffix)
                text = json.dumps(expectation(result), indent=1, ensure_ascii=False)
                out.write_text(text + "\n")
                tag = result.get("error") or ("missing" if result.get("missing") else "ok")
                print(f"{editor} {tag:8} {path.relative_to(FIXTURES)}", flush=True)
        finally:
            await browser.close()


async def write_titles(page, server: ComfyServer, editor: str) -> None:
    """The editor titles new nodes with its own English display names, which sometimes differ
    from the server's (1.58 ships newer names than 0.3.75 reports): record those differences
    for the converter's ``_meta.title``, one dict per editor, keeping the other editor's."""
    titles = await page.evaluate(
        "Object.fromEntries(Object.entries(window.LiteGraph.registered_node_types)"
        ".map(([k, v]) => [k, v.title]))")
    object_info = server.request("/object_info", timeout=30)
    differ = {name: titles[name] for name in sorted(object_info) if name in titles
              and titles[name] != (object_info[name].get("display_name") or name)}
    namespace: dict = {}
    if TITLES_MODULE.exists():
        exec(compile(TITLES_MODULE.read_text(), str(TITLES_MODULE), "exec"), namespace)
    by_editor = {e: dict(namespace.get(TITLES_VARIABLES[e]) or {}) for e in EDITORS}
    by_editor[editor] = differ
    text = ('"""Default node titles of each ComfyUI editor (frontend 1.32.9, 1.58.1) that differ\n'
            "from the server's display names (ComfyUI 0.3.75). Generated by\n"
            'scripts/make_conversion_expectations.py: do not edit."""\n')
    for e in EDITORS:
        lines = [f"    {name!r}: {title!r}," for name, title in sorted(by_editor[e].items())]
        text += f"\n{TITLES_VARIABLES[e]} = {{\n" + "\n".join(lines) + "\n}\n"
    TITLES_MODULE.write_text(text)
    print(f"wrote {len(differ)} {editor} editor titles to {TITLES_MODULE.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--editor", choices=[*EDITORS, "all"], default="all")
    parser.add_argument("--fetch-templates", action="store_true")
    parser.add_argument("--fetch-today-templates", action="store_true")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    if args.fetch_templates:
        fetch_templates()
    editors = list(EDITORS) if args.editor == "all" else [args.editor]
    for editor in editors:
        root = frontend_root(editor)
        extra = ["--front-end-root", str(root)] if root else []
        # The library's managed server: headless, its own process group.
        with ComfyServer(extra_args=extra) as server:
            if args.fetch_today_templates:
                fetch_today_templates(server.request("/object_info", timeout=60))
                args.fetch_today_templates = False
            files = workflow_files(args.names)
            if not files:
                raise SystemExit("no workflow to convert")
            asyncio.run(generate(server, files, editor))


if __name__ == "__main__":
    main()
