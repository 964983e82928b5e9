"""Training state files: tensor trees round-trip, shared tensors, 8-bit optimizer state."""

from __future__ import annotations

import torch
from flowlora.trainer_core import checkpoint, tensor_tree


def test_tree_round_trip_keeps_types_and_shared_tensors():
    shared = torch.arange(6.0)
    view = shared[2:4]
    tree = {0: {"exp_avg": torch.ones(3), "step": 5}, "groups": [{"betas": (0.9, 0.99), "lr": 1e-4}], "q1": shared, "q2": shared, "v": view}
    tensors, skeleton = tensor_tree.flatten(tree)
    assert set(tensors) == {"s.0.exp_avg", "s.q1", "s.v"}  # shared stored once, the view as its own copy
    back = tensor_tree.unflatten(tensors, skeleton)
    assert back[0]["step"] == 5 and back["groups"][0]["betas"] == (0.9, 0.99) and 0 in back
    assert back["q1"] is back["q2"] and torch.equal(back["v"], view)


def test_adamw8bit_state_survives_a_file_round_trip(tmp_path):
    from flowlora.trainer_core.optim import OptimizerConfig, build_optimizer

    params = [torch.nn.Parameter(torch.randn(64, 128)), torch.nn.Parameter(torch.randn(128, 64))]
    opt = build_optimizer(OptimizerConfig("adamw8bit", 1e-3), params)
    for _ in range(2):
        sum(p.square().sum() for p in params).backward()
        opt.step()
        opt.zero_grad()
    checkpoint.save_state(tmp_path / "s", {"optimizer": opt.state_dict()}, {"step": 2})
    state, info = checkpoint.load_state(tmp_path / "s")
    fresh = build_optimizer(OptimizerConfig("adamw8bit", 1e-3), [torch.nn.Parameter(p.detach().clone()) for p in params])
    fresh.load_state_dict(state["optimizer"])
    assert info == {"step": 2}
    for a, b in zip(opt.state_dict()["state"].values(), fresh.state_dict()["state"].values(), strict=True):
        for k in a:
            if isinstance(a[k], torch.Tensor):
                assert torch.equal(a[k].cpu(), b[k].cpu()), k
