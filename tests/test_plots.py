"""Training plots and image grid: the maths against hand computations, the nodes on synthetic logs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from flowlora.trainer_core import plots
from flowlora.trainer_core.errors import ConfigError
from flowlora.trainer_core.logs import TrainingLog

# -- synthetic logs -----------------------------------------------------------


def synthetic_records(steps: int, *, accumulation: int = 1, batch: int = 1, p_uncond: float = 0.0, t_mean: float = 0.5, seed: int = 0) -> list[dict]:
    """Records shaped like the trainer's: falling loss with noise, t around ``t_mean``, routes drawn with ``p_uncond``."""
    rng = np.random.default_rng(seed)
    out = []
    for step in range(1, steps + 1):
        for micro in range(accumulation):
            t = np.clip(rng.normal(t_mean, 0.15, batch), 0.01, 0.99)
            u = rng.random(batch)
            route = ["drop_text" if v < p_uncond / 2 else "drop_both" if v < p_uncond else "cond" for v in u]
            x0 = 0.2 * math.exp(-step / steps) + 0.02 * rng.random()
            out.append({
                "step": step, "micro": micro, "loss": x0 * 1.1, "x0_mse": x0, "v_mse": float(np.mean(x0 / (1 - t) ** 2)),
                "sigma": (1 - t).tolist(), "t": t.tolist(), "route": route, "sample_loss": [x0] * batch,
                "sources": [f"img{step}.png"] * batch, "lr": 1e-4, "grad_norm": 1.0,
            })
    return out


def write_log(path, records: list[dict], label: str) -> TrainingLog:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return TrainingLog(label=label, log_path=str(path), lora_path=str(path) + ".safetensors", steps=records[-1]["step"])


def record(step, micro, b, x0, route=None, t=None):
    t = t if t is not None else [0.5] * b
    return {"step": step, "micro": micro, "loss": 2 * x0, "x0_mse": x0, "v_mse": 3 * x0, "t": t, "route": route or ["cond"] * b}


# -- trainer_core.plots -------------------------------------------------------


def test_moving_average_equals_a_trailing_mean_by_hand():
    assert plots.moving_average(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 3).tolist() == [1.0, 1.5, 2.0, 3.0, 4.0]
    values = np.random.default_rng(0).normal(size=300)
    for window in (1, 7, 121, 1000):
        expected = [sum(values[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]
        got = plots.moving_average(values, window)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_moving_average_skips_non_finite_values():
    got = plots.moving_average(np.array([1.0, np.nan, 3.0, np.inf, np.nan, np.nan]), 2)
    np.testing.assert_array_equal(got[:5], [1.0, 1.0, 3.0, 3.0, np.nan])
    assert np.isnan(got[5])
    with pytest.raises(ConfigError, match="window = 0"):
        plots.moving_average(np.ones(3), 0)


def test_steps_average_their_micro_batches_by_sample():
    records = [
        record(2, 0, 1, 0.7),
        record(1, 0, 1, 0.1, t=[0.2]),
        record(1, 1, 3, 0.5, t=[0.3, 0.4, 0.6]),  # three samples: weight 3
        record(2, 1, 1, 0.3),
    ]
    s = plots.aggregate_steps(records)
    assert s.steps.tolist() == [1, 2]
    np.testing.assert_allclose(s.metrics["x0_mse"], [(0.1 + 3 * 0.5) / 4, (0.7 + 0.3) / 2], rtol=0, atol=1e-15)
    np.testing.assert_allclose(s.metrics["loss"], 2 * s.metrics["x0_mse"], rtol=1e-15)
    np.testing.assert_allclose(s.metrics["v_mse"], 3 * s.metrics["x0_mse"], rtol=1e-15)
    assert sorted(s.t.tolist()) == sorted([0.5, 0.2, 0.3, 0.4, 0.6, 0.5])
    np.testing.assert_allclose(s.smoothed("x0_mse", 2), [0.4, (0.4 + 0.5) / 2], rtol=1e-15)


def test_routing_counts_equal_hand_counts():
    routes = [["cond"], ["drop_text"], ["cond"], ["drop_both"], ["cond"]]
    records = [record(i + 1, 0, 1, 0.1, route=r) for i, r in enumerate(routes)]
    records.append(record(5, 1, 2, 0.1, route=["drop_text", "cond"]))  # accumulation: step 5 has 3 samples
    s = plots.aggregate_steps(records)
    assert s.routes["cond"].tolist() == [1, 0, 1, 0, 2]
    assert s.routes["drop_text"].tolist() == [0, 1, 0, 0, 1]
    assert s.routes["drop_both"].tolist() == [0, 0, 0, 1, 0]
    cond, uncond = s.cumulative_routes()
    assert cond.tolist() == [1, 1, 2, 2, 4]
    assert uncond.tolist() == [0, 1, 1, 2, 3]


def test_routing_share_of_a_long_synthetic_log():
    recs = synthetic_records(400, batch=2, p_uncond=0.2, seed=3)
    cond, uncond = plots.aggregate_steps(recs).cumulative_routes()
    hand_uncond = sum(r != "cond" for rec in recs for r in rec["route"])
    assert (int(cond[-1]), int(uncond[-1])) == (800 - hand_uncond, hand_uncond)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], "log = 'no records'"),
        ([{"step": 1, "t": [0.5], "route": ["cond"], "loss": 1.0, "v_mse": 1.0}], "has no 'x0_mse'"),
        ([record(1, 0, 1, 0.1, route=["dropped"])], "'dropped': unknown route; valid: cond, drop_text, drop_both"),
        ([record(1, 0, 2, 0.1, route=["cond"])], "needs one route per sample"),
    ],
)
def test_bad_records_are_named(records, message):
    with pytest.raises(ConfigError, match=message):
        plots.aggregate_steps(records)


