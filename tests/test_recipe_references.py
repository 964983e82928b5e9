"""The shipped recipes pinned to their references (issue 11).

References (read for facts only; nothing is copied from them):

- train_u1 = Yidhar/sensenova-u1-lora-trainer @555d1c0:
  ``train_u1/scripts/train_bf16_offload.py`` (optimizer L639-646, update L745-756),
  ``train_u1/data/u1_preprocess.py`` (resize L126), ``train_u1/data/datasets.py``
  (image/caption pairing L155-159).
- official = OpenSenseNova/SenseNova-U1 @df86ca9 (the commit train_u1 pins):
  ``src/sensenova_u1/models/neo_unify/modeling_neo_chat.py`` ``t2i_generate`` L1578
  (``t_eps=0.02``) and L1583 (it overwrites ``config.t_eps``).
- AC-RF = None9527/None_Z-image-Turbo_trainer @4d8378e (the commit whose
  ``docs/TECHNICAL_PAPER.md`` is the report v1.0): ``src/zimage_trainer/acrf_trainer.py``.

Widget values are read from the shipped ``workflows/*.json`` with each pack
node's own V1 schema (``GET_NODE_INFO_V1``), the layout the frontend uses.
"""

from __future__ import annotations

import json

import harness
import pytest
import standins  # noqa: F401  (puts scripts/ on sys.path)
import workflow_api

U1_WORKFLOWS = ("u1_baseline", "u1_a_velocity", "u1_b_logit_normal", "u1_c_dropout", "u1_d_all", "u1_ablation_all")


@pytest.fixture(scope="module")
def pack_info(comfy_root) -> dict:
    """``/object_info`` entries of the pack's nodes, built in-process."""
    from flowlora.nodes import NODES

    return {cls.GET_SCHEMA().node_id: cls.GET_NODE_INFO_V1() for cls in NODES}


def shipped(name: str) -> dict:
    return json.loads((harness.REPO / "workflows" / f"{name}.json").read_text(encoding="utf-8"))


def widgets(workflow: dict, node_type: str, info: dict) -> list[dict]:
    """``{input name: value}`` of every node of ``node_type`` in a shipped workflow."""
    found = [workflow_api.widget_values(n, info[node_type]) for n in workflow["nodes"] if n["type"] == node_type]
    assert found, f"{workflow['id']}: no {node_type}"
    return found


# ------------------------------------------------------------ item 1: U1 optimizer


@pytest.mark.parametrize("name", U1_WORKFLOWS)
def test_u1_optimizer_is_train_u1s(pack_info, name):
    """train_bf16_offload.py L639-646: betas (0.9, 0.95); L745-756: no clip_grad_norm before step()."""
    for w in widgets(shipped(name), "FlowLoRAOptimizerConfig", pack_info):
        assert w["optimizer"] == "paged_adamw8bit" and w["learning_rate"] == 5e-5
        assert (w["beta1"], w["beta2"]) == (0.9, 0.95)
        assert w["max_grad_norm"] == 0.0  # 0 = no clipping


def test_zero_max_grad_norm_means_no_clipping():
    import torch
    from flowlora.trainer_core.optim import clip_gradients

    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([30.0, 40.0, 0.0])
    norm = clip_gradients([p], 0.0)
    assert float(norm) == pytest.approx(50.0)
    assert torch.equal(p.grad, torch.tensor([30.0, 40.0, 0.0]))
