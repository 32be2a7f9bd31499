// Discomfort's editor extension: port titles, type following, duplicate output ids, and a
// "copy Python snippet" command.
//
// Title rule: a port's title follows its unique_id ("Input: <id>" / "Output: <id>") while it
// is automatic, i.e. empty, the node's default name ("Discomfort Input", the class name), or
// of the form "Input: ..." / "Output: ..." (the form this extension writes). Any other title
// was set by hand and is kept as it is.
//
// Types: like a Reroute, a port's "*" slot takes the type of what it is connected to, and goes
// back to "*" when nothing typed is connected. DiscomfortInput: the type of the inputs its
// output feeds (the first typed one), else the type of what feeds its `default`; both its
// output and its `default` input get that type. DiscomfortOutput: the type of what feeds it.
//
// Duplicates: two DiscomfortOutput nodes with one unique_id would write the same key; each is
// flagged with a red colour and a " ⚠ duplicate" title suffix, both undone once fixed.
import { app } from "../../scripts/app.js";

const INPUT = "DiscomfortInput";
const OUTPUT = "DiscomfortOutput";
const PORTS = new Set([INPUT, OUTPUT]);
const BASE = { [INPUT]: "Input", [OUTPUT]: "Output" };
const DEFAULT_NAMES = { [INPUT]: "Discomfort Input", [OUTPUT]: "Discomfort Output" };
const DUPLICATE_SUFFIX = " ⚠ duplicate";
const DUPLICATE_COLOR = "#a33";
const DUPLICATE_BGCOLOR = "#5a1d1d";
const COMMAND_ID = "Discomfort.CopyPythonSnippet";
const ANY = "*";

const isPort = (node) => PORTS.has(node?.comfyClass ?? node?.type);
const portClass = (node) => node.comfyClass ?? node.type;
const idWidget = (node) => node.widgets?.find((w) => w.name === "unique_id");
const uniqueId = (node) => String(idWidget(node)?.value ?? "");

function allNodes(graph = app.graph) {
  if (!graph) return [];
  const nodes = [...(graph.nodes ?? graph._nodes ?? [])];
  const subgraphs = graph.subgraphs?.values?.() ?? [];
  for (const sub of subgraphs) nodes.push(...(sub.nodes ?? sub._nodes ?? []));
  return nodes;
}

function getLink(graph, id) {
  if (id == null || !graph) return undefined;
  return graph.getLink?.(id) ?? graph._links?.get?.(id) ?? graph.links?.[id];
}

function markDirty(graph) {
  (graph ?? app.graph)?.setDirtyCanvas?.(true, true);
  app.canvas?.setDirty?.(true, true);
}

// --- titles --------------------------------------------------------------------------------

function stripSuffix(title) {
  title = title ?? "";
  return title.endsWith(DUPLICATE_SUFFIX) ? title.slice(0, -DUPLICATE_SUFFIX.length) : title;
}

function isAutomaticTitle(node, title) {
  const cls = portClass(node);
  const bare = stripSuffix(title).trim();
  return bare === "" || bare === DEFAULT_NAMES[cls] || bare === cls ||
    bare === node.constructor?.title || bare.startsWith(`${BASE[cls]}: `);
}

function automaticTitle(node) {
  return `${BASE[portClass(node)]}: ${uniqueId(node)}`;
}

// The title without the duplicate suffix, after applying the title rule.
function baseTitle(node) {
  const bare = stripSuffix(node.title);
  return isAutomaticTitle(node, bare) ? automaticTitle(node) : bare;
}

function applyTitle(node, duplicate) {
  const title = baseTitle(node) + (duplicate ? DUPLICATE_SUFFIX : "");
  if (node.title !== title) node.title = title;
}

// --- duplicates ----------------------------------------------------------------------------

function setFlag(node, duplicate) {
  const saved = node.__discomfortColors;
  if (duplicate && !saved) {
    node.__discomfortColors = { color: node.color, bgcolor: node.bgcolor };
    node.color = DUPLICATE_COLOR;
    node.bgcolor = DUPLICATE_BGCOLOR;
  } else if (!duplicate && saved) {
    delete node.__discomfortColors;
    for (const key of ["color", "bgcolor"]) {
      if (saved[key] === undefined) delete node[key];
      else node[key] = saved[key];
    }
  } else if (!duplicate && node.bgcolor === DUPLICATE_BGCOLOR && node.color === DUPLICATE_COLOR) {
    // Flagged when it was saved, and the flag is stale now: back to the default colours.
    delete node.color;
    delete node.bgcolor;
  }
  node.__discomfortDuplicate = duplicate;
}

