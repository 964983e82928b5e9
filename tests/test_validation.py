"""Declared input ranges through the real server's /prompt validation.

A V3 node's ``validate_inputs`` taking ``**kwargs`` makes ComfyUI skip its own
min/max and combo checks for every input (``execution.validate_inputs``), so
each pack node checks the values against its own schema first
(``nodes.types.check_inputs``). These tests queue prompts on a live server and
read the validation errors it returns.
"""

from __future__ import annotations

import math
import uuid

import pytest

pytestmark = pytest.mark.server

CONFIG_NODES = ("FlowLoRATimestepsAnchorCoupled", "FlowLoRALossMSE", "FlowLoRALoraConfig", "FlowLoRAOptimizerConfig")


@pytest.fixture(scope="module")
def info(server):
    return server.get("/object_info")


def widgets(info: dict, node_type: str) -> dict:
    """Every widget of ``node_type`` at its default (a combo at its default or first option)."""
    spec = info[node_type]["input"]
    out = {}
    for name, (kind, options) in {**spec.get("required", {}), **spec.get("optional", {})}.items():
        if isinstance(kind, list):
            out[name] = options.get("default", kind[0] if kind else None)
        elif kind == "COMBO":
            out[name] = options.get("default", options["options"][0])
        elif "default" in options:
            out[name] = options["default"]
    return out


def trainer_prompt(info: dict, **overrides: dict) -> dict:
    """LoRA Trainer with its four config nodes at their defaults; ``overrides`` maps node type -> widgets.

    The model comes from a stock UNETLoader naming a file that does not exist,
    so that loader is the one node expected to fail validation.
    """
    ids = {node_type: str(i) for i, node_type in enumerate(CONFIG_NODES, start=2)}
    prompt = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "missing.safetensors", "weight_dtype": "default"}}}
    for node_type, node_id in ids.items():
        prompt[node_id] = {"class_type": node_type, "inputs": {**widgets(info, node_type), **overrides.get(node_type, {})}}
    trainer = {**widgets(info, "FlowLoRALoraTrainer"), "output_name": f"validation/{uuid.uuid4().hex}", **overrides.get("FlowLoRALoraTrainer", {})}
    trainer.update(model=["1", 0], timesteps=[ids["FlowLoRATimestepsAnchorCoupled"], 0], loss=[ids["FlowLoRALossMSE"], 0], lora=[ids["FlowLoRALoraConfig"], 0], optimizer=[ids["FlowLoRAOptimizerConfig"], 0])
    prompt["9"] = {"class_type": "FlowLoRALoraTrainer", "inputs": trainer}
    return prompt


def node_errors(server, prompt: dict) -> dict[str, str]:
    """``{node_type: error text}`` of the nodes /prompt refused (the prompt must be refused)."""
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 400, body
    return {prompt[i]["class_type"]: str(entry["errors"]) for i, entry in body["node_errors"].items()}


def test_defaults_pass_validation(server, info):
    assert set(node_errors(server, trainer_prompt(info))) == {"UNETLoader"}  # only the missing model file


@pytest.mark.parametrize(
    "node_type, name, value, message",
    [
        ("FlowLoRALoraTrainer", "steps", 0, "steps = 0: must lie in [1, 1000000]"),
        ("FlowLoRALoraTrainer", "epochs", -1, "epochs = -1: must lie in [0, 10000]"),
        ("FlowLoRALoraTrainer", "batch_size", 100000, "batch_size = 100000: must lie in [1, 256]"),
        ("FlowLoRALoraTrainer", "training_dtype", "fp4", "training_dtype = 'fp4': must be one of"),
        ("FlowLoRALoraConfig", "rank", 100000, "rank = 100000: must lie in [1, 1024]"),
        ("FlowLoRALoraConfig", "preset", "no_such_preset", "preset = 'no_such_preset': must be one of"),
        ("FlowLoRAOptimizerConfig", "learning_rate", 1e6, "learning_rate = 1000000.0: must lie in [1e-08, 1]"),
        ("FlowLoRAOptimizerConfig", "learning_rate", math.inf, "learning_rate = inf: must lie in [1e-08, 1]"),
        ("FlowLoRAOptimizerConfig", "grad_accumulation", 0, "grad_accumulation = 0: must lie in [1, 1024]"),
        ("FlowLoRALossMSE", "weight", -1.0, "weight = -1.0: must lie in [0, 100]"),
        ("FlowLoRALossMSE", "t_eps", 0.0, "t_eps = 0.0: must lie in [0.0001, 0.5]"),
        ("FlowLoRATimestepsAnchorCoupled", "num_anchors", 0, "num_anchors = 0: must lie in [1, 1000]"),
        ("FlowLoRATimestepsAnchorCoupled", "clamp_min", 0.9995, "clamp_min = 0.9995: need 0 <= clamp_min < clamp_max = 0.999 <= 1"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_input(server, info, node_type, name, value, message):
    errors = node_errors(server, trainer_prompt(info, **{node_type: {name: value}}))
    assert set(errors) == {"UNETLoader", node_type}, errors
    assert message in errors[node_type]


def test_dataset_ranges_and_a_valid_sampler_prompt_still_runs(server, info):
    dataset = {**widgets(info, "FlowLoRADataset"), "folder": "anything", "max_pixels": 10**9}
    prompt = trainer_prompt(info)
    prompt["10"] = {"class_type": "VAELoader", "inputs": {"vae_name": "missing.safetensors"}}
    prompt["11"] = {"class_type": "FlowLoRADataset", "inputs": {**dataset, "vae": ["10", 0]}}
    prompt["9"]["inputs"]["dataset"] = ["11", 0]
    errors = node_errors(server, prompt)
    assert "max_pixels = 1000000000: must lie in [4096, 16777216]" in errors["FlowLoRADataset"]

    sampler = {**widgets(info, "FlowLoRATimestepsAnchorCoupled"), "num_anchors": 1000}
    histogram = {**widgets(info, "FlowLoRATimestepHistogram"), "timesteps": ["1", 0], "batch_size": 2}
    entry = server.run_prompt({
        "1": {"class_type": "FlowLoRATimestepsAnchorCoupled", "inputs": sampler},
        "2": {"class_type": "FlowLoRATimestepHistogram", "inputs": histogram},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    })
    assert entry["status"]["status_str"] == "success", entry["status"]
