"""Few-step drift of the Training Preview (issue 14 item 5): the tiny real Z-Image and VAE of test_training_preview, CPU, fp32.

A 2-step run previewed at steps 0 and 2 with 3 sampling steps, drift measured
against 6 steps (and against 3, where it must be 0): the value at step 0 is
the stock KSampler's 3-step image against its 6-step image on the untrained
model, the values are written to the PNG text, ``previews/drift.jsonl`` and
the grid's column labels, and measuring drift leaves the training unchanged.
"""

from __future__ import annotations

import pytest
import torch
from test_trainer import data
from test_training_preview import SEED, SIZE, preview_node, prompts, recording, run_settings, tiny_vae

STEPS = 2
FEW, MANY = 3, 6


@pytest.fixture(scope="module")
def drift_runs(trainer_env):
    tiny_models, Trainer, _ = trainer_env
    vae = tiny_vae()
    positive, negative = prompts()
    latents, train_positive = data(9)
    kw = run_settings(steps=STEPS)
    out = {}
    with recording() as (decoded, _, _):
        for name, drift_steps in (("many", MANY), ("same", FEW)):
            preview = preview_node(vae, positive, negative, steps=FEW, every_n_steps=2, drift_steps=drift_steps)
            out[name] = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=train_positive, preview=preview, **{**kw, "output_name": f"drift/{name}"}).result
    out["plain"] = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=train_positive, **{**kw, "output_name": "drift/plain"}).result
    return dict(env=trainer_env, vae=vae, positive=positive, negative=negative, decoded=decoded, **out)


def stock(model, vae, positive, negative, prompt: int, steps: int) -> torch.Tensor:
    """KSampler + VAE Decode node bodies: IMAGE (1, SIZE, SIZE, 3)."""
    import nodes

    latent = {"samples": torch.zeros(1, 16, SIZE // 8, SIZE // 8)}
    with torch.inference_mode():
        (out,) = nodes.common_ksampler(model, SEED, steps, 2.0, "euler", "simple", [positive[prompt]], negative, latent, denoise=1.0)
        return nodes.VAEDecode().decode(vae, out)[0].clone()


def test_drift_equals_the_stock_few_step_against_many_step_difference_and_is_recorded(drift_runs):
    from flowlora.trainer_core import previews

    tiny_models, _, loras = drift_runs["env"]
    vae, positive, negative = drift_runs["vae"], drift_runs["positive"], drift_runs["negative"]
    folder = loras / "drift" / "many" / "previews"
    records = previews.read_drift(folder)
    assert [(r["step"], r["steps"], r["drift_steps"]) for r in records] == [(0, FEW, MANY), (2, FEW, MANY)]

    base = tiny_models.tiny_zimage(0)
    expected = [previews.drift(stock(base, vae, positive, negative, p, FEW), stock(base, vae, positive, negative, p, MANY)) for p in (0, 1)]
    assert min(expected) > 1e-8  # 3 and 6 Euler steps do differ on this model (the tiny random VAE gives faint images)
    assert records[0]["drift"] == pytest.approx(expected, rel=1e-4)
    assert records[0]["mean"] == pytest.approx(sum(expected) / 2, rel=1e-4)
    assert all(d > 0 for d in records[1]["drift"])

    text = previews.read_text(folder / "step_000002_p1.png")
    assert text["flowlora.drift_steps"] == str(MANY) and float(text["flowlora.drift"]) == pytest.approx(records[1]["drift"][1], rel=1e-5)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["drift.jsonl", *(f"step_{s:06d}_p{p}.png" for s in (0, 2) for p in (0, 1))])


def test_drift_is_zero_when_drift_steps_equals_steps(drift_runs):
    from flowlora.trainer_core import previews

    _, _, loras = drift_runs["env"]
    records = previews.read_drift(loras / "drift" / "same" / "previews")
    assert [r["step"] for r in records] == [0, 2]
    assert all(d == 0.0 for r in records for d in r["drift"])


def test_drift_shows_in_the_grid_labels_and_leaves_training_unchanged(drift_runs):
    from flowlora.nodes import charts
    from flowlora.nodes.preview import column_label
    from flowlora.trainer_core import previews
    from safetensors.torch import load_file

    _, _, loras = drift_runs["env"]
    means = {r["step"]: r["mean"] for r in previews.read_drift(loras / "drift" / "many" / "previews")}
    assert column_label(2, means[2]) == f"step 2, drift {means[2]:.3g}" and column_label(2) == "step 2"
    grid = drift_runs["many"][3]
    layout = charts.grid_layout(2, 2, (SIZE, SIZE), cell_size=SIZE, column_labels=[column_label(s, means[s]) for s in (0, 2)], row_labels=["prompt 0", "prompt 1"],
                                title=f"many: euler / simple, {FEW} steps, cfg 2, seed {SEED}; drift: mean squared difference from {MANY} steps")
    assert tuple(grid.shape) == (1, layout.size[1], layout.size[0], 3)

    plain = load_file(drift_runs["plain"][1])
    for name in ("many", "same"):
        lora = load_file(drift_runs[name][1])
        assert lora.keys() == plain.keys()
        assert max(float((lora[k] - plain[k]).abs().max()) for k in lora) <= 1e-6, name
    # each preview decodes the few-step image, then the drift_steps one
    assert len(drift_runs["decoded"]) == 2 * 2 * 2 * 2  # runs x previewed steps x (few, many) x prompts


def test_drift_function_and_records_resume(tmp_path):
    from flowlora.trainer_core import previews

    a = torch.zeros(1, 4, 4, 3)
    b = torch.full((1, 4, 4, 3), 0.5)
    assert previews.drift(a, a) == 0.0
    assert previews.drift(a, b) == pytest.approx(0.25)  # [0, 1] image units, as the ablation's drift column
    with pytest.raises(ValueError, match="differ in shape"):
        previews.drift(a, b[:, :2])
    for step in (0, 2, 4):
        previews.append_drift(tmp_path, previews.drift_record(step, 8, 32, [0.1 * step, 0.3]))
    previews.trim_drift(tmp_path, 2)  # a run resuming at 2 measures step 2 again
    assert [r["step"] for r in previews.read_drift(tmp_path)] == [0]
    assert previews.read_drift(tmp_path / "none") == []


def test_drift_steps_is_optional_and_validated(comfy_root):
    from flowlora.nodes.preview import TrainingPreview

    spec = {i.id: i for i in TrainingPreview.define_schema().inputs}
    assert spec["drift_steps"].optional and spec["drift_steps"].default == 0
    names = list(spec)
    assert all(spec[n].optional for n in names[names.index("drift_steps"):])  # appended last and optional: saved workflows load
    assert TrainingPreview.validate_inputs(drift_steps=-1).startswith("drift_steps = -1: must lie in [0, 10000]")
