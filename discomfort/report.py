"""What a run did, for the user to read back: ``discomfort.last_run``.

Built from the server's own events as they arrive (no ``/history`` needed, so it works the
same on managed and attached servers): per prompt, which nodes executed and which came from
ComfyUI's cache, by id and class, and the files each output node wrote (SaveImage,
PreviewImage, any node whose ``ui`` result names files).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .protocol import Event


@dataclass(frozen=True)
class OutputFile:
    """A file an output node wrote on the server, as ``GET /view`` names it."""

    filename: str
    subfolder: str
    type: str          # "output" (SaveImage), "temp" (PreviewImage) or "input"
    node_id: str
    class_type: str | None
    kind: str = "images"  # the ui key it came under: images, gifs, latents, audio...


@dataclass
class PromptReport:
    """One prompt of a run: what ran, what was cached, what its output nodes returned."""

    prompt_id: str
    workflow: str
    class_types: dict[str, str] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)   # node ids, in execution order
    cached: list[str] = field(default_factory=list)
    outputs: dict[str, dict] = field(default_factory=dict)  # node id -> its ui result

    def on_event(self, event: Event) -> None:
        if event.type == "executing" and event.node is not None:
            self.executed.append(event.node)
        elif event.type == "execution_cached":
            self.cached.extend(str(n) for n in event.data.get("nodes") or [])
        elif event.type == "executed" and event.node is not None:
            self.outputs[event.node] = event.data.get("output") or {}

    def executed_types(self) -> Counter:
        return Counter(self.class_types.get(n, "?") for n in self.executed)

    def cached_types(self) -> Counter:
        return Counter(self.class_types.get(n, "?") for n in self.cached)

    @property
    def files(self) -> list[OutputFile]:
        return [OutputFile(str(item["filename"]), str(item.get("subfolder") or ""),
                           str(item.get("type") or "output"), node_id,
                           self.class_types.get(node_id), kind)
                for node_id, ui in self.outputs.items()
                for kind, items in ui.items() if isinstance(items, list)
                for item in items if isinstance(item, dict) and "filename" in item]


@dataclass
class RunReport:
    """One ``run()``: its prompts, and what it used that the workflows did not fix."""

    prompts: list[PromptReport] = field(default_factory=list)
    # One entry per iteration and workflow: the controlled widgets (seeds) as the editor
    # would have advanced them, and the dynamic-prompt choices made.
    widget_changes: list[list[dict]] = field(default_factory=list)
    dynamic_prompts: list[list[dict]] = field(default_factory=list)
    seed: int | None = None

    @property
    def prompt_ids(self) -> list[str]:
        return [p.prompt_id for p in self.prompts]

    @property
    def files(self) -> list[OutputFile]:
        """Every file the run's output nodes wrote, prompt by prompt."""
        return [f for p in self.prompts for f in p.files]

    @property
    def images(self) -> list[OutputFile]:
        return [f for f in self.files if f.kind == "images"]

    def executions(self, class_type: str | None = None) -> Counter | int:
        """How often each node class executed (not cached) over the run; with
        ``class_type``, that class's count."""
        total: Counter = Counter()
        for prompt in self.prompts:
            total.update(prompt.executed_types())
        return total if class_type is None else total[class_type]
