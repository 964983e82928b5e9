"""Cancel through the live server: POST /interrupt mid-run saves the last completed step; resume continues it.

The real server interrupts through ComfyUI's own hooks (the progress bar and
every ComfyUI layer's forward raise ``InterruptProcessingException``), not the
loop's ``should_stop`` flag, so this is the path users take when they press
Cancel. The graph is the shipped demo (``workflows/demo_tiny.json`` as
``scripts/build_workflows.py`` builds it for this server, tiny
stand-in models, stock UNETLoader, the pack's Dataset node) cut down to the
trainer and what feeds it.
"""

from __future__ import annotations

import json
import time
import urllib.request

import harness
import pytest
import standins  # puts scripts/ on sys.path
import workflow_api
from safetensors import safe_open

pytestmark = pytest.mark.server

NAME = "reliability/cancel"


def training_prompt(object_info: dict, **trainer_inputs) -> dict:
    """The demo workflow in API format, only the trainer and its ancestors, trainer inputs changed (overwrite off unless given)."""
    workflow = standins.specs.demo_tiny().build(object_info)  # what workflows/demo_tiny.json is built from
    prompt = standins.adapt_for_test(workflow_api.to_api(workflow, object_info))
    trainer_id = next(i for i, n in prompt.items() if n["class_type"] == "FlowLoRALoraTrainer")
    keep, todo = set(), [trainer_id]
    while todo:
        node_id = todo.pop()
        if node_id not in keep:
            keep.add(node_id)
            todo += [v[0] for v in prompt[node_id]["inputs"].values() if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)]
    prompt = {i: {**prompt[i], "inputs": dict(prompt[i]["inputs"])} for i in keep}
    prompt[trainer_id]["inputs"].update({"overwrite": False, **trainer_inputs})  # the demo graph overwrites; users' graphs do not
    return prompt


def wait(server: harness.Server, prompt_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        server.assert_alive()
        time.sleep(0.1)
    raise TimeoutError(f"prompt {prompt_id} did not end in {timeout} s; log: {server.log_text()[-3000:]}")


def queue(server: harness.Server, prompt: dict) -> str:
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 200, json.dumps(body)[:2000]
    return body["prompt_id"]


def interrupt(server: harness.Server) -> None:
    """POST /interrupt as the Cancel button does (answers 200 with an empty body)."""
    request = urllib.request.Request(server.url + "/interrupt", data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def saved(stem) -> tuple[dict, dict]:
    """(LoRA metadata, state info) of the files at ``stem``."""
    with safe_open(str(stem.with_name(stem.name + ".safetensors")), "pt") as f:
        lora = f.metadata()
    with safe_open(str(stem.with_name(stem.name + ".flowlora-state")), "pt") as f:
        state = json.loads(f.metadata()["info"])
    return lora, state


def records(stem) -> list[dict]:
    return [json.loads(line) for line in stem.with_name(stem.name + ".log.jsonl").read_text().splitlines()]


def test_interrupt_saves_the_last_step_and_resume_continues(server):
    import make_demo_model

    make_demo_model.write_models(server.base / "models", **make_demo_model.DEMO_FILES)
    make_demo_model.write_dataset(server.base / "input" / make_demo_model.DEMO_DATASET, size=standins.TEST_IMAGE)
    object_info = server.get("/object_info", timeout=120)
    stem = server.base / "models" / "loras" / NAME
    log_file = stem.with_name(stem.name + ".log.jsonl")

    prompt_id = queue(server, training_prompt(object_info, steps=5000, save_every=0, output_name=NAME))
    deadline = time.monotonic() + 120
    while not (log_file.exists() and len(log_file.read_text().splitlines()) >= 3):
        assert time.monotonic() < deadline, server.log_text()[-3000:]
        server.assert_alive()
        time.sleep(0.05)
    interrupt(server)
    entry = wait(server, prompt_id)

    assert entry["status"]["status_str"] == "error"
    assert [m for m in entry["status"]["messages"] if m[0] == "execution_interrupted"], entry["status"]
    lora, state = saved(stem)
    k = int(lora["flowlora.step"])
    assert 3 <= k < 5000
    assert state["step"] == k and state["reason"] == "stopped"
    # ComfyUI 0.3.75 raises the interrupt inside the progress hook (recorded as the stop's error); on 0.33 the
    # loop's own stop check sees the flag first, and the node raises the interrupt after saving
    assert "InterruptProcessingException" in state.get("error", "InterruptProcessingException")
    first = records(stem)
    assert [r["step"] for r in first] == list(range(1, k + 1))  # the log ends at the saved step
    assert f"stopped at step {k}/5000: LoRA {stem}.safetensors, resumable state {stem}.flowlora-state" in server.log_text()

    # Without resume or overwrite the name is taken: refused at validation, nothing touched.
    status, body = server.post("/prompt", {"prompt": training_prompt(object_info, steps=5000, output_name=NAME)})
    assert status == 400 and "already exists" in json.dumps(body) and "resume" in json.dumps(body)

    entry = wait(server, queue(server, training_prompt(object_info, steps=k + 3, save_every=0, output_name=NAME, resume=True)))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    lora, state = saved(stem)
    assert lora["flowlora.step"] == str(k + 3) and state["step"] == k + 3 and state["reason"] == "finished"
    after = records(stem)
    assert [r["step"] for r in after] == list(range(1, k + 4))
    assert after[:k] == first  # continued from step k, not restarted
