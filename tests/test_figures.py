"""Charts as data: the plotted series equal the log's numbers, and matplotlib draws exactly those series.

No pixels are compared: ``trainer_core.figures`` is checked against sums done
by hand from the log records, and ``nodes.figures.draw`` against the chart it
was given (lines, scales, limits, legend).
"""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np
import pytest
import torch
from flowlora.trainer_core import figures, plots
from flowlora.trainer_core.errors import ConfigError
from test_plots import synthetic_records

WINDOW = 121

RUNS = {
    "baseline": synthetic_records(300, seed=1),
    "logit_normal": synthetic_records(300, accumulation=2, batch=2, t_mean=0.34, seed=2),
    "dropout": synthetic_records(250, p_uncond=0.2, seed=3),
}


def by_hand(records: list[dict]) -> dict:
    """Per step, from the records alone: sample-weighted metric means, route counts; and every t."""
    sums, weights = defaultdict(lambda: defaultdict(float)), defaultdict(int)
    cond, uncond = defaultdict(int), defaultdict(int)
    for r in records:
        b = len(r["t"])
        for m in plots.METRICS:
            sums[r["step"]][m] += r[m] * b
        weights[r["step"]] += b
        cond[r["step"]] += sum(x == "cond" for x in r["route"])
        uncond[r["step"]] += sum(x != "cond" for x in r["route"])
    steps = sorted(weights)
    return {
        "steps": steps,
        **{m: [sums[s][m] / weights[s] for s in steps] for m in plots.METRICS},
        "cond": np.cumsum([cond[s] for s in steps]).tolist(),
        "uncond": np.cumsum([uncond[s] for s in steps]).tolist(),
        "t": [t for r in records for t in r["t"]],
    }


def trailing_mean(values: list[float], window: int) -> list[float]:
    return [float(np.mean(values[max(0, i - window + 1) : i + 1])) for i in range(len(values))]


@pytest.fixture(scope="module")
def charts():
    runs = [(label, plots.aggregate_steps(records)) for label, records in RUNS.items()]
    return figures.training_charts(runs, WINDOW)


# -- trainer_core.figures: the data ------------------------------------------


@pytest.mark.parametrize("metric", list(figures.CURVES))
def test_metric_chart_plots_the_logs_numbers_and_their_121_step_average(charts, metric):
    chart = charts[metric]
    faint, bold = chart.lines_in("faint"), chart.lines_in("bold")
    assert len(faint) == len(bold) == len(RUNS)  # runs overlaid: one line per run, each in its own colour
    assert [line.label for line in bold] == list(RUNS) and [line.colour for line in bold] == [0, 1, 2]
    for i, records in enumerate(RUNS.values()):
        hand = by_hand(records)
        assert faint[i].x.tolist() == bold[i].x.tolist() == hand["steps"]
        np.testing.assert_allclose(faint[i].y, hand[metric], rtol=1e-12)
        np.testing.assert_allclose(bold[i].y, trailing_mean(hand[metric], WINDOW), rtol=1e-12)
    assert chart.log_y == (metric == "v_mse")
    assert chart.x_limits == (1.0, 300.0) and f"{WINDOW}-step" in chart.notes[0]


def test_v_mse_axis_is_logarithmic_and_spans_the_bulk_not_the_spikes():
    records = synthetic_records(400, seed=5)
    for r in records[::200]:
        r["v_mse"] = 1e4  # two rare spikes (0.5%), as v-MSE has when t -> 1
    chart = figures.training_charts([("spiky", plots.aggregate_steps(records))], 21)["v_mse"]
    low, high = chart.y_limits
    values = np.array([r["v_mse"] for r in records])
    assert chart.log_y and 0 < low < values.min() and np.percentile(values, 98) < high < 1e4


def test_t_histogram_is_each_runs_share_of_sampled_t(charts):
    chart = charts["t_histogram"]
    assert len(chart.hists) == len(chart.marks) == len(RUNS)
    for i, (label, records) in enumerate(RUNS.items()):
        t = np.array(by_hand(records)["t"])
        counts, edges = np.histogram(t, bins=figures.T_BINS, range=(0, 1))
        np.testing.assert_allclose(chart.hists[i].heights, 100 * counts / len(t), rtol=1e-12)
        np.testing.assert_array_equal(chart.hists[i].edges, edges)
        assert chart.hists[i].label == f"{label}  (mean {t.mean():.3f})"
        assert chart.marks[i].x == pytest.approx(t.mean()) and chart.marks[i].dashed
    assert chart.y_limits[1] == pytest.approx(1.08 * max(float(h.heights.max()) for h in chart.hists))


def test_routes_chart_counts_cond_and_uncond_samples(charts):
    chart = charts["routes"]
    solid, dashed = chart.lines_in("bold"), chart.lines_in("dashed")
    assert len(solid) == len(dashed) == len(RUNS)
    for i, (label, records) in enumerate(RUNS.items()):
        hand = by_hand(records)
        assert solid[i].y.tolist() == hand["cond"] and dashed[i].y.tolist() == hand["uncond"]
        share = hand["uncond"][-1] / (hand["cond"][-1] + hand["uncond"][-1])
        assert solid[i].label == f"{label}: {100 * share:.1f}% uncond" and dashed[i].label == ""
    assert [entry[0] for entry in chart.legend] == ["cond", "uncond"]


