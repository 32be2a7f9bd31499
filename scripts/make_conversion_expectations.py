"""Regenerate the expected UI -> API conversions with the real ComfyUI frontend.

Every ``*.json`` under ``tests/fixtures/conversion/{cases,templates}`` that is not itself an
expectation is loaded into the editor page of a real ComfyUI server (headless Chromium), and
``(await app.graphToPrompt()).output`` is written beside it as ``<name>.expected.json``.
``tests/test_convert.py`` compares ``discomfort.graph.ui_to_api`` to those files, with no
server and no browser.

Needs (see the project README): the project's venv (``make setup``: ComfyUI and its
``comfyui-frontend-package``), Debian's ``chromium`` at
``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python package
(never ``playwright install``: the system browser is used).

    .venv/bin/python scripts/make_conversion_expectations.py [--fetch-templates] [NAME ...]

``--fetch-templates`` first downloads the ``comfyui-workflow-templates`` packages pinned by
ComfyUI 0.3.75 with pip and extracts their UI-format workflows into the templates folder.
NAME filters the workflows by file-name substring.

When the frontend fails on a workflow (a node type the server does not know, a dangling
link), the expectation is ``{"__error__": <kind>, ...}`` instead of a prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile

from discomfort.server import ComfyServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "conversion"
CASES = FIXTURES / "cases"
TEMPLATES = FIXTURES / "templates"
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
EXPECTED_SUFFIX = ".expected.json"
TITLES_MODULE = ROOT / "discomfort" / "graph" / "editor_titles.py"

# Runs in the page: load one workflow, convert it, and tell what went wrong if it did.
CONVERT_JS = """
async (workflow) => {
  const app = window.app;
  const errors = [];
  const origError = console.error;
  try {
    await app.loadGraphData(workflow, true, false, null,
      {showMissingNodesDialog: false, showMissingModelsDialog: false});
  } catch (e) {
    return {error: 'load', message: String(e)};
  }
  const LG = window.LiteGraph;
  const missing = [];
  // The same renames loadGraphData() applies before it looks for missing types.
  const renamed = {T2IAdapterLoader: 'ControlNetLoader',
    'ConditioningAverage ': 'ConditioningAverage', SDV_img2vid_Conditioning: 'SVD_img2vid_Conditioning', Load3DAnimation: 'Load3D',
    Preview3DAnimation: 'Preview3D'};
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


def workflow_files(filters: list[str]) -> list[pathlib.Path]:
    files = [p for d in (CASES, TEMPLATES) if d.is_dir() for p in sorted(d.glob("*.json"))
             if not p.name.endswith(EXPECTED_SUFFIX)]
    return [p for p in files
            if not filters or any(f in str(p.relative_to(FIXTURES)) for f in filters)]


def expectation(result: dict) -> dict:
    """What the test compares to: the prompt, or the kind of failure."""
    if result.get("missing"):
        return {"__error__": "unknown_node_types", "missing": sorted(set(result["missing"]))}
    if "error" in result:
        return {"__error__": result["error"], "message": result.get("message", "")}
    return result["output"]


async def generate(server: ComfyServer, files: list[pathlib.Path]) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(server.editor_url, wait_until="load")  # the token, as a cookie
            await page.wait_for_function(
                "window.app && window.app.graph && window.LiteGraph && "
                "'KSampler' in window.LiteGraph.registered_node_types", timeout=60000)
            await write_titles(page, server)
            for path in files:
                workflow = json.loads(path.read_text())
                result = await page.evaluate(CONVERT_JS, workflow)
                out = path.with_name(path.name[:-len(".json")] + EXPECTED_SUFFIX)
                text = json.dumps(expectation(result), indent=1, ensure_ascii=False)
                out.write_text(text + "\n")
                tag = result.get("error") or ("missing" if result.get("missing") else "ok")
                print(f"{tag:8} {path.relative_to(FIXTURES)}")
        finally:
            await browser.close()


async def write_titles(page, server: ComfyServer) -> None:
    """The editor titles new nodes with its own English display names, which sometimes differ
    from the server's: record those differences for the converter's ``_meta.title``."""
    titles = await page.evaluate(
        "Object.fromEntries(Object.entries(window.LiteGraph.registered_node_types)"
        ".map(([k, v]) => [k, v.title]))")
    object_info = server.request("/object_info", timeout=30)
    differ = {name: titles[name] for name in sorted(object_info) if name in titles
              and titles[name] != (object_info[name].get("display_name") or name)}
    lines = [f"    {name!r}: {title!r}," for name, title in differ.items()]
    TITLES_MODULE.write_text(
        '"""Default node titles of the ComfyUI editor (frontend 1.32.9) that differ from the\n'
        "server's display names (ComfyUI 0.3.75). Generated by\n"
        'scripts/make_conversion_expectations.py: do not edit."""\n\n'
        "EDITOR_TITLES = {\n" + "\n".join(lines) + "\n}\n")
    print(f"wrote {len(differ)} editor titles to {TITLES_MODULE.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch-templates", action="store_true")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    if args.fetch_templates:
        fetch_templates()
    files = workflow_files(args.names)
    if not files:
        raise SystemExit("no workflow to convert")
    with ComfyServer() as server:  # the library's managed server: headless, its own group
        asyncio.run(generate(server, files))


if __name__ == "__main__":
    main()
