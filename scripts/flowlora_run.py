"""The headless runner from a clone of any folder name: ``python scripts/flowlora_run.py WORKFLOW.json ...``
(also ``torchrun ... scripts/flowlora_run.py ...``). Same as ``python -m flowlora.run`` where the clone's
folder is named ``flowlora`` and its parent is the working directory (ComfyUI's custom_nodes)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def register_package(name: str = "flowlora") -> None:
    """The clone as package ``name`` without running its ``__init__`` (which registers ComfyUI nodes only)."""
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(REPO)]
        package.__file__ = str(REPO / "__init__.py")
        sys.modules[name] = package


if __name__ == "__main__":
    register_package()
    from flowlora.runner.cli import main

    main()
