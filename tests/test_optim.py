"""Optimizers, lr schedules, clipping, accumulation and the Optimizer Config node."""

from __future__ import annotations

import copy
import json
import math
import sys

import pytest
import torch
from flowlora.trainer_core import optim, schedules
from flowlora.trainer_core.errors import ConfigError
from flowlora.trainer_core.optim import OptimizerConfig

C45 = 0.5 * (1.0 + math.cos(math.pi / 4))  # 0.8535533905932737
C135 = 0.5 * (1.0 - math.cos(math.pi / 4))  # 0.14644660940672624


def factors(config: OptimizerConfig, total: int, steps) -> list[float]:
    return [schedules.lr_factor(k, total, config) for k in steps]


# ----------------------------------------------------------- lr_factor tables


SCHEDULE_TABLES = [
    # (config, total updates, {step: factor}), factors worked out by hand
    (OptimizerConfig(schedule="constant"), 5, {0: 1.0, 1: 1.0, 4: 1.0, 5: 1.0, 50: 1.0}),
    (OptimizerConfig(schedule="constant", warmup_steps=4), 10, {0: 0.0, 1: 0.25, 2: 0.5, 3: 0.75, 4: 1.0, 9: 1.0, 10: 1.0}),
    (OptimizerConfig(schedule="linear"), 4, {0: 1.0, 1: 0.75, 2: 0.5, 3: 0.25, 4: 0.0, 7: 0.0}),
    (OptimizerConfig(schedule="linear", min_lr_ratio=0.1), 4, {0: 1.0, 1: 0.775, 2: 0.55, 3: 0.325, 4: 0.1, 9: 0.1}),
    (OptimizerConfig(schedule="linear", warmup_steps=2), 6, {0: 0.0, 1: 0.5, 2: 1.0, 3: 0.75, 4: 0.5, 6: 0.0}),
    (OptimizerConfig(schedule="cosine", warmup_steps=2), 10, {0: 0.0, 1: 0.5, 2: 1.0, 4: C45, 6: 0.5, 8: C135, 10: 0.0, 12: 0.0}),
    # AC-RF: eta_max 1e-4, eta_min 1e-6 -> floor 0.01
    (OptimizerConfig(schedule="cosine", min_lr_ratio=0.01), 4, {0: 1.0, 2: 0.505, 4: 0.01, 5: 0.01}),
    # two hard restarts over 8 updates: waves on [0, 4) and [4, 8)
    (OptimizerConfig(schedule="cosine_with_restarts", num_cycles=2), 8, {0: 1.0, 1: C45, 2: 0.5, 3: C135, 4: 1.0, 5: C45, 6: 0.5, 7: C135, 8: 0.0, 9: 0.0}),
    # three waves over 9 updates: cos(pi/3) and cos(2 pi/3) inside, restarts exactly at 3 and 6
    (OptimizerConfig(schedule="cosine_with_restarts", num_cycles=3), 9, {0: 1.0, 1: 0.75, 2: 0.25, 3: 1.0, 4: 0.75, 5: 0.25, 6: 1.0, 8: 0.25, 9: 0.0}),
    # warmup 1 then the same three waves with a 0.1 floor: 0.1 + 0.9 * value
    (OptimizerConfig(schedule="cosine_with_restarts", num_cycles=3, warmup_steps=1, min_lr_ratio=0.1), 10, {0: 0.0, 1: 1.0, 2: 0.775, 3: 0.325, 4: 1.0, 7: 1.0, 9: 0.325, 10: 0.1}),
]


@pytest.mark.parametrize("config, total, table", SCHEDULE_TABLES, ids=lambda x: x.describe() if isinstance(x, OptimizerConfig) else None)
def test_lr_factor_matches_hand_computed_table(config, total, table):
    got = factors(config, total, table)
    assert got == pytest.approx(list(table.values()), abs=1e-12)


