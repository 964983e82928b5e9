"""Validation loss (issue 14 item 3) on the LoRA Trainer: a tiny real Z-Image (ComfyUI's own classes), CPU, fp32.

A 4-step run scored every 2 steps (steps 0, 2, 4) on a held-out set of two
latents, with LoRA dropout and gradient checkpointing on, so that scoring which
moved torch's global RNG, left a module in eval mode or the adapters' hooks in a
wrong state would change the training.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_trainer import data, loaded_denoise, settings

STEPS = 4
EVERY = 2
SIGMAS = "0.2, 0.5, 0.9"
SEED = 3


def run_settings(**changes):
    from flowlora.trainer_core.lora.config import LoraConfig

    return settings(**{"steps": STEPS, "lora": LoraConfig(preset="zimage_attn", rank=4, alpha=4, dropout=0.1), "gradient_checkpointing": True, **changes})


def held_out(seed: int = 21, channels: int = 16):
    """Two held-out latents (16 x 16) with one caption each."""
    from flowlora.nodes.trainer import dataset_from_latents

    g = torch.Generator().manual_seed(seed)
    latents = {"samples": torch.randn(2, channels, 16, 16, generator=g)}
    positive = [[torch.randn(1, 8, 32, generator=g), {}], [torch.randn(1, 8, 32, generator=g), {}]]
    return dataset_from_latents(latents, positive, None), latents, positive


def validation_node(dataset, **changes):
    from flowlora.nodes.validation import ValidationNode

    widgets = dict(sigmas=SIGMAS, seed=SEED, every_n_steps=EVERY, every_percent=10)
    widgets.update(changes)
    assert ValidationNode.validate_inputs(**widgets) is True
    return ValidationNode.execute(dataset=dataset, **widgets).result[0]


def independent(tiny_models, patcher, latents, positive, sigmas=(0.2, 0.5, 0.9), seed=SEED) -> list[float]:
    """The validation x0-MSE per sigma written out by hand: one generator, noise drawn sample by sample, sigma by sigma."""
    g = torch.Generator().manual_seed(seed)
    x0_all = patcher.model.process_latent_in(latents["samples"].clone())
    totals = [0.0] * len(sigmas)
    for i in range(x0_all.shape[0]):
        x0 = x0_all[i : i + 1]
        for j, s in enumerate(sigmas):
            eps = torch.randn(x0.shape, generator=g)
            x = s * eps + (1 - s) * x0
            with torch.no_grad():
                x0_hat = loaded_denoise(tiny_models, patcher, x, positive[i][0], torch.tensor([s]))
            totals[j] += float((x0_hat - x0).square().mean())
    return [t / x0_all.shape[0] for t in totals]


@pytest.fixture(scope="module")
def runs(trainer_env):
    tiny_models, Trainer, _ = trainer_env
    dataset, val_latents, val_positive = held_out()
    validation = validation_node(dataset)
    latents, positive = data(9)
    on = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, validation=validation, **run_settings(output_name="val/on")).result
    off = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **run_settings(output_name="val/off")).result
    short = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **run_settings(steps=EVERY, output_name="val/short")).result
    return dict(env=trainer_env, validation=validation, val_latents=val_latents, val_positive=val_positive, latents=latents, positive=positive, on=on, off=off, short=short)


def test_records_at_the_schedule_equal_an_independent_computation(runs):
    tiny_models, _, loras = runs["env"]
    records = runs["on"][2].validation_records()
    assert runs["on"][2].validation_path == str(loras / "val" / "on.val.jsonl")
    assert [r["step"] for r in records] == [0, 2, 4]
    assert all(r["sigmas"] == [0.2, 0.5, 0.9] and r["samples"] == 2 and r["seed"] == SEED and r["kind"] == "validation" for r in records)
    latents, positive = runs["val_latents"], runs["val_positive"]
    expected = {
        0: independent(tiny_models, tiny_models.tiny_zimage(0), latents, positive),  # the untrained model
        2: independent(tiny_models, runs["short"][0], latents, positive),  # the MODEL a 2-step run returns
        4: independent(tiny_models, runs["on"][0], latents, positive),  # this run's MODEL
    }
    for r in records:
        assert r["x0_mse"] == pytest.approx(expected[r["step"]], rel=1e-5, abs=1e-7), r["step"]
        assert r["mean"] == pytest.approx(float(np.mean(r["x0_mse"])), rel=1e-12)
    # the number moves with training, and it grows with sigma (else the comparison would prove little)
    assert abs(records[2]["mean"] - records[0]["mean"]) > 1e-4
    assert records[0]["x0_mse"][0] < records[0]["x0_mse"][2]


def test_training_with_validation_equals_training_without(runs):
    from safetensors.torch import load_file

    _, _, loras = runs["env"]
    a, b = load_file(runs["on"][1]), load_file(runs["off"][1])
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    on, off = runs["on"][2].records(), runs["off"][2].records()
    assert [set(r) for r in on] == [set(r) for r in off]  # the training log holds training records only
    assert [r["step"] for r in on] == [r["step"] for r in off] == list(range(1, STEPS + 1))
    for key in ("loss", "x0_mse", "v_mse", "grad_norm"):
        assert [r[key] for r in on] == pytest.approx([r[key] for r in off], abs=1e-6), key
    assert [r["sigma"] for r in on] == [r["sigma"] for r in off]
    assert runs["off"][2].validation_path == "" and runs["off"][2].validation_records() == []
    assert not (loras / "val" / "off.val.jsonl").exists()


def test_cancel_then_resume_with_validation_equals_straight_records_included(runs):
    """ComfyUI's interrupt from a layer in step 3; a stale record after the saved step is dropped on resume."""
    import comfy.model_management as mm
    from flowlora.trainer_core import validation as core
    from safetensors import safe_open
    from safetensors.torch import load_file

    tiny_models, Trainer, loras = runs["env"]
    model = tiny_models.tiny_zimage(0)
    training_forwards = {"n": 0}

    def interrupt_in_step_3(module, args):
        if torch.is_grad_enabled():
            training_forwards["n"] += 1
            if training_forwards["n"] == 3:
                mm.interrupt_current_processing(True)

    handle = model.model.diffusion_model.register_forward_pre_hook(interrupt_in_step_3)
    kw = run_settings(output_name="val/cancel")
    try:
        with pytest.raises(mm.InterruptProcessingException):
            Trainer.execute(model=model, latents=runs["latents"], positive=runs["positive"], validation=runs["validation"], **kw)
    finally:
        handle.remove()
    assert not mm.processing_interrupted()
    stem = loras / "val" / "cancel"
    with safe_open(str(stem.with_suffix(".safetensors")), "pt") as f:
        assert f.metadata()["flowlora.step"] == "2"
    path = str(stem) + core.SUFFIX
    assert [r["step"] for r in core.read_records(path)] == [0, 2]
    core.append_record(path, {"kind": "validation", "step": 3, "sigmas": [0.2, 0.5, 0.9], "x0_mse": [9.0, 9.0, 9.0], "mean": 9.0, "samples": 2, "seed": SEED})

    _, resumed, run_log, _ = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=runs["latents"], positive=runs["positive"], validation=runs["validation"], **{**kw, "resume": True}).result
    a, b = load_file(runs["on"][1]), load_file(resumed)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    straight, again = runs["on"][2].validation_records(), run_log.validation_records()
    assert [r["step"] for r in again] == [r["step"] for r in straight] == [0, 2, 4]
    for x, y in zip(straight, again, strict=True):
        assert y["x0_mse"] == pytest.approx(x["x0_mse"], abs=1e-6)


