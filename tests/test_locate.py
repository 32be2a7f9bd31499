"""Where a managed server's ComfyUI comes from: setting, $COMFYUI_PATH, the project's install."""

from pathlib import Path

import pytest

from discomfort import locate
from discomfort.errors import ComfyInstallError


def fake_comfyui(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "main.py").write_text("")
    return path


def test_lookup_order(tmp_path, monkeypatch):
    setting, env = fake_comfyui(tmp_path / "a"), fake_comfyui(tmp_path / "b")
    cache = tmp_path / "cache"
    fake_comfyui(cache / f"comfyui-{locate.COMFYUI_VERSION}")
    monkeypatch.setenv("DISCOMFORT_CACHE", str(cache))
    monkeypatch.setenv("COMFYUI_PATH", str(env))
    assert locate.find_comfyui(setting) == setting
    assert locate.find_comfyui() == env
    monkeypatch.delenv("COMFYUI_PATH")
    assert locate.find_comfyui() == cache / f"comfyui-{locate.COMFYUI_VERSION}"


def test_a_wrong_path_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYUI_PATH", str(tmp_path / "nothing"))
    with pytest.raises(ComfyInstallError, match=r"\$COMFYUI_PATH .* has no main.py"):
        locate.find_comfyui()
    monkeypatch.delenv("COMFYUI_PATH")
    monkeypatch.setenv("DISCOMFORT_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ComfyInstallError, match="make setup"):
        locate.find_comfyui()
