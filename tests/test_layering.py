"""trainer_core stays pure; the package imports cleanly without ComfyUI."""

from __future__ import annotations

import subprocess
import sys

from harness import REPO

BLOCKED = ("comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "server", "execution")

BLOCK_AND_IMPORT = f"""
import importlib, importlib.abc, pkgutil, sys, types

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked: " + name)
        return None

sys.meta_path.insert(0, Block())
pkg = types.ModuleType("flowlora"); pkg.__path__ = [{str(REPO)!r}]; sys.modules["flowlora"] = pkg
import flowlora.trainer_core as core
names = [m.name for m in pkgutil.walk_packages(core.__path__, "flowlora.trainer_core.")]
for name in names:
    importlib.import_module(name)
print(len(names), "modules")
"""


def test_trainer_core_imports_with_comfyui_blocked():
    out = subprocess.run([sys.executable, "-c", BLOCK_AND_IMPORT], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    count = int(out.stdout.split()[0])
    assert count >= 5, out.stdout


def test_package_imports_without_comfyui():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('flowlora', {str(REPO / '__init__.py')!r}, submodule_search_locations=[{str(REPO)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['flowlora'] = m; spec.loader.exec_module(m)\n"
        "print(hasattr(m, 'comfy_entrypoint'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