def test_training_plots_validation_series_equal_the_records(runs):
    from flowlora.nodes import plots as plot_nodes
    from flowlora.trainer_core import figures, validation

    run_log = runs["on"][2]
    records = run_log.validation_records()
    series = validation.series(records)
    chart = figures.validation_chart([("on", series)])
    assert len(chart.lines) == 3 and chart.log_y
    for j, (line, sigma) in enumerate(zip(chart.lines, (0.2, 0.5, 0.9), strict=True)):
        assert line.label == f"σ {sigma:g}" and line.colour == j
        assert line.x.tolist() == [0, 2, 4]
        assert line.y.tolist() == [r["x0_mse"][j] for r in records]

    out = plot_nodes.TrainingPlots.execute(log=run_log, log_2=runs["off"][2], window=3).result
    image = out[plot_nodes.OUTPUTS.index("validation")]
    assert image.shape == (1, 512, 768, 3)
    empty = plot_nodes.TrainingPlots.execute(log=runs["off"][2], window=3).result[plot_nodes.OUTPUTS.index("validation")]
    assert not torch.equal(image, empty)  # curves drawn, not the "no validation records" note
    # two runs with validation: colours are the bands, line styles the runs
    both = figures.validation_chart([("a", series), ("b", series)])
    assert [line.style for line in both.lines] == ["bold"] * 3 + ["dashed"] * 3 and [entry[0] for entry in both.legend] == ["a", "b"]


