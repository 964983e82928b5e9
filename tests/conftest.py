"""Shared fixtures: the pack as ``flowlora`` and a real ComfyUI host."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import harness

harness.register_package()


@pytest.fixture(scope="session")
def comfy_root() -> Path:
    """ComfyUI imported in-process, CPU mode; returns its root folder."""
    return harness.import_comfy()


@pytest.fixture(scope="session")
def server(tmp_path_factory, comfy_root) -> harness.Server:
    """One live ComfyUI server for the session: the pack in its custom_nodes, plus the
    demo-only tiny stand-in package (scripts/flowlora_tiny) that demo_tiny.json needs."""
    from standins import link_tiny_package

    base = tmp_path_factory.mktemp("comfy-base")
    link_tiny_package(base)
    with harness.comfy_server(base) as s:
        yield s


@pytest.fixture(scope="module")
def trainer_env(comfy_root, tmp_path_factory):
    """``(tiny_models, LoraTrainer, loras)``: the trainer node with ComfyUI's loras folder pointed at a
    fresh temporary folder for the module, restored afterwards."""
    import folder_paths
    import tiny_models

    loras = tmp_path_factory.mktemp("loras")
    saved = folder_paths.folder_names_and_paths["loras"]
    folder_paths.folder_names_and_paths["loras"] = ([str(loras)], saved[1])
    from flowlora.nodes.trainer import LoraTrainer

    yield tiny_models, LoraTrainer, loras
    folder_paths.folder_names_and_paths["loras"] = saved
