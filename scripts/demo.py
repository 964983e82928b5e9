"""Run workflows/demo_tiny.json through a real ComfyUI server, with a progress bar.

    make demo                      # set-up (make host) + this script
    .venv/bin/python scripts/demo.py [--out output/demo]

1. writes the tiny demo model files and dataset (``scripts/make_demo_model.py``)
   into a ComfyUI base directory ``<out>/comfyui``, and links the pack and the
   demo-only ``scripts/flowlora_tiny`` package into its ``custom_nodes``;
2. starts ComfyUI (``main.py --cpu``) on a free local port with that base directory;
3. converts the demo workflow to API format with ``scripts/workflow_api.py``
   and queues it on ``/prompt``, following ComfyUI's websocket progress
   messages in the terminal;
4. copies the LoRA, its training log, the plots and the before/after grid to
   ``<out>/`` and prints where they are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

import harness  # noqa: E402  (starts main.py with a --base-directory; shared with the tests)
import make_demo_model  # noqa: E402
import workflow_api  # noqa: E402

WORKFLOW = REPO / "workflows" / "demo_tiny.json"
BAR = 30


def prepare(base: Path) -> None:
    make_demo_model.import_comfy()
    print("[demo] writing the tiny demo model files and dataset ...", flush=True)
    make_demo_model.write_models(base / "models", **make_demo_model.DEMO_FILES)
    make_demo_model.write_dataset(base / "input" / make_demo_model.DEMO_DATASET)
    link = base / "custom_nodes" / "flowlora_tiny"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(REPO / "scripts" / "flowlora_tiny", target_is_directory=True)


class Progress:
    """One terminal line: nodes done / total, the running node and its own progress."""

    def __init__(self, prompt: dict):
        self.prompt = prompt
        self.done: set[str] = set()
        self.node = ""
        self.value = self.maximum = 0
        self.text = ""
        self.started = time.monotonic()
        self.tty = sys.stdout.isatty()
        self.last_line = ""

    def title(self, node_id: str) -> str:
        node = self.prompt.get(node_id, {})
        return node.get("_meta", {}).get("title") or node.get("class_type", node_id)

    def draw(self) -> None:
        if not self.tty:  # a log, not a terminal: one line per node, and training progress every 10%
            step = self.value * 10 // self.maximum if self.maximum > 1 else -1
            line = f"[demo] {len(self.done)}/{len(self.prompt)} nodes done, running {self.title(self.node)}" + (f" {self.text}" if self.text and step >= 0 else "")
            key = f"{self.node}:{step}"
            if self.node and key != self.last_line:
                self.last_line = key
                print(line, flush=True)
            return
        total = len(self.prompt)
        filled = int(BAR * len(self.done) / max(total, 1))
        inner = f" {self.value}/{self.maximum}" if self.maximum > 1 else ""
        extra = f" | {self.text}" if self.text else ""
        line = f"\r[{'#' * filled}{'.' * (BAR - filled)}] {len(self.done)}/{total} nodes {time.monotonic() - self.started:5.0f}s | {self.title(self.node)[:40]}{inner}{extra}"
        width = shutil.get_terminal_size((120, 20)).columns - 1
        sys.stdout.write(line[:width].ljust(width))
        sys.stdout.flush()

    def handle(self, kind: str, data: dict) -> None:
        if kind == "executing" and data.get("node"):
            if self.node:
                self.done.add(self.node)
            self.node, self.value, self.maximum, self.text = data["node"], 0, 0, ""
        elif kind == "execution_cached":
            self.done.update(data.get("nodes", []))
        elif kind == "progress":
            self.value, self.maximum = data.get("value", 0), data.get("max", 0)
        elif kind == "executed":
            self.done.add(data.get("node", ""))
        self.draw()


async def run(server: harness.Server, prompt: dict) -> dict:
    """Queue ``prompt`` and follow the websocket until it finishes; returns its history entry."""
    import aiohttp

    client_id = uuid.uuid4().hex
    progress = Progress(prompt)
    ws_url = server.url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, heartbeat=30) as ws:
        status, body = server.post("/prompt", {"prompt": prompt, "client_id": client_id})
        if status != 200:
            raise SystemExit(f"[demo] ComfyUI refused the workflow ({status}): {json.dumps(body)[:2000]}")
        prompt_id = body["prompt_id"]
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                text = _progress_text(message.data)
                if text:
                    progress.text = text
                    progress.draw()
                continue
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            event = json.loads(message.data)
            data = event.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            progress.handle(event["type"], data)
            if event["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                break
            if event["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                break
    sys.stdout.write("\n")
    for _ in range(50):
        history = server.get(f"/history/{prompt_id}")
        if prompt_id in history:
            return history[prompt_id]
        time.sleep(0.2)
    raise SystemExit(f"[demo] no history for prompt {prompt_id}; server log: {server.log}")


def _progress_text(payload: bytes) -> str:
    """ComfyUI's binary progress-text event: 4-byte type 3, 4-byte node-id length, node id, UTF-8 text."""
    if len(payload) < 8 or int.from_bytes(payload[:4], "big") != 3:
        return ""
    size = int.from_bytes(payload[4:8], "big")
    return payload[8 + size :].decode("utf-8", "replace").strip()


def collect(server: harness.Server, prompt: dict, entry: dict, out: Path) -> list[Path]:
    """Copy the LoRA, its log, the plots and the before/after grid into ``out``."""
    copied = []
    for node in prompt.values():
        if node["class_type"] == "FlowLoRALoraTrainer":
            stem = server.base / "models" / "loras" / node["inputs"]["output_name"]
            for suffix in (".safetensors", ".log.jsonl"):
                src = stem.with_name(stem.name + suffix)
                copied.append(Path(shutil.copy2(src, out / src.name)))
    for node_output in entry.get("outputs", {}).values():
        for image in node_output.get("images", []):
            if image.get("type") != "output":
                continue
            src = server.base / "output" / image["subfolder"] / image["filename"]
            name = src.name.replace("_00001_", "")
            copied.append(Path(shutil.copy2(src, out / name)))
    return copied


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the FlowLoRA demo workflow through a real ComfyUI server.")
    parser.add_argument("--out", type=Path, default=REPO / "output" / "demo", help="where the demo's ComfyUI base directory and results go")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    base = out / "comfyui"
    started = time.monotonic()
    prepare(base)
    print(f"[demo] starting ComfyUI (base directory {base}) ...", flush=True)
    with harness.comfy_server(base) as server:
        print(f"[demo] ComfyUI is up at {server.url} ({time.monotonic() - started:.0f} s); running {WORKFLOW.relative_to(REPO)}", flush=True)
        object_info = server.get("/object_info", timeout=120)
        prompt = workflow_api.to_api(json.loads(WORKFLOW.read_text(encoding="utf-8")), object_info)
        entry = asyncio.run(run(server, prompt))
        if entry["status"].get("status_str") != "success":
            errors = [m[1] for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
            detail = errors[0] if errors else {}
            raise SystemExit(f"[demo] the workflow failed in {detail.get('node_type')} (node {detail.get('node_id')}): {detail.get('exception_message', '').strip()}\n[demo] server log: {server.log}")
        files = collect(server, prompt, entry, out)
    print(f"[demo] done in {time.monotonic() - started:.0f} s. Results in {out}:")
    for path in files:
        print(f"  {path.relative_to(out)}")
    print(f"[demo] ComfyUI's own folders (models, input, output, server log) are in {base}")


if __name__ == "__main__":
    main()