def test_histogram_shares_and_robust_range():
    shares, edges = plots.histogram_shares(np.array([0.05, 0.15, 0.15, 0.95]), bins=10)
    np.testing.assert_allclose(shares, [0.25, 0.5, 0, 0, 0, 0, 0, 0, 0, 0.25])
    assert len(edges) == 11 and plots.histogram_shares(np.array([]), 4)[0].tolist() == [0, 0, 0, 0]
    assert plots.robust_range([np.array([1.0, 1.0])]) == (0.5, 1.5)


# -- nodes --------------------------------------------------------------------


@pytest.fixture(scope="module")
def nodes(comfy_root):
    from flowlora.nodes import charts
    from flowlora.nodes import plots as plot_nodes

    return plot_nodes, charts


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs")
    return [
        write_log(folder / "base.jsonl", synthetic_records(300, seed=1), "baseline"),
        write_log(folder / "ln.jsonl", synthetic_records(300, accumulation=2, t_mean=0.34, seed=2), "logit_normal"),
        write_log(folder / "drop.jsonl", synthetic_records(250, p_uncond=0.2, seed=3), "dropout"),
    ]


def colour_mask(image: torch.Tensor, colour) -> np.ndarray:
    pixels = (image[0].numpy() * 255).round().astype(np.int16)
    return (pixels == np.array(colour, dtype=np.int16)).all(axis=-1)


def test_plots_node_renders_every_figure(nodes, three_runs, tmp_path):
    plot_nodes, _ = nodes
    out = plot_nodes.TrainingPlots.execute(log=three_runs[0], log_2=three_runs[1], log_4=three_runs[2], window=21, labels="").result
    assert len(out) == 7 == len(plot_nodes.OUTPUTS)
    *figures, sheet, _validation = out  # validation: tests/test_validation_loss.py
    for image in figures:
        assert image.shape == (1, 512, 768, 3) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert (image == 1.0).all(dim=-1).float().mean() > 0.3 and (image < 0.5).any()  # ink on a white page
    assert sheet.shape == (1, 3 * 512, 2 * 768, 3)
    from PIL import Image

    for name, image in zip(plot_nodes.OUTPUTS, out, strict=True):
        Image.fromarray((image[0].numpy() * 255).astype(np.uint8)).save(tmp_path / f"{name}.png")


def test_plots_node_labels(nodes, three_runs):
    plot_nodes, _ = nodes
    assert plot_nodes.run_labels("", ["a", "b"]) == ["a", "b"]
    assert plot_nodes.run_labels("one\n\ntwo", ["a", "b", "c"]) == ["one", "b", "two"]
    with pytest.raises(ConfigError, match="one line per connected log \\(2\\)"):
        plot_nodes.TrainingPlots.execute(log=three_runs[0], log_2=three_runs[1], window=5, labels="x\ny\nz")


def test_plots_node_names_a_broken_log(nodes, tmp_path):
    plot_nodes, _ = nodes
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"log 'run' .*empty\.jsonl.*no micro-batch"):
        plot_nodes.TrainingPlots.execute(log=TrainingLog("run", str(empty), "", 0), window=5)


def solid(b, h, w, colour):
    return torch.tensor(colour, dtype=torch.float32).div(255).expand(b, h, w, 3).clone()


