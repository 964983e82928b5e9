"""Run a demo workflow through a real ComfyUI server, with a progress bar.

    make demo                      # set-up (make host) + this script: the tiny-world style LoRA
    .venv/bin/python scripts/demo.py [--out output/demo] [--workflow demo_tinyworld|demo_tiny]

1. puts the committed tiny-world models and style sets (``scripts/tinyworld/assets.py``;
   for ``demo_tiny`` the random tiny model files of ``scripts/make_demo_model.py``)
   into a ComfyUI base directory ``<out>/comfyui``, and links the pack and the
   demo-only ``scripts/flowlora_tiny`` package into its ``custom_nodes``;
2. starts ComfyUI (``main.py --cpu``) on a free local port with that base directory;
3. converts the workflow to API format with ``scripts/workflow_api.py``
   and queues it on ``/prompt``, following ComfyUI's websocket progress
   messages in the terminal;
4. copies the LoRA, its training log, the plots and the before/after grid to
   ``<out>/``, writes ``metrics.json`` from the graph's measuring nodes (Style
   Distance, Content Accuracy) and prints one summary line: style score and
   content accuracy before -> after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
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

WORKFLOWS = REPO / "workflows"
DEFAULT_WORKFLOW = "demo_tinyworld"


def prepare(base: Path, workflow: str) -> None:
    make_demo_model.import_comfy()
    if workflow == "demo_tiny":
        print("[demo] writing the tiny random demo model files and dataset ...", flush=True)
        make_demo_model.write_models(base / "models", **make_demo_model.DEMO_FILES)
        make_demo_model.write_dataset(base / "input" / make_demo_model.DEMO_DATASET)
    else:
        from tinyworld import assets

        print("[demo] installing the tiny-world models and style sets ...", flush=True)
        assets.install(base)
    link = base / "custom_nodes" / "flowlora_tiny"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(REPO / "scripts" / "flowlora_tiny", target_is_directory=True)


class Progress:
    """Progress of a queued prompt: nodes done / total, the running node and its own steps, with s/step and ETA.

    On a terminal a live tqdm bar (tqdm ships with ComfyUI); in a log (stdout not a terminal) sparse lines:
    one when a node starts and one per 10% of a node's steps, never the same line twice.
    """

    def __init__(self, prompt: dict, tty: bool | None = None, stream=None):
        self.prompt = prompt
        self.done: set[str] = set()
        self.node = ""
        self.value = self.maximum = 0
        self.text = ""
        self.node_started = time.monotonic()
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.last_line = ""
        self.bar = None

    def title(self, node_id: str) -> str:
        node = self.prompt.get(node_id, {})
        return node.get("_meta", {}).get("title") or node.get("class_type", node_id)

    def rate(self) -> str:
        """``1.23 s/step, ETA 0:45`` of the running node (empty before its first step)."""
        if self.value <= 0 or self.maximum <= 1:
            return ""
        per_step = (time.monotonic() - self.node_started) / self.value
        eta = int(per_step * (self.maximum - self.value))
        return f"{per_step:.2f} s/step, ETA {eta // 60}:{eta % 60:02d}"

    def draw(self) -> None:
        if not self.tty:
            self._line()
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=len(self.prompt), unit="node", file=self.stream, dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} nodes [{elapsed}] {postfix}")
        self.bar.n = len(self.done)
        self.bar.set_description(self.title(self.node)[:40] if self.node else "queued", refresh=False)
        inner = f"{self.value}/{self.maximum} " if self.maximum > 1 else ""
        self.bar.set_postfix_str(" | ".join(t for t in (inner + self.rate(), self.text) if t.strip()), refresh=False)
        self.bar.refresh()

    def _line(self) -> None:
        """A log line when the node or its 10% step changes (the trainer's loss text is on that line)."""
        if not self.node:
            return
        decile = self.value * 10 // self.maximum if self.maximum > 1 else -1
        key = f"{self.node}:{decile}"
        if key == self.last_line:
            return
        self.last_line = key
        steps = f" {self.value}/{self.maximum} ({self.rate()})" if decile >= 0 and self.value else ""
        text = f" {self.text}" if self.text and decile >= 0 else ""
        print(f"[demo] {len(self.done)}/{len(self.prompt)} nodes done, running {self.title(self.node)}{steps}{text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.n = len(self.done)
            self.bar.close()

    def handle(self, kind: str, data: dict) -> None:
        if kind == "executing" and data.get("node"):
            if self.node:
                self.done.add(self.node)
            self.node, self.value, self.maximum, self.text = data["node"], 0, 0, ""
            self.node_started = time.monotonic()
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
    progress.close()
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


def write_json(path: Path, record: dict) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


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
            name = re.sub(r"_\d{5}_(?=\.\w+$)", "", src.name)  # SaveImage's counter grows on reruns into the same base
            copied.append(Path(shutil.copy2(src, out / name)))
    return copied


def metrics(prompt: dict, entry: dict) -> dict:
    """``{node title: its flowlora_metrics}`` of every measuring node (Style Distance, Content Accuracy) in the history entry."""
    out = {}
    for node_id, node_output in entry.get("outputs", {}).items():
        values = node_output.get("flowlora_metrics")
        if values:
            title = prompt.get(node_id, {}).get("_meta", {}).get("title") or prompt.get(node_id, {}).get("class_type", node_id)
            out[title] = values[0]
    return out


SAMPLING = {"demo_tinyworld": "8 steps, cfg 1", "demo_tinyworld_u1": "50 steps, cfg 4"}
"""How each tiny-world demo samples its before/after images (for the summary line)."""


def summary(measured: dict, sampling: str = "") -> str | None:
    """One line, style score and content accuracy before -> after, from the demo graph's node titles (None when absent)."""
    try:
        style = measured["style after: score 0 = base look, 1 = style set"]
        before, after = measured["content before"]["content_accuracy"], measured["content after"]["content_accuracy"]
        d_before = measured["style before (score 0 by definition)"]["distance"]
    except KeyError:
        return None
    return (f"style score 0.00 -> {style['style_score']:.2f} (distance to the style set {d_before:.3f} -> {style['distance']:.3f}); "
            f"content accuracy {100 * before:.1f}% -> {100 * after:.1f}% ({style['images']} held-out prompts{', ' + sampling if sampling else ''})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the FlowLoRA demo workflow through a real ComfyUI server.")
    parser.add_argument("--out", type=Path, default=REPO / "output" / "demo", help="where the demo's ComfyUI base directory and results go")
    parser.add_argument("--workflow", default=DEFAULT_WORKFLOW, choices=sorted(p.stem for p in WORKFLOWS.glob("demo_*.json")), help="demo_tinyworld: style LoRA on the pretrained tiny Turbo; demo_tinyworld_u1: the same on the tiny SenseNova-U1; demo_tiny: the machinery on random weights")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    base = out / "comfyui"
    workflow = WORKFLOWS / f"{args.workflow}.json"
    started = time.monotonic()
    prepare(base, args.workflow)
    print(f"[demo] starting ComfyUI (base directory {base}) ...", flush=True)
    with harness.comfy_server(base) as server:
        print(f"[demo] ComfyUI is up at {server.url} ({time.monotonic() - started:.0f} s); running {workflow.relative_to(REPO)}", flush=True)
        object_info = server.get("/object_info", timeout=120)
        prompt = workflow_api.to_api(json.loads(workflow.read_text(encoding="utf-8")), object_info)
        entry = asyncio.run(run(server, prompt))
        if entry["status"].get("status_str") != "success":
            errors = [m[1] for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
            detail = errors[0] if errors else {}
            raise SystemExit(f"[demo] the workflow failed in {detail.get('node_type')} (node {detail.get('node_id')}): {detail.get('exception_message', '').strip()}\n[demo] server log: {server.log}")
        files = collect(server, prompt, entry, out)
    measured = metrics(prompt, entry)
    line = summary(measured, SAMPLING.get(args.workflow, ""))
    if measured:
        record = {"workflow": workflow.name, "seconds": round(time.monotonic() - started, 1), "summary": line, "nodes": measured}
        files.append(write_json(out / "metrics.json", record))
    print(f"[demo] done in {time.monotonic() - started:.0f} s. Results in {out}:")
    for path in files:
        print(f"  {path.relative_to(out)}")
    if line:
        print(f"[demo] {line}")
    print(f"[demo] ComfyUI's own folders (models, input, output, server log) are in {base}")


if __name__ == "__main__":
    main()
