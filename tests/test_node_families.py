"""Timestep and loss nodes that show only what matters (issue 16, item 6).

One node per timestep family and per loss term, chained on the TIMESTEPS and
LOSS wires, replace the all-in-one Timestep Sampler and Loss Builder. The
checks, in-process on ComfyUI's V3 API:

- every widget of every new node changes the config it builds (none is shown
  and then ignored, which was the old nodes' fault);
- each chain builds exactly the config the old node built from the same
  settings (so old and new workflows train alike; the end-to-end run of a
  workflow saved with the old nodes is in tests/test_e2e_workflows.py);
- chaining mistakes are errors naming the field; the old nodes are marked
  deprecated (hidden from search, still loaded).
"""

from __future__ import annotations

import pytest
from test_nodes_maths import LOSS_WIDGETS, WIDGETS


@pytest.fixture(scope="module")
def nodes(comfy_root):
    from flowlora.nodes import legacy_losses, legacy_timesteps, losses, timesteps

    return timesteps, losses, legacy_timesteps, legacy_losses


def defaults(node) -> dict:
    """Widget values of ``node`` at their declared defaults (linked inputs left out)."""
    from comfy_api.latest import io

    out = {}
    for spec in node.define_schema().inputs:
        if isinstance(spec, (io.Int.Input, io.Float.Input, io.Combo.Input)):
            out[spec.id] = spec.default
    return out


def nudged(spec, value):
    """Another valid value of the widget ``spec``: one step up (or down at the top), or the next combo option."""
    from comfy_api.latest import io

    if isinstance(spec, io.Combo.Input):
        options = list(spec.options)
        return options[(options.index(value) + 1) % len(options)]
    step = spec.step or 1
    if isinstance(spec, io.Float.Input) and value != 0 and step > abs(value):
        step = abs(value) / 2  # tiny defaults (charbonnier_eps 1e-6): a relative step
    return value + step if spec.max is None or value + step <= spec.max else value - step


def config_nodes(nodes) -> list:
    timesteps, losses, _, _ = nodes
    return [n for n in timesteps.TIMESTEP_NODES if n is not timesteps.TimestepHistogram] + list(losses.LOSS_NODES)


def build(node, widgets: dict):
    """The config ``node`` outputs for ``widgets``, fed a base config where it takes one."""
    from flowlora.trainer_core import losses as ls
    from flowlora.trainer_core import timesteps as ts

    linked = {spec.id for spec in node.define_schema().inputs if spec.id in ("timesteps", "loss")}
    upstream = {"timesteps": ts.TimestepConfig(ts.LogitNormal()), "loss": ls.LossConfig({"v_mse": 1.0})}
    (config,) = node.execute(**{k: upstream[k] for k in linked}, **widgets).result
    return config


def test_every_widget_of_every_new_node_changes_its_config(nodes):
    ignored = []
    for node in config_nodes(nodes):
        base = defaults(node)
        assert node.validate_inputs(**base) is True, node.__name__
        reference = build(node, base).to_dict()
        for spec in node.define_schema().inputs:
            if spec.id not in base:
                continue
            changed = {**base, spec.id: nudged(spec, base[spec.id])}
            if build(node, changed).to_dict() == reference:
                ignored.append(f"{node.__name__}.{spec.id}")
    assert not ignored, f"widgets shown but without effect: {ignored}"


def test_new_nodes_have_few_widgets_and_the_old_ones_are_deprecated(nodes):
    timesteps, losses, legacy_timesteps, legacy_losses = nodes
    for node in [*timesteps.TIMESTEP_NODES, *losses.LOSS_NODES]:
        schema = node.define_schema()
        assert not schema.is_deprecated and schema.category.startswith("FlowLoRA/") and len(schema.inputs) <= 7, schema.node_id
        assert all(spec.tooltip for spec in schema.inputs), schema.node_id
    for node in (legacy_timesteps.TimestepSampler, legacy_losses.LossBuilder):
        assert node.GET_NODE_INFO_V1()["deprecated"] is True
    assert len(legacy_timesteps.TimestepSampler.define_schema().inputs) == 22  # what the family nodes split up


TIMESTEP_CASES = {
    # name: (the old node's widgets, [(new node, widgets), ...] in chain order)
    "u1_uniform": ({"sampler": "uniform", "sigma_max": 0.95}, [("TimestepsUniform", {"sigma_min": 0.0, "sigma_max": 0.95, "clamp_min": 0.0, "clamp_max": 1.0})]),
    "u1_logit_normal": (
        {"sampler": "logit_normal", "mean": -0.8, "std": 0.8, "space": "t", "clamp_min": 0.05, "clamp_max": 0.95},
        [("TimestepsLogitNormal", {"mean": -0.8, "std": 0.8, "space": "t", "clamp_min": 0.05, "clamp_max": 0.95})],
    ),
    "sigmoid": ({"sampler": "sigmoid", "scale": 1.3, "clamp_max": 0.9}, [("TimestepsSigmoid", {"scale": 1.3, "clamp_min": 0.0, "clamp_max": 0.9})]),
    "acrf": (
        {"sampler": "anchor_coupled", "jitter_kind": "gaussian", "clamp_min": 0.001, "clamp_max": 0.999},
        [("TimestepsAnchorCoupled", {"num_anchors": 10, "anchor_shift": 3.0, "jitter": 0.02, "jitter_kind": "gaussian", "clamp_min": 0.001, "clamp_max": 0.999})],
    ),
    "sd3_static_shift": (
        {"sampler": "logit_normal", "shift_mode": "static", "shift": 3.0},
        [("TimestepsLogitNormal", {"mean": 0.0, "std": 1.0, "space": "sigma", "clamp_min": 0.0, "clamp_max": 1.0}), ("TimestepShift", {"shift": 3.0})],
    ),
    "flux_resolution_shift": (
        {"sampler": "uniform", "shift_mode": "resolution", "base_shift": 0.5, "max_shift": 1.15},
        [("TimestepsUniform", {"sigma_min": 0.0, "sigma_max": 1.0, "clamp_min": 0.0, "clamp_max": 1.0}), ("TimestepShiftResolution", {"base_shift": 0.5, "max_shift": 1.15, "base_seq_len": 256, "max_seq_len": 4096})],
    ),
}


