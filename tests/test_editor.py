"""The editor extension (js/discomfort.js) in a real browser: headless Chromium via playwright.

Each test loads a workflow with ports into the ComfyUI frontend served by the session's real
server and checks one behaviour: titles, type following, duplicate-output flags, the Python
snippet (through the command, read back from the clipboard), and the docs screenshot
(docs/images/editor.png, regenerated here).

Needs Debian's chromium (/usr/bin/chromium, or $DISCOMFORT_CHROMIUM) and the playwright pip
package; without them the tests fail, naming the set-up step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures" / "editor"
KALEIDOSCOPE = REPO / "workflows" / "kaleidoscope.json"
INVERT = TESTS / "fixtures" / "run" / "invert_ui.json"
SCREENSHOT = REPO / "docs" / "images" / "editor.png"
COMMAND = "Discomfort.CopyPythonSnippet"
SUFFIX = " ⚠ duplicate"
SETUP = ("set up the browser tests as root: `apt-get install -y chromium` and "
         "`.venv/bin/pip install playwright` (never `playwright install`; see `make browser-deps`)")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    path = os.environ.get("DISCOMFORT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(f"Chromium is missing (looked for {path}): {SETUP}", pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the playwright package is missing: {SETUP}", pytrace=False)
    executable = chromium_path()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_editor(server, browser):
    """A fresh browser context on the editor: no first-run templates dialog, no banner. The
    server is its owner's: the page opens with its token (which becomes a cookie)."""
    server.request("/api/settings/Comfy.TutorialCompleted", True)
    context = browser.new_context(viewport={"width": 1400, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    context.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.editor_url)
    page.wait_for_function("window.app && window.app.graph && window.discomfortEditor",
                           timeout=60_000)
    page.page_errors = errors
    return page


@pytest.fixture(scope="module")
def page(comfy, browser):
    """One editor page shared by the module's tests (each loads its own workflow)."""
    page = open_editor(comfy.server, browser)
    try:
        yield page
    finally:
        page.context.close()


def load(page, path: Path) -> None:
    page.evaluate("async ([wf, name]) => { await app.loadGraphData(wf, true, true, name); }",
                  [json.loads(path.read_text()), path.name])
    settle(page)


def settle(page) -> None:
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")


def nodes(page) -> dict:
    """id -> {type, title, inputs, outputs, color, bgcolor} of every node in the graph."""
    return {n["id"]: n for n in page.evaluate("""() => app.graph.nodes.map(n => ({
        id: n.id, type: n.type, title: n.title, color: n.color ?? null, bgcolor: n.bgcolor ?? null,
        inputs: Object.fromEntries((n.inputs ?? []).map(i => [i.name, i.type])),
        outputs: Object.fromEntries((n.outputs ?? []).map(o => [o.name, o.type])),
    }))""")}


def set_unique_id(page, node_id: int, value: str) -> None:
    """Change a port's unique_id as the widget does when edited (value, callback, change hook)."""
    page.evaluate("""([id, value]) => {
        const node = app.graph.getNodeById(id);
        const widget = node.widgets.find(w => w.name === 'unique_id');
        const old = widget.value;
        widget.value = value;
        widget.callback?.(value, app.canvas, node);
        node.onWidgetChanged?.('unique_id', value, old, widget);
    }""", [node_id, value])
    settle(page)


def add_node(page, type_: str, unique_id: str | None = None) -> int:
    node_id = page.evaluate("""([type, uid]) => {
        const node = LiteGraph.createNode(type);
        node.pos = [100, 400];
        app.graph.add(node);
        if (uid !== null) node.widgets.find(w => w.name === 'unique_id').value = uid;
        return node.id;
    }""", [type_, unique_id])
    settle(page)
    return node_id


def connect(page, origin: int, origin_slot: int, target: int, target_slot: int):
    """origin.connect(...) through the LiteGraph API; the link's type, or None if refused."""
    return page.evaluate("""([o, os, t, ts]) => {
        const link = app.graph.getNodeById(o).connect(os, app.graph.getNodeById(t), ts);
        return link ? link.type : null;
    }""", [origin, origin_slot, target, target_slot])


def link_types(page) -> dict:
    return dict(page.evaluate("() => [...app.graph.links.values()].map(l => [l.id, l.type])"))


# --- titles ---------------------------------------------------------------------------------


def test_titles_follow_unique_id(page):
    load(page, KALEIDOSCOPE)
    got = nodes(page)
    assert got[1]["title"] == "Input: canvas"
    assert got[4]["title"] == "Output: canvas"
    assert got[2]["title"] == "ImageRotate"  # other nodes are left alone

    set_unique_id(page, 1, "picture")
    assert nodes(page)[1]["title"] == "Input: picture"

    # A title set by hand is kept when the id changes...
    page.evaluate("() => { app.graph.getNodeById(4).title = 'My result'; }")
    set_unique_id(page, 4, "final")
    assert nodes(page)[4]["title"] == "My result"
    # ...and an emptied title is automatic again.
    page.evaluate("() => { app.graph.getNodeById(4).title = ''; }")
    set_unique_id(page, 4, "final2")
    assert nodes(page)[4]["title"] == "Output: final2"

    # A fresh node gets its title from its default id.
    new = add_node(page, "DiscomfortInput")
    assert nodes(page)[new]["title"] == "Input: input"

    # A hand-set title in a saved workflow survives loading.
    load(page, FIXTURES / "duplicates.json")
    assert nodes(page)[4]["title"].startswith("Second result")


# --- types ----------------------------------------------------------------------------------


def test_port_types_follow_connections(page):
    load(page, KALEIDOSCOPE)  # loaded links are typed at once
    got = nodes(page)
    assert got[1]["outputs"]["value"] == "IMAGE"
    assert got[1]["inputs"]["default"] == "IMAGE"
    assert got[4]["inputs"]["value"] == "IMAGE"
    assert set(link_types(page).values()) == {"IMAGE"}

    load(page, INVERT)  # 1 DiscomfortInput -> 2 ImageInvert -> 3 DiscomfortOutput
    assert nodes(page)[1]["outputs"]["value"] == "IMAGE"
    assert link_types(page)[1] == "IMAGE"  # saved as "*", typed on load

    # Disconnect: back to "*".
    page.evaluate("() => app.graph.getNodeById(2).disconnectInput(0)")
    page.evaluate("() => app.graph.getNodeById(3).disconnectInput(0)")
    settle(page)
    got = nodes(page)
    assert got[1]["outputs"]["value"] == "*"
    assert got[1]["inputs"]["default"] == "*"
    assert got[3]["inputs"]["value"] == "*"

    # Connect again: the port takes the other end's type, and so does the link.
    assert connect(page, 1, 0, 2, 0) == "IMAGE"
    assert connect(page, 2, 0, 3, 0) == "IMAGE"
    got = nodes(page)
    assert got[1]["outputs"]["value"] == "IMAGE"
    assert got[3]["inputs"]["value"] == "IMAGE"
    assert set(link_types(page).values()) == {"IMAGE"}

    # Typed, the port is type-checked: an IMAGE input port cannot feed a MASK input...
    mask = add_node(page, "InvertMask")
    assert connect(page, 1, 0, mask, 0) is None
    # ...but a fresh one ("*") can, and becomes MASK.
    fresh = add_node(page, "DiscomfortInput", "m")
    assert connect(page, fresh, 0, mask, 0) == "MASK"
    assert nodes(page)[fresh]["outputs"]["value"] == "MASK"

    # An output port fed by an input port still "*" stays "*"; removing the feeder resets it.
    out = add_node(page, "DiscomfortOutput", "o")
    loose = add_node(page, "DiscomfortInput", "loose")
    connect(page, loose, 0, out, 0)
    assert nodes(page)[out]["inputs"]["value"] == "*"
    page.evaluate("([id]) => app.graph.remove(app.graph.getNodeById(id))", [loose])
    settle(page)
    assert nodes(page)[out]["inputs"]["value"] == "*"
    connect(page, mask, 0, out, 0)
    assert nodes(page)[out]["inputs"]["value"] == "MASK"
    page.evaluate("([id]) => app.graph.remove(app.graph.getNodeById(id))", [mask])
    settle(page)
    assert nodes(page)[out]["inputs"]["value"] == "*"
    assert nodes(page)[fresh]["outputs"]["value"] == "*"


# --- duplicates -----------------------------------------------------------------------------


def test_duplicate_output_ids_are_flagged(page):
    load(page, FIXTURES / "duplicates.json")
    got = nodes(page)
    assert page.evaluate("() => discomfortEditor.duplicateOutputIds()") == ["result"]
    assert got[3]["title"] == "Output: result" + SUFFIX
    assert got[4]["title"] == "Second result" + SUFFIX  # the hand-set title keeps its text
    for flagged in (3, 4):
        assert got[flagged]["bgcolor"] and got[flagged]["color"]
    # Output "img" shares its id with an input only: that is how values flow, not a conflict.
    assert got[5]["title"] == "Output: img" and got[5]["bgcolor"] is None
    assert got[1]["title"] == "Input: img" and got[1]["bgcolor"] is None

    set_unique_id(page, 4, "second")  # fixed: both unflagged, colours back to default
    got = nodes(page)
    assert got[3]["title"] == "Output: result" and got[3]["bgcolor"] is None
    assert got[4]["title"] == "Second result" and got[4]["bgcolor"] is None
    assert page.evaluate("() => discomfortEditor.duplicateOutputIds()") == []

    # A new node that collides is flagged, and removing it unflags the other.
    new = add_node(page, "DiscomfortOutput", "second")
    got = nodes(page)
    assert got[new]["title"] == "Output: second" + SUFFIX
    assert got[4]["title"] == "Second result" + SUFFIX
    page.evaluate("([id]) => app.graph.remove(app.graph.getNodeById(id))", [new])
    settle(page)
    assert nodes(page)[4]["title"] == "Second result"
    assert nodes(page)[4]["bgcolor"] is None


# --- the Python snippet ---------------------------------------------------------------------


def test_snippet_command_copies_a_runnable_script(page, comfy):
    from discomfort.graph.convert import ui_to_api

    load(page, KALEIDOSCOPE)
    page.evaluate("() => navigator.clipboard.writeText('')")
    page.evaluate(f"() => app.extensionManager.command.execute('{COMMAND}')")
    snippet = page.evaluate("() => navigator.clipboard.readText()")
    assert snippet == page.evaluate("() => discomfortEditor.buildSnippet()")

    # Named after the workflow tab ("kaleidoscope", "kaleidoscope (2)" when opened again).
    assert re.match(r'# Run the workflow "kaleidoscope( \(\d+\))?" from Python', snippet)
    assert "from discomfort import Discomfort" in snippet
    assert "await Discomfort.create()" in snippet
    assert "await discomfort.run([WORKFLOW], inputs={" in snippet
    assert '"canvas": None,  # TODO' in snippet
    assert 'result["canvas"]' in snippet
    compile(snippet, "snippet.py", "exec")

    # The embedded workflow is the open one, and converts to the same prompt as the file.
    match = re.search(r'^WORKFLOW = json.loads\(r"""(.*)"""\)$', snippet, re.M)
    assert match is not None, snippet
    workflow = json.loads(match.group(1))
    assert sorted(n["type"] for n in workflow["nodes"]) == sorted(
        n["type"] for n in json.loads(KALEIDOSCOPE.read_text())["nodes"])
    object_info = comfy.get("/object_info")

    def prompt(ui):  # titles (in _meta) are the editor's; the rest must be the same
        return {k: {f: v for f, v in n.items() if f != "_meta"}
                for k, n in ui_to_api(ui, object_info).items()}

    assert prompt(workflow) == prompt(json.loads(KALEIDOSCOPE.read_text()))

    # An input with a connected default is optional; outputs are all listed; no flag suffixes.
    load(page, FIXTURES / "duplicates.json")
    snippet = page.evaluate("() => discomfortEditor.buildSnippet()")
    compile(snippet, "snippet.py", "exec")
    assert '"img": None,  # TODO' in snippet
    assert 'result["img"]' in snippet and 'result["result"]' in snippet
    assert SUFFIX not in snippet

    # The command is in the menu bar ("Discomfort" > "Copy Python snippet").
    assert page.evaluate(f"""() => app.extensionManager.command.commands
        .some(c => c.id === '{COMMAND}')""")
    assert not page.page_errors, page.page_errors


def test_menu_entry_copies_the_snippet(page):
    load(page, INVERT)
    page.evaluate("() => navigator.clipboard.writeText('')")
    page.locator(".comfyui-logo-wrapper, .comfy-menu-button-wrapper").first.click()
    page.get_by_text("Discomfort", exact=True).first.hover()
    page.get_by_text("Copy Python snippet", exact=True).first.click()
    page.wait_for_function("() => navigator.clipboard.readText().then(t => t.length > 0)")
    snippet = page.evaluate("() => navigator.clipboard.readText()")
    assert '"img": None,  # TODO' in snippet and 'result["inverted"]' in snippet


# --- conversion: the installed editor against the converter ---------------------------------

CONVERSION = TESTS / "fixtures" / "conversion" / "cases"
# Cases where today's editor (1.58) and the installed one differ; the checked-in 1.32
# expectations of these must still be what the installed editor gives.
EDITOR_CASES = ["promoted_widgets", "bypassed_subgraph", "colliding_inner_ids", "dom_widgets",
                "two_group_nodes", "widgets_values_named", "group_node_modes",
                "colliding_inner_ids_v1", "promoted_unknown_widget"]


@pytest.mark.parametrize("name", EDITOR_CASES)
def test_installed_editor_converts_like_ui_to_api(page, comfy, name):
    """graphToPrompt() of the editor the server serves (1.32.9) is what ui_to_api(...,
    editor='1.32') gives, and what the checked-in expectation holds."""
    from discomfort.graph.convert import ui_to_api

    version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || null")
    assert version == "1.32.9", f"the server serves frontend {version}: regenerate the 1.32 " \
        "expectations with scripts/make_conversion_expectations.py --editor 1.32"
    workflow = json.loads((CONVERSION / f"{name}.json").read_text())
    page.evaluate("async (wf) => { await app.loadGraphData(wf, true, false, null, "
                  "{showMissingNodesDialog: false, showMissingModelsDialog: false}); }", workflow)
    settle(page)
    editor = page.evaluate("async () => (await app.graphToPrompt()).output")
    ours = ui_to_api(workflow, comfy.get("/object_info"), editor="1.32", seed=0)
    assert ours == editor
    assert editor == json.loads((CONVERSION / f"{name}.expected.json").read_text())


# --- the screenshot -------------------------------------------------------------------------


def test_screenshot(comfy, browser, tmp_path):
    """The README's screenshot. Taken on every run; written to docs/images/editor.png only
    with DISCOMFORT_UPDATE_SCREENSHOT=1, so a test run leaves the checkout as it was."""
    shot = SCREENSHOT if os.environ.get("DISCOMFORT_UPDATE_SCREENSHOT") == "1" else tmp_path / "editor.png"
    page = open_editor(comfy.server, browser)  # a page of its own: one workflow tab
    load(page, KALEIDOSCOPE)
    page.evaluate("() => app.extensionManager.toast?.removeAll?.()")
    page.keyboard.press("Escape")
    page.evaluate("() => { app.canvas.deselectAll?.(); }")
    page.evaluate("() => app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_timeout(800)  # the fit is animated
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000
    # Every node is inside the visible canvas.
    inside = page.evaluate("""() => {
        const c = app.canvas, [w, h] = [c.canvas.width, c.canvas.height];
        return app.graph.nodes.every(n => {
            const [x, y] = c.ds.convertOffsetToCanvas(n.pos);
            return x >= 0 && y >= 0 && x < w && y < h;
        });
    }""")
    page.context.close()
    assert inside