/** Output unique_ids used by more than one DiscomfortOutput in the graph (and its subgraphs). */
function duplicateOutputIds(graph = app.graph) {
  const counts = new Map();
  for (const node of allNodes(graph)) {
    if (portClass(node) !== OUTPUT) continue;
    const id = uniqueId(node);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return [...counts].filter(([, n]) => n > 1).map(([id]) => id).sort();
}

/** Re-title every port and (un)flag duplicate outputs. */
function refreshPorts(graph = app.graph) {
  if (!graph) return;
  const duplicates = new Set(duplicateOutputIds(graph));
  for (const node of allNodes(graph)) {
    if (!isPort(node)) continue;
    const duplicate = portClass(node) === OUTPUT && duplicates.has(uniqueId(node));
    setFlag(node, duplicate);
    applyTitle(node, duplicate);
  }
  markDirty(graph);
}

let refreshQueued = false;
function queueRefresh() {
  if (refreshQueued) return;
  refreshQueued = true;
  queueMicrotask(() => {
    refreshQueued = false;
    refreshPorts();
  });
}

// --- type following ------------------------------------------------------------------------

const concrete = (type) => type != null && type !== "" && type !== ANY && type !== 0;

// Links of an output slot that really exist now (during a disconnect the slot may still list
// the link being removed; its target input is already cleared).
function liveOutputLinks(node, slot) {
  const graph = node.graph;
  const out = [];
  for (const id of node.outputs?.[slot]?.links ?? []) {
    const link = getLink(graph, id);
    if (!link) continue;
    const target = graph.getNodeById(link.target_id);
    if (target?.inputs?.[link.target_slot]?.link !== id) continue;
    out.push({ link, target, input: target.inputs[link.target_slot] });
  }
  return out;
}

function liveInputLink(node, slot) {
  const graph = node.graph;
  const input = node.inputs?.[slot];
  const link = getLink(graph, input?.link);
  if (!link) return null;
  const origin = graph.getNodeById(link.origin_id);
  const output = origin?.outputs?.[link.origin_slot];
  if (!output || !(output.links ?? []).includes(link.id)) return null;
  return { link, origin, output };
}

/** The type a port's slots should have now, from what it is connected to. */
function followedType(node) {
  if (portClass(node) === INPUT) {
    for (const { input } of liveOutputLinks(node, 0)) if (concrete(input.type)) return input.type;
    const from = liveInputLink(node, node.inputs?.findIndex((i) => i.name === "default") ?? -1);
    if (from && concrete(from.output.type)) return from.output.type;
    return ANY;
  }
  const from = liveInputLink(node, node.inputs?.findIndex((i) => i.name === "value") ?? 0);
  return from && concrete(from.output.type) ? from.output.type : ANY;
}

function syncTypes(node) {
  if (!isPort(node) || !node.graph) return;
  const type = followedType(node);
  if (portClass(node) === INPUT) {
    const output = node.outputs?.[0];
    if (output) {
      output.type = type;
      for (const { link } of liveOutputLinks(node, 0)) link.type = type;
    }
    const slot = node.inputs?.findIndex((i) => i.name === "default") ?? -1;
    if (slot >= 0) {
      node.inputs[slot].type = type;
      const from = liveInputLink(node, slot);
      if (from) from.link.type = type;
    }
  } else {
    const slot = Math.max(0, node.inputs?.findIndex((i) => i.name === "value") ?? 0);
    const input = node.inputs?.[slot];
    if (input) {
      input.type = type;
      const from = liveInputLink(node, slot);
      if (from) from.link.type = type;
    }
  }
  markDirty(node.graph);
}

function syncAllTypes(graph = app.graph) {
  for (const node of allNodes(graph)) if (isPort(node)) syncTypes(node);
}

// --- the Python snippet --------------------------------------------------------------------

const py = (s) => JSON.stringify(String(s)); // a JSON string is a valid Python string literal

function workflowName() {
  const wf = app.extensionManager?.workflow?.activeWorkflow;
  return wf?.filename ?? wf?.path ?? "workflow";
}

/** Ports of the graph: {inputs: [{id, hasDefault}], outputs: [id]} in id order. */
function listPorts(graph = app.graph) {
  const inputs = new Map();
  const outputs = new Set();
  for (const node of allNodes(graph)) {
    if (portClass(node) === INPUT) {
      const slot = node.inputs?.findIndex((i) => i.name === "default") ?? -1;
      const hasDefault = slot >= 0 && node.inputs[slot].link != null;
      const id = uniqueId(node);
      inputs.set(id, (inputs.get(id) ?? true) && hasDefault);
    } else if (portClass(node) === OUTPUT) {
      outputs.add(uniqueId(node));
    }
  }
  return {
    inputs: [...inputs].sort(([a], [b]) => a.localeCompare(b)).map(([id, hasDefault]) => ({ id, hasDefault })),
    outputs: [...outputs].sort(),
  };
}

function serializeWorkflow(graph) {
  const workflow = graph.serialize();
  // Flags are the editor's business, not part of the workflow.
  for (const node of workflow.nodes ?? []) {
    if (typeof node.title === "string") node.title = stripSuffix(node.title);
  }
  return workflow;
}

/** A ready-to-run Python script for the open workflow (the workflow is embedded). */
function buildSnippet(graph = app.graph, name = workflowName()) {
  const { inputs, outputs } = listPorts(graph);
  const lines = [
    `# Run the workflow ${py(name)} from Python (copied from the Discomfort editor).`,
    "import asyncio",
    "import json",
    "",
    "from discomfort import Discomfort",
    "",
    "",
    "async def main():",
    "    discomfort = await Discomfort.create()  # a headless ComfyUI of its own",
    "    try:",
  ];
  if (inputs.length) {
    lines.push("        result = await discomfort.run([WORKFLOW], inputs={");
    for (const { id, hasDefault } of inputs) {
      lines.push(hasDefault
        ? `            # ${py(id)}: None,  # optional: its default is connected in the workflow`
        : `            ${py(id)}: None,  # TODO: the value for DiscomfortInput ${py(id)}`);
    }
    lines.push("        })");
  } else {
    lines.push("        result = await discomfort.run([WORKFLOW], inputs={})  # no DiscomfortInput");
  }
  for (const id of outputs) lines.push(`        print(${py(id)}, result[${py(id)}])  # DiscomfortOutput ${py(id)}`);
  if (!outputs.length) lines.push("        print(sorted(result))  # the workflow has no DiscomfortOutput");
  lines.push(
    "    finally:",
    "        await discomfort.shutdown()",
    "",
    "",
    "# The workflow as it is in the editor.",
    `WORKFLOW = json.loads(r"""${JSON.stringify(serializeWorkflow(graph))}""")`,
    "",
    'if __name__ == "__main__":',
    "    asyncio.run(main())",
    "",
  );
  return lines.join("\n");
}

async function writeClipboard(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (err) {
    // Not a secure context, or no permission: the old way.
    const area = document.createElement("textarea");
    area.value = text;
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    area.remove();
    if (!ok) console.error("Discomfort: could not copy the snippet", err);
    return ok;
  }
}

async function copySnippet() {
  const text = buildSnippet();
  const ok = await writeClipboard(text);
  window.discomfortEditor.lastSnippet = text;
  const { inputs, outputs } = listPorts();
  app.extensionManager?.toast?.add?.({
    severity: ok ? "success" : "error",
    summary: ok ? "Python snippet copied" : "Could not copy the Python snippet",
    detail: `${inputs.length} input(s), ${outputs.length} output(s)`,
    life: 3000,
  });
  return text;
}

// For tests and the console.
window.discomfortEditor = {
  buildSnippet, copySnippet, duplicateOutputIds, refreshPorts, syncAllTypes, listPorts,
  commandId: COMMAND_ID, lastSnippet: null,
};

// --- wiring --------------------------------------------------------------------------------

app.registerExtension({
  name: "discomfort.ports",

  commands: [{
    id: COMMAND_ID,
    label: "Copy Python snippet for this workflow",
    menubarLabel: "Copy Python snippet",
    icon: "pi pi-copy",
    tooltip: "Copy a Python script that runs this workflow with Discomfort",
    function: copySnippet,
  }],
  menuCommands: [{ path: ["Discomfort"], commands: [COMMAND_ID] }],

  getCanvasMenuItems() {
    return [null, { content: "Discomfort: copy Python snippet", callback: () => { copySnippet(); } }];
  },

  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!PORTS.has(nodeData?.name)) return;
    const proto = nodeType.prototype;

    const onConnectionsChange = proto.onConnectionsChange;
    proto.onConnectionsChange = function (...args) {
      const result = onConnectionsChange?.apply(this, args);
      if (!app.configuringGraph) syncTypes(this);
      return result;
    };

    const onWidgetChanged = proto.onWidgetChanged;
    proto.onWidgetChanged = function (name, ...rest) {
      const result = onWidgetChanged?.call(this, name, ...rest);
      if (name === "unique_id") queueRefresh();
      return result;
    };

    const onRemoved = proto.onRemoved;
    proto.onRemoved = function (...args) {
      const result = onRemoved?.apply(this, args);
      queueRefresh();
      return result;
    };

    const onAfterGraphConfigured = proto.onAfterGraphConfigured;
    proto.onAfterGraphConfigured = function (...args) {
      const result = onAfterGraphConfigured?.apply(this, args);
      syncTypes(this);
      queueRefresh();
      return result;
    };
  },

  nodeCreated(node) {
    if (!isPort(node)) return;
    const widget = idWidget(node);
    if (widget) {
      const callback = widget.callback;
      widget.callback = function (...args) {
        const result = callback?.apply(this, args);
        queueRefresh();
        return result;
      };
    }
    applyTitle(node, false);
    queueRefresh(); // widget values of a loaded node arrive after creation
  },

  afterConfigureGraph() {
    syncAllTypes();
    refreshPorts();
  },
});