def test_one_cycle_of_restarts_is_cosine_and_restart_boundaries_are_exact():
    cos = OptimizerConfig(schedule="cosine", warmup_steps=3, min_lr_ratio=0.05)
    one = OptimizerConfig(schedule="cosine_with_restarts", warmup_steps=3, min_lr_ratio=0.05, num_cycles=1)
    assert factors(cos, 103, range(110)) == factors(one, 103, range(110))
    # 7 cycles over 700 updates: every boundary 100 * c is a restart to exactly 1
    seven = OptimizerConfig(schedule="cosine_with_restarts", num_cycles=7)
    assert factors(seven, 700, range(0, 700, 100)) == [1.0] * 7
    assert all(f < 1.0 for f in factors(seven, 700, range(1, 100)))


def test_lr_factor_is_deterministic_and_in_range():
    for name in schedules.SCHEDULES:
        config = OptimizerConfig(schedule=name, warmup_steps=5, num_cycles=3, min_lr_ratio=0.2)
        first = factors(config, 50, range(60))
        assert first == factors(config, 50, range(60))
        assert all(0.0 <= f <= 1.0 for f in first)
        assert all(f >= 0.2 for f in first[5:]), name


# ------------------------------------------------------------------ scheduler


def test_scheduler_sets_group_lrs_from_the_factor():
    config = OptimizerConfig(lr=1e-3, schedule="cosine", warmup_steps=2)
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    opt = optim.build_optimizer(config, [{"params": [a]}, {"params": [b], "lr": 4e-3}])
    sched = optim.build_scheduler(config, opt, 10)
    seen = []
    for _ in range(11):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    fs = factors(config, 10, range(11))
    assert [a for a, _ in seen] == pytest.approx([1e-3 * f for f in fs], rel=1e-12, abs=1e-18)
    assert [b for _, b in seen] == pytest.approx([4e-3 * f for f in fs], rel=1e-12, abs=1e-18)
    assert seen[0] == [0.0, 0.0] and seen[2] == pytest.approx([1e-3, 4e-3])


def quadratic_run(config, updates, start=None, state=None, total=10):
    """Updates on 0.5 * |p - target|^2, 8192 float32 elements, seeded."""
    gen = torch.Generator().manual_seed(3)
    target = torch.randn(8192, generator=gen)
    p = torch.nn.Parameter(torch.randn(8192, generator=gen) if start is None else start.clone())
    opt = optim.build_optimizer(config, [p])
    sched = optim.build_scheduler(config, opt, total)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    lrs = []
    for _ in range(updates):
        opt.zero_grad()
        (0.5 * (p - target).pow(2).sum()).backward()
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    saved = {"optimizer": copy.deepcopy(opt.state_dict()), "scheduler": copy.deepcopy(sched.state_dict())}
    return p.detach().clone(), lrs, saved


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
@pytest.mark.parametrize("name", ["adamw", "adamw8bit", "paged_adamw8bit", "adafactor", "sgd"])
def test_scheduler_state_round_trip_continues_the_straight_run(name):
    config = OptimizerConfig(name, lr=0.05, schedule="cosine_with_restarts", num_cycles=2, warmup_steps=2, min_lr_ratio=0.1)
    straight, straight_lrs, _ = quadratic_run(config, 10)
    half, first_lrs, saved = quadratic_run(config, 5)
    json.dumps(saved["scheduler"])  # plain data, safe for a JSON/safetensors-metadata checkpoint
    assert saved["scheduler"]["last_epoch"] == 5
    resumed, second_lrs, _ = quadratic_run(config, 5, start=half, state=saved)
    assert first_lrs + second_lrs == straight_lrs
    assert torch.equal(resumed, straight)


