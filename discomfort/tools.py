"""WorkflowTools (``discomfort.Tools``): the graph core's public functions and the image
helpers, gathered where a user looks for them. Everything here is pure or local-file I/O."""

from __future__ import annotations

from .graph import (
    add_input_port,
    add_output_port,
    discover_port_nodes,
    is_api_format,
    load_workflow,
    prune_to_output,
    stitch_workflows,
    ui_to_api,
)
from .graph.ports import find_ports
from .images import image_grid, image_to_tensor, open_image_as_tensor, save_comfy_image_to_disk


class WorkflowTools:
    ui_to_api = staticmethod(ui_to_api)
    load_workflow = staticmethod(load_workflow)
    is_api_format = staticmethod(is_api_format)
    find_ports = staticmethod(find_ports)
    discover_port_nodes = staticmethod(discover_port_nodes)
    stitch_workflows = staticmethod(stitch_workflows)
    prune_to_output = staticmethod(prune_to_output)
    add_input_port = staticmethod(add_input_port)
    add_output_port = staticmethod(add_output_port)
    image_to_tensor = staticmethod(image_to_tensor)
    open_image_as_tensor = staticmethod(open_image_as_tensor)
    save_comfy_image_to_disk = staticmethod(save_comfy_image_to_disk)
    image_grid = staticmethod(image_grid)