def test_grid_size_and_cells(nodes):
    plot_nodes, charts = nodes
    red, green = (200, 30, 30), (30, 160, 60)
    cols = [("images_1", solid(2, 64, 128, red)), ("images_2", solid(2, 100, 100, green))]
    grid = plot_nodes.build_grid(cols, "", "", "", 128)
    g, m = charts.GRID_GAP, charts.GRID_MARGIN
    cw, ch = 128, 64  # images_1's 2:1 aspect, long side = cell_size
    assert grid.shape == (1, 2 * m + 2 * ch + g, 2 * m + 2 * cw + g, 3)
    layout = charts.grid_layout(2, 2, (128, 64), cell_size=128)
    for r in range(2):
        x0, y0, x1, y1 = layout.cell_box(r, 0)
        assert colour_mask(grid, red)[y0:y1, x0:x1].all()
        x0, y0, x1, y1 = layout.cell_box(r, 1)  # a square in a 2:1 cell: 64 x 64, letterboxed left and right
        cell = grid[:, y0:y1, x0:x1]
        assert colour_mask(cell, green)[:, 32:96].all() and colour_mask(cell, charts.LETTERBOX)[:, :30].all()


def test_grid_with_labels_and_title(nodes, tmp_path):
    plot_nodes, charts = nodes
    cols = [(f"images_{i}", solid(3, 96, 64, charts.run_colour(i))) for i in (1, 2, 3)]
    prompts = "a forest at dusk\na wildflower meadow under a wide cyan sky with warm orange horizon light\ndandelions"
    plain = plot_nodes.build_grid(cols, "", "", "", 200)
    grid = plot_nodes.build_grid(cols, "baseline\n(a) velocity loss\n(d) full official: velocity + logit-normal + dropout", prompts, "U1 ablation: fixed prompts, seed 0", 200)
    layout = charts.grid_layout(3, 3, (64, 96), cell_size=200, column_labels=["a"] * 3, row_labels=["a"] * 3, title="t")
    assert layout.cell == (133, 200)
    assert grid.shape[2] == plain.shape[2] + layout.row_label_width + charts.GRID_GAP
    assert grid.shape[1] > plain.shape[1] + charts.GRID_TITLE_LINE + charts.GRID_LINE
    ink = colour_mask(grid, charts.INK)
    assert ink[: charts.GRID_MARGIN + 40].any() and ink[:, : layout.row_label_width].any()  # title, row labels
    from PIL import Image

    Image.fromarray((grid[0].numpy() * 255).astype(np.uint8)).save(tmp_path / "grid.png")


@pytest.mark.parametrize(
    ("columns", "column_labels", "row_labels", "message"),
    [
        ([("images_1", (2, 8, 8)), ("images_3", (3, 8, 8))], "", "", "images_3 = '3 images': images_1 has 2"),
        ([("images_1", (2, 8, 8)), ("images_2", (2, 8, 8))], "only one", "", "column_labels .* one line per connected images input \\(2: images_1, images_2\\)"),
        ([("images_1", (2, 8, 8))], "", "p1\np2\np3", "row_labels = '3 lines': .*\\(2 images per column\\)"),
    ],
)
def test_grid_bad_inputs_are_named(nodes, columns, column_labels, row_labels, message):
    plot_nodes, _ = nodes
    cols = [(name, torch.zeros(b, h, w, 3)) for name, (b, h, w) in columns]
    with pytest.raises(ConfigError, match=message):
        plot_nodes.build_grid(cols, column_labels, row_labels, "", 64)


def test_grid_node_takes_optional_inputs(nodes):
    plot_nodes, _ = nodes
    out = plot_nodes.ImageGrid.execute(images_1=torch.rand(2, 32, 32, 3), images_3=torch.rand(2, 16, 48, 3), column_labels="a\nb", cell_size=64).result
    assert out[0].shape[0] == 1 and out[0].shape[-1] == 3
    with pytest.raises(ConfigError, match="images_2"):
        plot_nodes.ImageGrid.execute(images_1=torch.rand(2, 32, 32, 3), images_2=torch.rand(1, 32, 32, 3))


def test_nodes_are_registered(nodes):
    from flowlora.nodes import NODES

    ids = {n.define_schema().node_id for n in NODES}
    assert {"FlowLoRATrainingPlots", "FlowLoRAImageGrid"} <= ids
    for node in (nodes[0].TrainingPlots, nodes[0].ImageGrid):
        assert all(i.tooltip for i in node.define_schema().inputs)
