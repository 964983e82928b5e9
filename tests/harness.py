"""The real ComfyUI host the tests run in: in-process imports and a live server.

ComfyUI lives where ``scripts/host.sh`` put it (``.comfyui/ComfyUI``) or at
``COMFYUI_PATH``. Nothing here is a mock: the in-process host imports
ComfyUI's own modules (CPU mode), and :class:`Server` runs ``main.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "flowlora"
PACK_LINK_NAME = "flowlora"


def register_package() -> None:
    """Make the repo importable as ``flowlora`` without running its ``__init__``.

    ComfyUI imports the pack by path; tests import its parts as
    ``flowlora.trainer_core...`` and ``flowlora.nodes...``.
    """
    if PACKAGE not in sys.modules:
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = [str(REPO)]
        pkg.__file__ = str(REPO / "__init__.py")
        sys.modules[PACKAGE] = pkg


def comfy_root() -> Path:
    root = Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui" / "ComfyUI")
    if not (root / "main.py").is_file():
        raise RuntimeError(f"no ComfyUI at {root}: run `make host` (or set COMFYUI_PATH to a ComfyUI checkout)")
    return root


def import_comfy() -> Path:
    """Put ComfyUI on ``sys.path`` in CPU mode, as ``main.py --cpu`` would."""
    root = comfy_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = True
    args.disable_smart_memory = False
    import comfy.model_management  # noqa: F401  (reads args at import)

    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A ComfyUI ``main.py --cpu`` process on 127.0.0.1 with the pack installed.

    ``base`` is its ``--base-directory`` (models/, input/, output/, user/,
    custom_nodes/ with the pack linked in).
    """

    url: str
    base: Path
    log: Path
    process: subprocess.Popen

    def get(self, path: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict, timeout: float = 30.0):
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def run_prompt(self, prompt: dict, timeout: float = 300.0) -> dict:
        """Queue an API-format prompt and wait for its history entry."""
        status, body = self.post("/prompt", {"prompt": prompt})
        if status != 200:
            raise AssertionError(f"/prompt refused the prompt ({status}): {json.dumps(body)[:2000]}")
        prompt_id = body["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            self.assert_alive()
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s; log: {self.log}")

    def assert_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"ComfyUI exited with {self.process.returncode}:\n{self.log.read_text()[-4000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def comfy_server(base: Path, startup_timeout: float = 180.0, extra_args: tuple[str, ...] = (), root: Path | None = None):
    """Start ComfyUI's real server (the test host, or the ComfyUI at ``root``) on a free port; stop it afterwards.

    A ComfyUI without ``--base-directory`` (older than about 0.3.30) gets the
    pack linked into its own ``custom_nodes`` and ``base``'s input/output/temp folders.
    """
    root = root or comfy_root()
    for sub in ("custom_nodes", "models", "input", "output", "user", "temp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    if "--base-directory" in (root / "comfy" / "cli_args.py").read_text():
        nodes_dir, folders = base / "custom_nodes", ["--base-directory", str(base)]
    else:
        nodes_dir, folders = root / "custom_nodes", [f"--{sub}-directory={base / sub}" for sub in ("input", "output", "temp")]
    link = nodes_dir / PACK_LINK_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    port = free_port()
    log = base / "comfyui.log"
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), *folders, "--disable-auto-launch", *extra_args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as log_file:
        process = subprocess.Popen(cmd, cwd=root, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", base, log, process)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            server.assert_alive()
            try:
                server.get("/system_stats", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ComfyUI did not answer within {startup_timeout} s; log: {log}") from None
                time.sleep(0.25)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
