"""Paths the pack reads and writes stay inside ComfyUI's folders (nodes/paths.py).

In-process: the rule itself on ComfyUI's real folder_paths, pointed at a
temporary base. Through the live server: a Dataset prompt with an absolute,
``~``, ``..`` or symlinked folder or cache_dir is refused by /prompt, naming
the field and value, and nothing is written there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from flowlora.trainer_core.errors import ConfigError


@pytest.fixture
def comfy_dirs(comfy_root, tmp_path, monkeypatch):
    """ComfyUI's input, output, temp and user folders under ``tmp_path/base``; ``tmp_path/elsewhere`` outside."""
    import folder_paths

    monkeypatch.delenv("FLOWLORA_ALLOW_ANY_PATH", raising=False)
    base = tmp_path / "base"
    saved = (folder_paths.get_input_directory(), folder_paths.get_output_directory(), folder_paths.get_temp_directory(), folder_paths.get_user_directory())
    for name in ("input", "output", "temp", "user"):
        (base / name).mkdir(parents=True)
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_temp_directory(str(base / "temp"))
    folder_paths.set_user_directory(str(base / "user"))
    (tmp_path / "elsewhere").mkdir()
    yield base, tmp_path / "elsewhere"
    folder_paths.set_input_directory(saved[0])
    folder_paths.set_output_directory(saved[1])
    folder_paths.set_temp_directory(saved[2])
    folder_paths.set_user_directory(saved[3])


def test_relative_names_resolve_under_input_and_comfy_folders_are_allowed(comfy_dirs):
    import folder_paths
    from flowlora.nodes import paths

    base, _ = comfy_dirs
    assert paths.confine("folder", "my set") == base / "input" / "my set"
    assert paths.confine("folder", "a/../b") == base / "input" / "b"
    assert paths.confine("cache_dir", str(base / "output" / "cache")) == base / "output" / "cache"
    assert paths.confine("cache_dir", str(base / "user" / "x")) == base / "user" / "x"
    loras = folder_paths.get_folder_paths("loras")[0]
    assert paths.confine("lora_path", "a.safetensors", loras) == Path(os.path.realpath(loras)) / "a.safetensors"
    roots = paths.allowed_roots()
    assert str(base / "input") in roots and os.path.realpath(folder_paths.models_dir) in roots
    assert not any(r.endswith("custom_nodes") for r in roots)
    assert os.path.realpath(loras) not in roots  # inside models: listed once, as models


@pytest.mark.parametrize("value", ["{elsewhere}", "{input}/../../elsewhere", "~", "../..", "{input}/link_out/sub"])
def test_paths_outside_are_refused_naming_field_value_and_roots(comfy_dirs, value):
    from flowlora.nodes import paths

    base, elsewhere = comfy_dirs
    (base / "input" / "link_out").symlink_to(elsewhere, target_is_directory=True)
    text = value.format(elsewhere=elsewhere, input=base / "input")
    with pytest.raises(ConfigError) as error:
        paths.confine("folder", text)
    message = str(error.value)
    assert message.startswith(f"folder = {text!r}: resolves to ")
    assert f"outside ComfyUI's folders ({base / 'input'}, {base / 'output'}, {base / 'temp'}, {base / 'user'}, " in message
    assert "FLOWLORA_ALLOW_ANY_PATH=1" in message
    assert paths.check("folder", text) == message


def test_opt_in_allows_any_path(comfy_dirs, monkeypatch):
    from flowlora.nodes import paths

    _, elsewhere = comfy_dirs
    monkeypatch.setenv("FLOWLORA_ALLOW_ANY_PATH", "1")
    assert paths.any_path_allowed()
    assert paths.confine("folder", str(elsewhere)) == elsewhere
    assert paths.confine("folder", "~no_such_user_here/x").name == "x"  # an unknown ~user stays a relative name
    monkeypatch.setenv("FLOWLORA_ALLOW_ANY_PATH", "0")
    with pytest.raises(ConfigError, match="outside ComfyUI's folders"):
        paths.confine("folder", str(elsewhere))


def test_dataset_and_u1_nodes_refuse_outside_paths(comfy_dirs):
    from flowlora.nodes.dataset import DatasetNode, cache_folder
    from flowlora.nodes.u1.nodes import U1SaveOfficialLora

    base, elsewhere = comfy_dirs
    (base / "input" / "set").mkdir()
    (base / "input" / "set" / ".flowlora_cache").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ConfigError, match=r"cache_dir = '.*set/.flowlora_cache': resolves to " + str(elsewhere)):
        cache_folder(base / "input" / "set", "")  # a default cache folder linked out of ComfyUI's folders
    assert cache_folder(base / "input" / "set", "cache") == base / "input" / "cache"
    assert DatasetNode.fingerprint_inputs(folder=str(elsewhere))[0] == "refused"  # never lists an outside folder
    assert U1SaveOfficialLora.validate_inputs(lora_path=str(elsewhere / "x.safetensors"), include_full_tensors=True).startswith(f"lora_path = '{elsewhere}/x.safetensors': resolves to")
    with pytest.raises(ConfigError, match=r"lora_path = .*outside ComfyUI's folders"):
        U1SaveOfficialLora.execute(model=None, lora_path=str(elsewhere / "x.safetensors"))


def dataset_prompt(folder: str, cache_dir: str = "") -> dict:
    widgets = dict(
        trigger="", template="{trigger}, {caption}", caption_dropout=0.0, missing_caption="default", default_caption="", bad_files="skip",
        background="#FFFFFF", bucket_mode="auto", max_pixels=64 * 64, bucket_step=16, max_aspect=4.0, bucket_list="", allow_upscale=False,
        crop="center", seed=0, use_cache=True, cache_dir=cache_dir,
    )
    return {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}},
        "2": {"class_type": "FlowLoRADataset", "inputs": {"folder": folder, "vae": ["1", 0], **widgets}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}},
    }


@pytest.mark.server
def test_server_refuses_outside_folders_and_cache_dirs(server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (server.base / "input" / "escape").symlink_to(outside, target_is_directory=True)
    cases = [
        ("folder", str(outside), ""),
        ("folder", "~", ""),
        ("folder", "../../", ""),
        ("folder", "escape", ""),
        ("cache_dir", str(outside / "cache"), "x"),
        ("cache_dir", "escape/cache", "x"),
    ]
    for field, value, other in cases:
        folder, cache_dir = (value, "") if field == "folder" else (other, value)
        status, body = server.post("/prompt", {"prompt": dataset_prompt(folder, cache_dir)})
        assert status == 400, (field, value, body)
        errors = str(body["node_errors"]["2"]["errors"])
        assert f"{field} = {value!r}: resolves to " in errors and "outside ComfyUI's folders" in errors, errors
        assert "FLOWLORA_ALLOW_ANY_PATH=1" in errors
    assert list(outside.iterdir()) == []  # nothing written there
    status, body = server.post("/prompt", {"prompt": dataset_prompt("  ")})
    assert status == 400 and "folder = '': give the dataset folder" in str(body["node_errors"]["2"]["errors"])
    server.assert_alive()