def test_summary_lines_name_every_run(charts):
    runs = [(label, plots.aggregate_steps(records)) for label, records in RUNS.items()]
    lines = figures.summary_lines(runs, WINDOW)
    assert len(lines) == 2 * len(RUNS) and lines[0] == "baseline: 300 steps, 300 samples"
    assert lines[2] == "logit_normal: 300 steps, 1200 samples"  # accumulation 2 x batch 2


def test_histogram_and_bar_chart_data():
    values = np.random.default_rng(0).random(1000)
    chart = figures.histogram_chart(values, bins=20, marks={"mean": 0.5, "median": 0.4})
    (hist,) = chart.hists
    assert hist.heights.tolist() == np.histogram(values, bins=20, range=(0, 1))[0].tolist() and hist.heights.sum() == 1000
    assert [(m.label, m.x) for m in chart.marks] == [("mean", 0.5), ("median", 0.4)]
    bars = figures.bar_chart(["512x512", "768x512"], [3, 5]).bars
    assert bars.labels == ("512x512", "768x512") and bars.heights.tolist() == [3, 5]
    with pytest.raises(ConfigError, match="one label per count"):
        figures.bar_chart(["a"], [1, 2])
    with pytest.raises(ConfigError, match="line style = 'dotted'"):
        figures.Line("a", 0, np.zeros(1), np.zeros(1), "dotted")


# -- nodes.figures: matplotlib draws the data it is given ---------------------


@pytest.fixture(scope="module")
def draw(comfy_root):
    from flowlora.nodes import figures as drawing

    return drawing


def test_drawn_lines_are_the_charts_series(draw, charts):
    for name in (*figures.CURVES, "routes"):
        chart = charts[name]
        fig = draw.draw(chart)
        assert tuple(fig.get_size_inches() * fig.dpi) == draw.SIZE
        (ax,) = fig.axes
        drawn = ax.get_lines()
        assert len(drawn) == len(chart.lines)
        for line, artist in zip(chart.lines, drawn, strict=True):
            np.testing.assert_array_equal(artist.get_xdata(), line.x)
            np.testing.assert_array_equal(artist.get_ydata(), line.y)
            assert artist.get_color() == draw.colour(line.colour)
        assert ax.get_yscale() == ("log" if name == "v_mse" else "linear")
        if chart.y_limits is not None:
            np.testing.assert_allclose(ax.get_ylim(), chart.y_limits)
        (legend,) = fig.legends
        labels = [t.get_text() for t in legend.get_texts()]
        assert sorted(labels) == sorted([line.label for line in chart.lines if line.label] + [entry[0] for entry in chart.legend])


def test_drawn_histograms_marks_and_bars(draw, charts):
    fig = draw.draw(charts["t_histogram"])
    (ax,) = fig.axes
    steps = [p for p in ax.patches if type(p).__name__ == "StepPatch"]
    assert len(steps) == len(RUNS)  # outlines only when several runs are overlaid
    for hist, patch in zip(charts["t_histogram"].hists, steps, strict=True):
        np.testing.assert_array_equal(patch.get_data().values, hist.heights)
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [m.x for m in charts["t_histogram"].marks]

    chart = figures.histogram_chart(np.linspace(0, 1, 100), bins=10, marks={"mean": 0.5, "median": 0.5})
    (ax,) = draw.draw(chart).axes
    assert {t.get_text().strip() for t in ax.texts} == {"mean", "median"}

    labels = [f"{w}x512" for w in range(256, 256 + 64 * 30, 64)]
    (ax,) = draw.draw(figures.bar_chart(labels, list(range(1, 31)))).axes
    assert [p.get_height() for p in ax.patches] == list(range(1, 31))
    shown = [t.get_text() for t in ax.get_xticklabels()]
    assert shown[0] == labels[0] and 1 < len(shown) < 30 and set(shown) <= set(labels)  # thinned to stay readable


def test_render_is_an_image_tensor_and_threads_draw_alike(draw, charts):
    serial = {name: draw.render(chart) for name, chart in charts.items()}
    for image in serial.values():
        assert image.shape == (1, 512, 768, 3) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    results = {}
    threads = [threading.Thread(target=lambda n=name: results.__setitem__(n, draw.render(charts[n]))) for name in charts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(results[name], serial[name]) for name in charts)


def test_dollar_signs_in_labels_are_text_not_maths(draw):
    """A LoRA file name such as ``lora_$v2_$final`` would be a mathtext error if drawn as given."""
    steps = plots.aggregate_steps(synthetic_records(20, seed=4))
    chart = figures.training_charts([("lora_$v2_$final", steps)], 5)["x0_mse"]
    image = draw.render(chart)
    assert image.shape == (1, 512, 768, 3)
    (legend,) = draw.draw(chart).legends
    assert [t.get_text() for t in legend.get_texts()] == [r"lora_\$v2_\$final"]