@pytest.mark.parametrize("case", TIMESTEP_CASES)
def test_timestep_chains_build_what_the_old_node_built(nodes, case):
    timesteps, _, legacy_timesteps, _ = nodes
    old_widgets, chain = TIMESTEP_CASES[case]
    (old, _) = legacy_timesteps.TimestepSampler.execute(**{**WIDGETS, **old_widgets}).result
    config = None
    for name, widgets in chain:
        node = getattr(timesteps, name)
        (config,) = node.execute(**({"timesteps": config} if config is not None else {}), **widgets).result
    assert config == old and config.to_dict() == old.to_dict()


LOSS_CASES = {
    "acrf": (
        {"primary": "v_charbonnier", "cosine_weight": 0.1, "fft_weight": 0.1, "fft_space": "velocity", "weighting": "min_snr", "snr_gamma": 5.0},
        [("LossCharbonnier", {"space": "velocity", "weight": 1.0, "charbonnier_eps": 1e-6, "t_eps": 0.001}), ("LossCosine", {"weight": 0.1}),
         ("LossFFT", {"space": "velocity", "weight": 0.1, "fft_norm": "ortho"}), ("LossMinSNR", {"snr_gamma": 5.0})],
    ),
    "u1_x0": ({"t_eps": 0.05}, [("LossMSE", {"space": "x0", "weight": 1.0, "t_eps": 0.05})]),
    "u1_velocity": ({"primary": "v_mse", "t_eps": 0.05}, [("LossMSE", {"space": "velocity", "weight": 1.0, "t_eps": 0.05})]),
    "huber_x0_fft_backward_cosmap": (
        {"primary": "x0_huber", "huber_delta": 0.5, "fft_weight": 0.2, "fft_space": "x0", "fft_norm": "backward", "weighting": "cosmap"},
        [("LossHuber", {"space": "x0", "weight": 1.0, "huber_delta": 0.5, "t_eps": 0.001}), ("LossFFT", {"space": "x0", "weight": 0.2, "fft_norm": "backward"}),
         ("LossWeighting", {"weighting": "cosmap"})],
    ),
}


@pytest.mark.parametrize("case", LOSS_CASES)
def test_loss_chains_build_what_the_old_node_built(nodes, case):
    _, losses, _, legacy_losses = nodes
    old_widgets, chain = LOSS_CASES[case]
    (old,) = legacy_losses.LossBuilder.execute(**{**LOSS_WIDGETS, **old_widgets}).result
    config = None
    for name, widgets in chain:
        node = getattr(losses, name)
        (config,) = node.execute(**({"loss": config} if config is not None else {}), **widgets).result
    assert config == old and list(config.terms) == list(old.terms)  # same terms in the same order: same sums


def test_chaining_mistakes_are_errors_naming_the_field(nodes):
    from flowlora.trainer_core.errors import ConfigError

    timesteps, losses, _, _ = nodes
    (anchors,) = timesteps.TimestepsAnchorCoupled.execute(**defaults(timesteps.TimestepsAnchorCoupled)).result
    with pytest.raises(ConfigError, match=r"^shift = 'static': anchor_coupled anchors already carry their shift"):
        timesteps.TimestepShift.execute(anchors, shift=3.0)
    (uniform,) = timesteps.TimestepsUniform.execute(**defaults(timesteps.TimestepsUniform)).result
    (shifted,) = timesteps.TimestepShift.execute(uniform, shift=3.0).result
    with pytest.raises(ConfigError, match=r"^timesteps = .*already has a shift"):
        timesteps.TimestepShiftResolution.execute(shifted, **defaults(timesteps.TimestepShiftResolution))

    (mse,) = losses.LossMSE.execute(space="x0", weight=1.0, t_eps=0.001).result
    (weighted,) = losses.LossMinSNR.execute(loss=mse, snr_gamma=5.0).result
    with pytest.raises(ConfigError, match=r"^weighting = 'cosmap': this loss is already weighted by min_snr"):
        losses.LossWeighting.execute(loss=weighted, weighting="cosmap")
    (cosine,) = losses.LossCosine.execute(loss=mse, weight=0.1).result
    with pytest.raises(ConfigError, match=r"^v_cosine = 0.2: this loss already has v_cosine"):
        losses.LossCosine.execute(loss=cosine, weight=0.2)
    (fft,) = losses.LossFFT.execute(loss=mse, space="velocity", weight=0.1, fft_norm="ortho").result
    with pytest.raises(ConfigError, match=r"^fft_norm = 'backward': this loss's v_fft term uses 'ortho'"):
        losses.LossFFT.execute(loss=fft, space="x0", weight=0.1, fft_norm="backward")
    (both,) = losses.LossFFT.execute(loss=fft, space="x0", weight=0.2, fft_norm="ortho").result
    assert both.terms == {"x0_mse": 1.0, "v_fft": 0.1, "x0_fft": 0.2} and both.params.fft_norm == "ortho"
    assert losses.LossMSE.validate_inputs(space="x0", weight=0.0, t_eps=0.001).startswith("terms = ")
    assert timesteps.TimestepsUniform.validate_inputs(**{**defaults(timesteps.TimestepsUniform), "sigma_min": 0.6, "sigma_max": 0.5}).startswith("sigma_min = 0.6")
