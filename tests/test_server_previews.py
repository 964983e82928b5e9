"""Training previews reach a client over the live server's websocket while the prompt runs (issue 14, Acceptance).

The graph is the demo's trainer and what feeds it (tiny stand-in models, stock
UNETLoader and VAELoader, the pack's Dataset node), plus a CLIPTextEncode and a
Training Preview: 4 steps, a preview every 2 (steps 0, 2, 4). The trainer sends
each preview through ComfyUI's progress bar (``nodes/preview.py``); the server
forwards it to the client that queued the prompt as a binary message:

- ``PREVIEW_IMAGE_WITH_METADATA`` (type 4: 4-byte metadata length, JSON metadata
  naming the node and prompt, the PNG) to a client that announced
  ``supports_preview_metadata`` in its ``feature_flags`` message, as the frontend does;
- ``PREVIEW_IMAGE`` (type 1: 4-byte image type, 2 = PNG, then the PNG) to one that did not.

Both hosts' ``server.py`` (``send_image``, ``send_image_with_metadata``) and
``protocol.BinaryEventTypes`` define these layouts. Each arrives before
``execution_success``, decodes as a PNG of the labelled strip the trainer draws
for one prompt (fitted into 512 pixels by the server), and the strip's cell shows the saved preview.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid

import numpy as np
import pytest
import standins  # puts scripts/ on sys.path
from PIL import Image, ImageOps
from test_reliability_cancel import training_prompt

pytestmark = pytest.mark.server

STEPS = 4
EVERY = 2
SIZE = standins.TEST_IMAGE  # 64 pixels
PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA = 1, 4


def preview_prompt(object_info: dict, name: str) -> tuple[dict, str]:
    """The demo trainer graph with a Training Preview of one prompt; returns ``(prompt, trainer node id)``."""
    prompt = training_prompt(object_info, steps=STEPS, save_every=0, output_name=name, overwrite=True)
    ids = {node["class_type"]: node_id for node_id, node in prompt.items()}
    prompt["900"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": [ids["FlowLoRATinyTextEncoderLoader"], 0], "text": "demo, a red circle on a cream background"}}
    prompt["901"] = {"class_type": "FlowLoRATrainingPreview", "inputs": {
        "positive": ["900", 0], "vae": [ids["VAELoader"], 0], "sampler_name": "euler", "scheduler": "simple", "steps": 2, "cfg": 1.0,
        "seed": 0, "width": SIZE, "height": SIZE, "every_n_steps": EVERY, "drift_steps": 0, "every_percent": 10}}
    trainer = ids["FlowLoRALoraTrainer"]
    prompt[trainer]["inputs"]["preview"] = ["901", 0]
    return prompt, trainer


async def follow(server, prompt: dict, metadata: bool) -> list[tuple[str, object]]:
    """Queue ``prompt`` from a fresh websocket client; every message until the prompt ends, in arrival order:
    ``("binary", bytes)`` or ``(event type, data)``."""
    import aiohttp

    client_id = uuid.uuid4().hex
    events: list[tuple[str, object]] = []
    url = server.url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url, heartbeat=30) as ws:
        if metadata:  # the first message, as the frontend sends it; the server answers with its own flags
            await ws.send_str(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
            while (message := await ws.receive(timeout=60)).type == aiohttp.WSMsgType.TEXT and json.loads(message.data)["type"] != "feature_flags":
                pass
        status, body = server.post("/prompt", {"prompt": prompt, "client_id": client_id})
        assert status == 200, json.dumps(body)[:2000]
        prompt_id = body["prompt_id"]
        while True:
            message = await ws.receive(timeout=300)
            if message.type == aiohttp.WSMsgType.BINARY:
                events.append(("binary", bytes(message.data)))
                continue
            assert message.type == aiohttp.WSMsgType.TEXT, f"websocket closed ({message.type}); log: {server.log_text()[-3000:]}"
            event = json.loads(message.data)
            data = event.get("data", {})
            if isinstance(data, dict) and data.get("prompt_id") not in (None, prompt_id):
                continue
            events.append((event["type"], data))
            if event["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                return events


def png_previews(events: list[tuple[str, object]]) -> list[tuple[int, dict | None, Image.Image, int]]:
    """``(event type, metadata or None, image, index in events)`` of every PNG preview message (latent previews are JPEG)."""
    out = []
    for index, (kind, payload) in enumerate(events):
        if kind != "binary":
            continue
        event = int.from_bytes(payload[:4], "big")
        if event == PREVIEW_IMAGE and int.from_bytes(payload[4:8], "big") == 2:
            out.append((event, None, Image.open(io.BytesIO(payload[8:])), index))
        elif event == PREVIEW_IMAGE_WITH_METADATA:
            size = int.from_bytes(payload[4:8], "big")
            metadata = json.loads(payload[8 : 8 + size])
            if metadata.get("image_type") == "image/png":
                out.append((event, metadata, Image.open(io.BytesIO(payload[8 + size :])), index))
    return out


@pytest.mark.parametrize("metadata", [True, False], ids=["with_metadata", "plain"])
def test_previews_arrive_over_the_websocket_before_the_prompt_finishes(server, comfy_root, metadata):
    import make_demo_model
    from flowlora.nodes import charts
    from flowlora.trainer_core import previews

    make_demo_model.write_models(server.base / "models", **make_demo_model.DEMO_FILES)
    make_demo_model.write_dataset(server.base / "input" / make_demo_model.DEMO_DATASET, size=standins.TEST_IMAGE)
    name = f"ws_previews/{'meta' if metadata else 'plain'}"
    prompt, trainer = preview_prompt(server.get("/object_info", timeout=120), name)

    events = asyncio.run(follow(server, prompt, metadata))
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "execution_success", f"{kinds[-5:]}: {json.dumps(events[-1][1])[:2000]}; log: {server.log_text()[-3000:]}"
    found = png_previews(events)
    assert [event for event, _, _, _ in found] == [PREVIEW_IMAGE_WITH_METADATA if metadata else PREVIEW_IMAGE] * 3
    finished = kinds.index("execution_success")
    assert all(index < finished for _, _, _, index in found)
    trainer_ran = [i for i, (kind, data) in enumerate(events) if kind == "executing" and data.get("node") == trainer]
    assert trainer_ran and all(index > trainer_ran[0] for _, _, _, index in found)  # sent while the trainer ran

    folder = server.base / "models" / "loras" / name / "previews"
    for (_, meta, image, _), step in zip(found, (0, EVERY, STEPS), strict=True):
        if meta is not None:
            assert meta["node_id"] == trainer and meta.get("prompt_id") is not None
        layout = charts.grid_layout(1, 1, (SIZE, SIZE), cell_size=SIZE, column_labels=["prompt 0"], title=f"{name.split('/')[-1]}: step {step}")
        # the server fits the strip into --preview-size (512) with ImageOps.contain, which also enlarges (bilinear)
        shown = ImageOps.contain(Image.new("RGB", layout.size), (512, 512)).size
        assert image.format == "PNG" and image.size == shown
        scale = shown[0] / layout.size[0]
        x0, y0, x1, y1 = (round(v * scale) for v in layout.cell_box(0, 0))
        saved = Image.open(folder / previews.file_name(step, 0)).convert("RGB")
        assert saved.size == (SIZE, SIZE)
        # enlarged by the server, so compare 8 x 8 block means: pixel noise of the random model averages out
        cell = np.asarray(image.convert("RGB").crop((x0, y0, x1, y1)).resize((8, 8), Image.Resampling.BOX)).astype(int)
        blocks = np.asarray(saved.resize((8, 8), Image.Resampling.BOX)).astype(int)
        assert np.abs(cell - blocks).mean() <= 6, np.abs(cell - blocks).mean()


def test_cancel_during_a_preview_through_the_server_saves_and_resume_finishes(server, comfy_root):
    """POST /interrupt while the trainer samples a preview (issue 14, Bad input: "Cancel during a preview stops the
    run and saves as cancel does now"), through the live server as the Cancel button does.

    Previews every step with 400 sampling steps make sampling nearly all of the run's time. The trainer appends
    step 1's log record, then samples step 1's preview: the interrupt is sent as soon as that record is on disk
    (not on the websocket's progress message: 0.33 throttles progress updates, and ``value: 1`` then arrives
    only with the step-1 preview image). The run stops inside that preview: the LoRA and state are saved at
    step 1, the step-0 preview is on disk and the step-1 one is not. A resumed run finishes from step 1 and
    writes the remaining previews.
    """
    import make_demo_model
    from test_reliability_cancel import interrupt, records, saved

    make_demo_model.write_models(server.base / "models", **make_demo_model.DEMO_FILES)
    make_demo_model.write_dataset(server.base / "input" / make_demo_model.DEMO_DATASET, size=standins.TEST_IMAGE)
    name = "ws_previews/cancel"
    prompt, trainer = preview_prompt(server.get("/object_info", timeout=120), name)
    prompt[trainer]["inputs"].update(steps=6, overwrite=False)
    prompt["901"]["inputs"].update(steps=400, every_n_steps=1)
    stem = server.base / "models" / "loras" / name

    log_file = stem.with_name(stem.name + ".log.jsonl")

    def interrupt_after_step_1() -> None:
        deadline = time.monotonic() + 120
        while not (log_file.exists() and log_file.read_text().strip()):
            assert time.monotonic() < deadline, server.log_text()[-3000:]
            time.sleep(0.02)
        interrupt(server)

    async def run_and_cancel() -> list[tuple[str, object]]:
        canceller = asyncio.create_task(asyncio.to_thread(interrupt_after_step_1))
        events = await follow(server, prompt, metadata=False)
        await canceller
        return events

    events = asyncio.run(run_and_cancel())
    assert events[-1][0] == "execution_interrupted", f"{events[-3:]}; log: {server.log_text()[-3000:]}"
    lora, state = saved(stem)
    assert lora["flowlora.step"] == "1" and state["step"] == 1 and state["reason"] == "stopped"
    assert [r["step"] for r in records(stem)] == [1]
    assert sorted(p.name for p in (stem / "previews").glob("*.png")) == ["step_000000_p0.png"]

    prompt[trainer]["inputs"].update(resume=True)
    prompt["901"]["inputs"].update(steps=2)
    events = asyncio.run(follow(server, prompt, metadata=False))
    assert events[-1][0] == "execution_success", f"{events[-3:]}; log: {server.log_text()[-3000:]}"
    lora, state = saved(stem)
    assert lora["flowlora.step"] == "6" and state["reason"] == "finished"
    assert [r["step"] for r in records(stem)] == list(range(1, 7))
    assert sorted(p.name for p in (stem / "previews").glob("*.png")) == [previews_name(s) for s in range(7)]


def previews_name(step: int) -> str:
    from flowlora.trainer_core import previews

    return previews.file_name(step, 0)
