// Discomfort's editor extension. For now it only shows a port's unique_id in its title;
// type following, duplicate checks and the Python-snippet menu come with the editor issue.
import { app } from "../../scripts/app.js";

const PORTS = new Set(["DiscomfortInput", "DiscomfortOutput"]);

app.registerExtension({
  name: "discomfort.ports",
  nodeCreated(node) {
    if (!PORTS.has(node.comfyClass)) return;
    const widget = node.widgets?.find((w) => w.name === "unique_id");
    if (!widget) return;
    const base = node.comfyClass === "DiscomfortInput" ? "Input" : "Output";
    const retitle = () => { node.title = `${base}: ${widget.value}`; };
    const callback = widget.callback;
    widget.callback = function (...args) {
      const result = callback?.apply(this, args);
      retitle();
      return result;
    };
    retitle();
  },
});
