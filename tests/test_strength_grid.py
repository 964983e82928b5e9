"""LoRA Step × Strength Grid (issue 14 item 4): a tiny real Z-Image run's kept periodic saves at strengths 0, 0.5 and 1.

A 3-step run with ``save_every = 1`` keeps ``steps/step_000001`` and
``step_000002`` beside its last save (step 3). The grid node, pointed at the
run's output_name, samples every file at every strength with two prompts;
each strength-0 cell must equal the stock KSampler on the base model, and each
other cell the stock LoraLoaderModelOnly at that strength, then KSampler and
VAE Decode, with the same seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_trainer import data, settings
from test_training_preview import SEED, prompts, tiny_vae

SIZE = 64  # pixels; latent 8 x 8
STEPS = 3
SAMPLING = dict(sampler_name="euler", scheduler="simple", steps=3, cfg=2.0, seed=SEED, width=SIZE, height=SIZE)


@pytest.fixture(scope="module")
def run(trainer_env):
    from flowlora.trainer_core import optim

    tiny_models, Trainer, loras = trainer_env
    latents, positive = data(9)
    kw = settings(steps=STEPS, save_every=1, output_name="grid/run", optimizer=optim.OptimizerConfig("adamw", 1e-2, max_grad_norm=1.0))
    Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=positive, **kw)
    return tiny_models, loras


def grid_node(model, vae, positive, negative, loras: str, strengths: str, **changes):
    from flowlora.nodes.strength_grid import LoraStrengthGrid

    widgets = {**SAMPLING, "loras": loras, "strengths": strengths, **changes}
    assert LoraStrengthGrid.validate_inputs(**widgets) is True
    return LoraStrengthGrid.execute(model=model, vae=vae, positive=positive, negative=negative, cell_size=SIZE, **widgets).result


def stock(model, vae, positive, negative, prompt: int, lora_name: str | None = None, strength: float = 1.0) -> torch.Tensor:
    """LoraLoaderModelOnly (when a LoRA is named), KSampler and VAE Decode: the stock nodes' bodies under inference_mode."""
    import nodes

    with torch.inference_mode():
        if lora_name is not None:
            (model,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, lora_name, strength)
        latent = {"samples": torch.zeros(1, 16, SIZE // 8, SIZE // 8)}
        (out,) = nodes.common_ksampler(model, SEED, 3, 2.0, "euler", "simple", [positive[prompt]], negative, latent, denoise=1.0)
        return nodes.VAEDecode().decode(vae, out)[0].clone()


def test_the_trainer_keeps_each_periodic_save_by_step(run):
    from flowlora.trainer_core import step_saves
    from flowlora.trainer_core.lora import read_metadata

    _, loras = run
    kept = step_saves.list_saves(loras / "grid" / "run" / "steps")
    assert [(step, path.name) for step, path in kept] == [(1, "step_000001.safetensors"), (2, "step_000002.safetensors")]
    assert [read_metadata(path)["flowlora.step"] for _, path in kept] == ["1", "2"]
    assert read_metadata(loras / "grid" / "run.safetensors")["flowlora.step"] == "3"


def test_grid_cells_equal_the_stock_lora_loader_and_ksampler(run):
    from flowlora.nodes import charts
    from flowlora.trainer_core import previews

    tiny_models, _ = run
    vae = tiny_vae()
    positive, negative = prompts()
    grid, images, report = grid_node(tiny_models.tiny_zimage(0), vae, positive, negative, "grid/run", "0, 0.5, 1")

    names = ["grid/run/steps/step_000001.safetensors", "grid/run/steps/step_000002.safetensors", "grid/run.safetensors"]
    strengths = (0.0, 0.5, 1.0)
    assert tuple(images.shape) == (len(names) * 2 * len(strengths), SIZE, SIZE, 3)
    cells = images.reshape(len(names) * 2, len(strengths), SIZE, SIZE, 3)
    base = [stock(tiny_models.tiny_zimage(0), vae, positive, negative, p) for p in (0, 1)]
    for f, name in enumerate(names):
        for p in (0, 1):
            row = 2 * f + p
            assert float((cells[row, 0] - base[p][0]).abs().max()) == 0.0, (name, p)  # strength 0: the base model itself
            for c, strength in enumerate(strengths[1:], 1):
                expected = stock(tiny_models.tiny_zimage(0), vae, positive, negative, p, name, strength)
                assert float((cells[row, c] - expected[0]).abs().max()) <= 1e-5, (name, strength, p)
    assert float((cells[4, 2] - cells[4, 0]).abs().max()) > 1e-4  # the step-3 LoRA shows (else the checks above prove little)

    rows = [f"step {s}, prompt {p}" for s in (1, 2, 3) for p in (0, 1)]
    layout = charts.grid_layout(6, 3, (SIZE, SIZE), cell_size=SIZE, column_labels=["strength 0", "strength 0.5", "strength 1"], row_labels=rows,
                                title=f"euler / simple, 3 steps, cfg 2, seed {SEED}")
    assert tuple(grid.shape) == (1, layout.size[1], layout.size[0], 3)
    x0, y0, x1, y1 = layout.cell_box(3, 2)
    assert np.abs(previews.to_pixels(grid[0])[y0:y1, x0:x1].astype(int) - previews.to_pixels(cells[3, 2]).astype(int)).max() <= 1
    assert report.splitlines()[0].startswith("3 LoRA file(s) x 3 strength(s) (0, 0.5, 1) x 2 prompt(s)")
    assert [line.split(" (")[0] for line in report.splitlines()[1:]] == names


def test_loras_lines_name_files_or_runs(run):
    from flowlora.nodes.strength_grid import LoraFile, resolve_loras, row_labels

    files = resolve_loras("# the middle and the end\ngrid/run/steps/step_000002.safetensors\n\ngrid/run.safetensors\n")
    assert [(f.name, f.step, f.label, f.run) for f in files] == [
        ("grid/run/steps/step_000002.safetensors", 2, "step 2", "grid/run"), ("grid/run.safetensors", 3, "step 3", "grid/run")]
    assert row_labels(files, 1) == ["step 2", "step 3"]
    other = LoraFile("styles/b.safetensors", "/x/b.safetensors", 3)
    assert row_labels([*files, other], 2) == ["step 2, prompt 0", "step 2, prompt 1", "grid/run, step 3, prompt 0", "grid/run, step 3, prompt 1",
                                              "styles/b, step 3, prompt 0", "styles/b, step 3, prompt 1"]
    assert LoraFile("x/foreign.safetensors", "/x/foreign.safetensors", None).label == "foreign.safetensors"


def test_bad_inputs_are_refused_naming_the_value(run):
    from flowlora.nodes.strength_grid import LoraStrengthGrid
    from flowlora.trainer_core.errors import ConfigError
    from safetensors.torch import save_file

    tiny_models, loras = run
    ok = {**SAMPLING, "loras": "grid/run", "strengths": "0, 1"}
    assert LoraStrengthGrid.validate_inputs(**{**ok, "strengths": "0, x"}).startswith("strengths = '0, x': 'x' is not a number")
    assert LoraStrengthGrid.validate_inputs(**{**ok, "strengths": "1, 1"}).startswith("strengths = '1, 1': '1' is given twice")
    assert LoraStrengthGrid.validate_inputs(**{**ok, "loras": "grid/run\ngrid/nope"}).startswith("loras line 2 = 'grid/nope': no run of that name in models/loras")
    assert LoraStrengthGrid.validate_inputs(**{**ok, "loras": "grid/nope.safetensors"}).startswith("loras line 1 = 'grid/nope.safetensors': no such file in models/loras")
    assert LoraStrengthGrid.validate_inputs(**{**ok, "loras": " \n"}).startswith("loras = ")
    assert LoraStrengthGrid.validate_inputs(**{**ok, "steps": 0}).startswith("steps = 0: must lie in [1, 10000]")

    save_file({"diffusion_model.nowhere.lora_A.weight": torch.zeros(4, 8), "diffusion_model.nowhere.lora_B.weight": torch.zeros(8, 4)}, str(loras / "grid" / "foreign.safetensors"))
    positive, negative = prompts()
    with pytest.raises(ConfigError, match=r"^loras = 'grid/foreign.safetensors': .*foreign.safetensors: none of its 2 keys fits this model"):
        grid_node(tiny_models.tiny_zimage(0), tiny_vae(), positive, negative, "grid/foreign.safetensors", "1")
    with pytest.raises(ConfigError, match=r"^vae = 'AutoencoderKL with 4 latent channels': does not fit the model .*LoRA Step x Strength Grid"):
        grid_node(tiny_models.tiny_zimage(0), tiny_vae(4), positive, negative, "grid/run", "0")


def test_kept_saves_and_strengths_helpers(tmp_path):
    from flowlora.trainer_core import step_saves
    from flowlora.trainer_core.errors import ConfigError

    source = tmp_path / "lora.safetensors"
    for step in (2, 4, 6):
        source.write_bytes(f"step {step}".encode())
        step_saves.keep(source, tmp_path / "steps", step)
    assert [(s, p.read_bytes()) for s, p in step_saves.list_saves(tmp_path / "steps")] == [(2, b"step 2"), (4, b"step 4"), (6, b"step 6")]
    step_saves.remove_after(tmp_path / "steps", 4)  # a run resuming at 4 saves 5, 6, ... again
    assert [s for s, _ in step_saves.list_saves(tmp_path / "steps")] == [2, 4]
    assert step_saves.list_saves(tmp_path / "none") == []

    assert step_saves.parse_strengths("0, 0.5,1") == (0.0, 0.5, 1.0)
    assert step_saves.parse_strengths("1\n-0.5 0.25") == (1.0, -0.5, 0.25)
    for bad in ("", "0, nan", "0, inf"):
        with pytest.raises(ConfigError, match=r"^strengths = "):
            step_saves.parse_strengths(bad)