def test_scheduler_refuses_warmup_longer_than_training():
    config = OptimizerConfig(warmup_steps=10)
    opt = optim.build_optimizer(config, [torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ConfigError, match=r"^warmup_steps = 10: must be below the number of optimizer updates \(10\)"):
        optim.build_scheduler(config, opt, 10)
    with pytest.raises(ConfigError, match=r"^total_steps = 0"):
        optim.build_scheduler(OptimizerConfig(), opt, 0)


# ----------------------------------------------------------------- optimizers


LR = {"adamw": 0.05, "adamw8bit": 0.05, "paged_adamw8bit": 0.05, "adafactor": 0.05, "sgd": 0.1}


def descend(name: str, steps: int = 30) -> tuple[list[float], torch.nn.Parameter, torch.optim.Optimizer]:
    """``steps`` updates of 0.5 * |p - target|^2 over 8192 float32 elements
    (above bitsandbytes' 4096-element threshold, so 8-bit state is used)."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(8192, generator=gen)
    p = torch.nn.Parameter(torch.randn(8192, generator=gen))
    opt = optim.build_optimizer(OptimizerConfig(name, LR[name], weight_decay=0.0), [p])
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * (p - target).pow(2).sum()
        loss.backward()
        losses.append(float(loss.detach()))
        opt.step()
    return losses, p, opt


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
@pytest.mark.parametrize("name", optim.OPTIMIZERS.names())
def test_each_optimizer_descends_a_quadratic_deterministically(name):
    losses, p, opt = descend(name)
    again, q, _ = descend(name)
    assert losses == again and torch.equal(p, q)  # bit-identical reruns
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    assert all(math.isfinite(x) for x in losses)
    if name.endswith("8bit"):
        state = opt.state[p]
        assert state["state1"].dtype == torch.uint8 and state["state2"].dtype == torch.uint8  # really 8-bit on CPU


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
@pytest.mark.parametrize("name", ["adamw8bit", "paged_adamw8bit"])
def test_8bit_adamw_follows_adamw_closely(name):
    ref, _, _ = descend("adamw", 20)
    got, _, _ = descend(name, 20)
    assert got == pytest.approx(ref, rel=0.02)


def test_optimizer_reads_config_fields():
    p = torch.nn.Parameter(torch.zeros(3))
    adamw = optim.build_optimizer(OptimizerConfig("adamw", 2e-4, betas=(0.8, 0.95), weight_decay=0.1, eps=1e-6), [p]).param_groups[0]
    assert (adamw["lr"], adamw["betas"], adamw["weight_decay"], adamw["eps"]) == (2e-4, (0.8, 0.95), 0.1, 1e-6)
    sgd = optim.build_optimizer(OptimizerConfig("sgd", 0.3, momentum=0.5, weight_decay=0.0), [p]).param_groups[0]
    assert (sgd["lr"], sgd["momentum"], sgd["weight_decay"]) == (0.3, 0.5, 0.0)
    ada = optim.build_optimizer(OptimizerConfig("adafactor", 0.02, weight_decay=0.05), [p])
    assert isinstance(ada, torch.optim.Adafactor) and (ada.param_groups[0]["lr"], ada.param_groups[0]["weight_decay"]) == (0.02, 0.05)


def test_empty_parameter_list_is_refused():
    with pytest.raises(ConfigError, match=r"^params = 0: nothing to optimise"):
        optim.build_optimizer(OptimizerConfig(), [])
    with pytest.raises(ConfigError, match=r"^params = 0"):
        optim.build_optimizer(OptimizerConfig(), [{"params": []}])


def test_8bit_without_bitsandbytes_names_the_optimizer_and_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=r"^optimizer = 'adamw8bit': needs bitsandbytes.*pip install bitsandbytes.*adamw"):
        optim.build_optimizer(OptimizerConfig("adamw8bit"), [torch.nn.Parameter(torch.zeros(3))])


def test_8bit_that_cannot_step_on_the_device_fails_at_build_time(monkeypatch):
    import bitsandbytes as bnb

    class Broken(torch.optim.SGD):
        def __init__(self, params, lr, **kw):
            super().__init__(params, lr=lr)

        def step(self, closure=None):
            raise RuntimeError("no kernel for cpu")

    monkeypatch.setattr(bnb.optim, "PagedAdamW8bit", Broken)
    with pytest.raises(ConfigError, match=r"^optimizer = 'paged_adamw8bit': bitsandbytes cannot run it on cpu tensors here \(RuntimeError: no kernel for cpu\).*choose adamw"):
        optim.build_optimizer(OptimizerConfig("paged_adamw8bit"), [torch.nn.Parameter(torch.zeros(3))])


# ------------------------------------------------------------------- clipping


def grads_of(*values):
    params = []
    for v in values:
        p = torch.nn.Parameter(torch.zeros(len(v), dtype=torch.float64))
        p.grad = torch.tensor(v, dtype=torch.float64)
        params.append(p)
    return params


def test_clip_gradients_returns_the_norm_before_clipping_and_clips():
    params = [*grads_of([3.0, 4.0], [12.0]), torch.nn.Parameter(torch.zeros(2))]  # last has no grad
    assert optim.clip_gradients(params, 1.0) == pytest.approx(13.0, abs=1e-12)
    scale = 1.0 / (13.0 + 1e-6)
    assert torch.allclose(params[0].grad, torch.tensor([3.0, 4.0], dtype=torch.float64) * scale, rtol=1e-12)
    assert torch.allclose(params[1].grad, torch.tensor([12.0], dtype=torch.float64) * scale, rtol=1e-12)
    assert optim.clip_gradients(params, 0.0) == pytest.approx(1.0, abs=1e-6)  # the clipped norm


@pytest.mark.parametrize("max_norm", [0.0, 100.0])
def test_clip_gradients_leaves_small_or_unclipped_gradients_alone(max_norm):
    params = grads_of([3.0, 4.0], [12.0])
    assert optim.clip_gradients(params, max_norm) == 13.0
    assert params[0].grad.tolist() == [3.0, 4.0] and params[1].grad.tolist() == [12.0]


def test_clip_gradients_reports_non_finite_norm_without_touching_gradients():
    params = grads_of([float("inf"), 1.0], [2.0])
    assert optim.clip_gradients(params, 1.0) == float("inf")
    assert params[1].grad.tolist() == [2.0]
    assert optim.clip_gradients([torch.nn.Parameter(torch.zeros(2))], 1.0) == 0.0


# --------------------------------------------------------------- accumulation


def test_accumulation_windows():
    assert [m for m in range(10) if optim.is_update_step(m, 4, 10)] == [3, 7, 9]
    assert [m for m in range(10) if optim.is_update_step(m, 4)] == [3, 7]
    assert [m for m in range(5) if optim.is_update_step(m, 1, 5)] == [0, 1, 2, 3, 4]
    assert optim.update_count(10, 4) == 3 and optim.update_count(8, 4) == 2 and optim.update_count(5, 1) == 5
    assert [optim.loss_scale(m, 4, 10) for m in range(10)] == [0.25] * 8 + [0.5] * 2


def test_accumulated_micro_batches_give_the_mean_gradient_of_the_window():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)

    def per_sample_loss(rows):
        return (rows @ w).sin()

    grads = []
    for m in range(6):  # accumulation 4 over 6 micro-batches: windows [0..3] and [4, 5]
        (per_sample_loss(x[m : m + 1]).mean() * optim.loss_scale(m, 4, 6)).backward()
        if optim.is_update_step(m, 4, 6):
            grads.append(w.grad.clone())
            w.grad = None
    for rows, got in zip((x[:4], x[4:]), grads, strict=True):
        (expect,) = torch.autograd.grad(per_sample_loss(rows).mean(), w)
        assert torch.allclose(got, expect, rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(optimizer="adam9bit"), "optimizer"),
        (dict(schedule="cosine_restarts"), "schedule"),
        (dict(lr=0.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(betas=(1.0, 0.999)), "beta1"),
        (dict(betas=(0.9, -0.1)), "beta2"),
        (dict(betas=(0.9,)), "betas"),
        (dict(weight_decay=-0.01), "weight_decay"),
        (dict(eps=0.0), "eps"),
        (dict(momentum=1.0), "momentum"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(warmup_steps=2.5), "warmup_steps"),
        (dict(num_cycles=0), "num_cycles"),
        (dict(min_lr_ratio=1.5), "min_lr_ratio"),
        (dict(max_grad_norm=-1.0), "max_grad_norm"),
        (dict(grad_accumulation=0), "grad_accumulation"),
    ],
)
def test_bad_config_raises_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        OptimizerConfig(**kwargs)
    assert e.value.field == field and str(e.value).startswith(f"{field} = ")


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown optimizer; valid: adamw, adamw8bit, paged_adamw8bit, adafactor, sgd$"):
        OptimizerConfig(optimizer="adam")
    with pytest.raises(ConfigError, match=r"unknown lr schedule; valid: constant, linear, cosine, cosine_with_restarts$"):
        OptimizerConfig(schedule="exp")


def test_config_dict_round_trip_and_tolerance():
    config = OptimizerConfig("adamw8bit", 1e-4, (0.9, 0.99), 0.0, 1e-8, 0.0, "cosine_with_restarts", 10, 3, 0.01, 0.5, 4)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["schema"] == 1 and data["betas"] == [0.9, 0.99]
    assert OptimizerConfig.from_dict(data) == config
    assert OptimizerConfig.from_dict({"schema": 1, "lr": 5e-5}) == OptimizerConfig(lr=5e-5)  # missing -> defaults
    with pytest.raises(ConfigError, match=r"^optimizer config = \['learning_rate'\]: unknown settings"):
        OptimizerConfig.from_dict({"schema": 1, "learning_rate": 1e-4})
    with pytest.raises(ConfigError, match=r"^schema = 2: .*update the pack"):
        OptimizerConfig.from_dict({"schema": 2})


def test_describe():
    assert OptimizerConfig().describe() == "adamw lr=0.0001 constant clip=1"
    acrf = OptimizerConfig("adamw8bit", 1e-4, schedule="cosine_with_restarts", num_cycles=2, warmup_steps=10, min_lr_ratio=0.01, max_grad_norm=0.0, grad_accumulation=4)
    assert acrf.describe() == "adamw8bit lr=0.0001 cosine_with_restarts cycles=2 warmup=10 min_ratio=0.01 no clip accum=4"


# ----------------------------------------------------------------------- node

NODE_WIDGETS = dict(
    optimizer="adamw8bit", learning_rate=1e-4, beta1=0.9, beta2=0.999, weight_decay=0.01, eps=1e-8, momentum=0.9,
    schedule="cosine_with_restarts", warmup_steps=0, num_cycles=3, min_lr_ratio=0.01, max_grad_norm=1.0, grad_accumulation=4,
)


@pytest.fixture(scope="module")
def node(comfy_root):
    from flowlora.nodes import NODES
    from flowlora.nodes.optimizer import OptimizerConfigNode

    assert OptimizerConfigNode in NODES
    return OptimizerConfigNode


def test_node_builds_the_config(node):
    (config,) = node.execute(**NODE_WIDGETS).result
    assert config == OptimizerConfig("adamw8bit", 1e-4, (0.9, 0.999), 0.01, 1e-8, 0.9, "cosine_with_restarts", 0, 3, 0.01, 1.0, 4)
    assert node.validate_inputs(**NODE_WIDGETS) is True


def test_node_validate_inputs_returns_the_config_error(node):
    # the widget's declared range first (ComfyUI skips it for validate_inputs' inputs), then the config's own rules
    assert node.validate_inputs(**{**NODE_WIDGETS, "beta1": 1.0}) == "beta1 = 1.0: must lie in [0, 0.9999]"
    assert node.validate_inputs(**{**NODE_WIDGETS, "num_cycles": 0}) == "num_cycles = 0: must lie in [1, 1000]"
    assert node.validate_inputs(**{**NODE_WIDGETS, "optimizer": "lion"}).startswith("optimizer = 'lion': must be one of adamw, adamw8bit")


def test_node_dropdowns_come_from_the_registries(node):
    inputs = {i.id: i for i in node.define_schema().inputs}
    assert inputs["optimizer"].options == optim.OPTIMIZERS.names()
    assert inputs["schedule"].options == optim.SCHEDULES.names()
    assert all(i.tooltip for i in inputs.values())
    assert set(inputs) == set(NODE_WIDGETS)
    assert node.define_schema().outputs[0].io_type == "FLOWLORA_OPTIMIZER"