def test_series_refuses_mixed_grids_and_keeps_the_last_record_of_a_step():
    from flowlora.trainer_core import validation
    from flowlora.trainer_core.errors import ConfigError

    rec = [{"step": 0, "sigmas": [0.5], "x0_mse": [1.0]}, {"step": 2, "sigmas": [0.5], "x0_mse": [0.5]}, {"step": 2, "sigmas": [0.5], "x0_mse": [0.25]}]
    s = validation.series(rec)
    assert s.steps.tolist() == [0, 2] and s.x0_mse[:, 0].tolist() == [1.0, 0.25]
    assert validation.series([]) is None
    with pytest.raises(ConfigError, match=r"validation sigmas = \[0.3\]"):
        validation.series([*rec, {"step": 4, "sigmas": [0.3], "x0_mse": [0.1]}])


def test_log_and_records_paths_and_readers(tmp_path):
    from flowlora.trainer_core import logs, validation

    assert validation.records_path("/x/run.log.jsonl") == "/x/run.val.jsonl"
    path = tmp_path / "run.val.jsonl"
    for step in (0, 2, 4):
        validation.append_record(path, {"kind": "validation", "step": step, "sigmas": [0.5], "x0_mse": [step]})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"kind": "validation", "step": 6, "sig')  # torn by a kill
    assert [r["step"] for r in validation.read_records(path)] == [0, 2, 4]
    validation.trim_records(path, 2)
    assert [r["step"] for r in validation.read_records(path)] == [0]
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0]
    log = logs.TrainingLog("run", str(tmp_path / "run.log.jsonl"), "", 0)
    assert log.validation_records() == []


def test_settings_errors_name_the_field(trainer_env):
    from flowlora.nodes.validation import ValidationNode
    from flowlora.trainer_core.errors import ConfigError
    from flowlora.trainer_core.validation import ValidationConfig, parse_sigmas

    assert parse_sigmas("0.1, 0.3\n0.9") == (0.1, 0.3, 0.9)
    assert ValidationConfig(sigmas="0.5").to_dict() == {"schema": 1, "sigmas": [0.5], "seed": 0, "every_n_steps": 0, "every_percent": 10}
    for text, problem in (("0, 0.5", "outside"), ("a, b", "numbers"), ("", "at least one"), ("0.5, 0.5", "twice"), ("1.5", "outside")):
        with pytest.raises(ConfigError, match=f"^sigmas = .*{problem}"):
            parse_sigmas(text)
    assert ValidationNode.validate_inputs(sigmas="0, 1").startswith("sigmas = '0, 1'")
    assert ValidationNode.validate_inputs(every_percent=101).startswith("every_percent = 101: must lie in [0, 100]")
    config = ValidationConfig(every_percent=25)
    assert [s for s in range(0, 11) if config.due(s, 10)] == [0, 2, 4, 6, 8, 10]  # round(2.5) = 2
    assert [s for s in range(0, 11) if ValidationConfig(every_n_steps=4).due(s, 10)] == [0, 4, 8, 10]


def test_a_held_out_set_that_does_not_fit_fails_before_training_naming_the_input(runs):
    from flowlora.trainer_core.errors import ConfigError

    tiny_models, Trainer, loras = runs["env"]
    dataset, _, _ = held_out(channels=4)
    with pytest.raises(ConfigError, match=r"^validation dataset = .*latent \(4, 16, 16\).*does not fit this model \(latents of 16 channels\)"):
        Trainer.execute(model=tiny_models.tiny_zimage(0), latents=runs["latents"], positive=runs["positive"], validation=validation_node(dataset), **run_settings(output_name="val/bad"))
    assert not (loras / "val" / "bad.safetensors").exists()
