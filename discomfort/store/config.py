"""Store configuration: ``workflow_context.json`` and the RAM budget it implies.

Units follow the spec's own numbers: GB means GiB (536870912 bytes is reported as 0.5 GB),
MB means MiB. When both ``MAX_RAM_GB`` and ``MAX_RAM_PERCENT`` are set, the smaller wins; the
``max_ram_gb`` argument overrides both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ..errors import ConfigError, InvalidIdError
from ..jsonfile import read_json_object
from .ids import check_dir_name

GIB = 1024 ** 3
MIB = 1024 ** 2
# The file's keys, as the spec spells them, and their defaults.
DEFAULTS: dict[str, Any] = {"MAX_RAM_PERCENT": 50, "MAX_RAM_GB": None, "CONTEXTS_DIR_NAME": "contexts"}
# The shipped default, at the top of a checkout (absent from a plain wheel: DEFAULTS apply).
PACKAGED_CONFIG = Path(__file__).resolve().parents[2] / "workflow_context.json"


@dataclass(frozen=True)
class StoreSettings:
    """``workflow_context.json``, checked: the file keeps the spec's key names, the code reads
    these attributes."""

    max_ram_percent: float | None = DEFAULTS["MAX_RAM_PERCENT"]
    max_ram_gb: float | None = DEFAULTS["MAX_RAM_GB"]
    contexts_dir_name: str = DEFAULTS["CONTEXTS_DIR_NAME"]

    def ram_capacity_bytes(self, max_ram_gb: float | None = None) -> int:
        """The RAM budget: the ``max_ram_gb`` argument, else the smaller of the two limits."""
        if max_ram_gb is not None:
            _check_number({"max_ram_gb": max_ram_gb}, "max_ram_gb")
            return int(max_ram_gb * GIB)
        limits = []
        if self.max_ram_gb is not None:
            limits.append(int(self.max_ram_gb * GIB))
        if self.max_ram_percent is not None:
            limits.append(int(psutil.virtual_memory().total * self.max_ram_percent / 100))
        return min(limits) if limits else 0


def load_config(config_path: str | Path | None = None) -> StoreSettings:
    path = Path(config_path) if config_path is not None else PACKAGED_CONFIG
    config = dict(DEFAULTS)
    if config_path is None and not path.is_file():
        return StoreSettings()
    loaded = read_json_object(path, "config file", ConfigError)
    unknown = sorted(set(loaded) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(DEFAULTS)}")
    if "MAX_RAM_GB" in loaded and "MAX_RAM_PERCENT" not in loaded:
        loaded["MAX_RAM_PERCENT"] = None  # an absolute limit alone replaces the default share
    config.update(loaded)
    _check_number(config, "MAX_RAM_PERCENT", upper=100)
    _check_number(config, "MAX_RAM_GB")
    try:
        check_dir_name(config["CONTEXTS_DIR_NAME"])
    except InvalidIdError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return StoreSettings(config["MAX_RAM_PERCENT"], config["MAX_RAM_GB"], config["CONTEXTS_DIR_NAME"])


def _check_number(config: dict, key: str, upper: float | None = None) -> None:
    value = config[key]
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 \
            or (upper is not None and value > upper):
        bound = f" and at most {upper}" if upper is not None else ""
        raise ConfigError(f"{key} must be a number above 0{bound}, got {value!r}")
