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


# ------------------------------------------------------- item 2: U1 preprocessing

ZIMAGE_WORKFLOWS = ("acrf_zimage_turbo", "demo_tiny")


@pytest.mark.parametrize("name", U1_WORKFLOWS)
def test_u1_dataset_preprocesses_as_train_u1(pack_info, name):
    """u1_preprocess.py L121-126: nearest official bucket, stretched, small images enlarged, Pillow's
    default filter (bicubic); datasets.py L155-159: images without a .txt are not used."""
    (w,) = widgets(shipped(name), "FlowLoRADataset", pack_info)
    assert (w["bucket_mode"], w["bucket_step"], w["crop"]) == ("sensenova_u1", 32, "stretch")
    assert w["allow_upscale"] is True
    assert w["resize_filter"] == "bicubic"
    assert w["missing_caption"] == "skip"


@pytest.mark.parametrize("name", ZIMAGE_WORKFLOWS)
def test_other_models_keep_the_pack_defaults(pack_info, name):
    (w,) = widgets(shipped(name), "FlowLoRADataset", pack_info)
    assert (w["allow_upscale"], w["resize_filter"], w["missing_caption"]) == (False, "auto", "default")


def test_dataset_node_defaults_are_the_packs(pack_info):
    inputs = pack_info["FlowLoRADataset"]["input"]
    assert inputs["optional"]["resize_filter"][1]["default"] == "auto"
    assert inputs["required"]["allow_upscale"][1]["default"] is False
    assert inputs["required"]["missing_caption"][1]["default"] == "default"
    # appended last, so widgets_values of graphs saved before it keep their order
    layout = [w.name for w in workflow_api.widget_layout(pack_info["FlowLoRADataset"])]
    assert layout[-1] == "resize_filter"


@pytest.mark.parametrize(("size", "target"), [((300, 200), (640, 416)), ((1000, 700), (320, 224))])
def test_bicubic_filter_is_pillows_default_resize(size, target):
    """train_u1 calls ``img.resize((W, H))`` without a filter: Pillow's default (bicubic for RGB)."""
    import numpy as np
    from flowlora.trainer_core.data import buckets as bk
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    plan = bk.Plan(bk.Bucket(*target), target, 0, 0)
    ours = np.asarray(bk.apply(image, plan, "bicubic"))
    assert np.array_equal(ours, np.asarray(image.resize(target)))
    assert np.array_equal(ours, np.asarray(image.resize(target, Image.Resampling.BICUBIC)))
    if target[0] < size[0]:  # the pack's auto filter differs when shrinking (Lanczos)
        assert not np.array_equal(np.asarray(bk.apply(image, plan, "auto")), ours)


def test_u1_settings_enlarge_a_1024_image_to_the_2048_bucket():
    from flowlora.trainer_core.data import buckets as bk

    u1 = bk.BucketConfig("sensenova_u1", step=32, allow_upscale=True, crop="stretch", resize_filter="bicubic")
    plan = bk.plan(1024, 1024, u1, u1.buckets())
    assert plan == bk.Plan(bk.Bucket(2048, 2048), (2048, 2048), 0, 0)
    pack = bk.BucketConfig("sensenova_u1", step=32, crop="stretch")
    assert bk.plan(1024, 1024, pack, pack.buckets()).bucket == bk.Bucket(1024, 1024)


def test_u1_dataset_skips_caption_less_images_and_keys_the_cache_by_filter(tmp_path):
    import torch
    from flowlora.trainer_core.data import buckets as bk
    from flowlora.trainer_core.data.captions import CaptionConfig
    from flowlora.trainer_core.data.prepare import DatasetConfig, Encoders, prepare
    from PIL import Image

    folder = tmp_path / "data"
    folder.mkdir()
    for name, colour in (("a", (200, 10, 10)), ("b", (10, 200, 10))):
        Image.new("RGB", (96, 64), colour).save(folder / f"{name}.png")
    (folder / "a.txt").write_text("a red card", encoding="utf-8")
    sizes = []

    def encode_image(pixels):
        sizes.append(tuple(pixels.shape[1:3]))
        return pixels.mean(dim=(1, 2))

    encoders = Encoders(encode_image, lambda text: torch.tensor([float(len(text))]), "img", "txt")
    u1 = DatasetConfig(CaptionConfig(missing="skip"), bk.BucketConfig("sensenova_u1", step=32, allow_upscale=True, crop="stretch", resize_filter="bicubic"))
    dataset = prepare(folder, u1, encoders, tmp_path / "cache")
    assert [s.source.name for s in dataset.samples] == ["a.png"]
    assert [(p.rsplit("/", 1)[-1], why) for p, why in dataset.skipped] == [("b.png", "no caption file (missing_caption = skip)")]
    assert sizes == [(1664, 2496)]  # H x W of the 2496x1664 official bucket (aspect 1.5), enlarged from 96x64
    assert dataset.settings["buckets"]["resize_filter"] == "bicubic"

    pack = DatasetConfig(CaptionConfig(), bk.BucketConfig("sensenova_u1", step=32, allow_upscale=True, crop="stretch"))
    again = prepare(folder, pack, encoders, tmp_path / "cache")  # same geometry, other filter: a new encode
    assert len(again) == 2 and again.samples[1].prompt == "" and len(sizes) == 3


# ------------------------------------------------------------- item 3: U1 t_eps


def test_u1_loader_samples_with_the_official_t_eps(pack_info):
    """modeling_neo_chat.py L1578: ``t2i_generate(..., t_eps=0.02, ...)``; L1583 writes it into config.t_eps."""
    assert pack_info["FlowLoRAU1Loader"]["input"]["required"]["t_eps"][1]["default"] == 0.02


@pytest.mark.parametrize("name", U1_WORKFLOWS)
def test_u1_workflows_sample_at_002_and_train_at_005(pack_info, name):
    workflow = shipped(name)
    assert [w["t_eps"] for w in widgets(workflow, "FlowLoRAU1Loader", pack_info)] == [0.02]
    assert {w["t_eps"] for w in widgets(workflow, "FlowLoRALossMSE", pack_info)} == {0.05}


def test_training_losses_do_not_depend_on_the_sampling_t_eps(comfy_root):
    """The trainer's x0 (``flowlora_network_x0``) is the network's own x0_hat whatever the loader's t_eps,
    so velocity losses divide by the loss node's training t_eps (0.05) only."""
    import torch
    from flowlora.nodes.u1.model import U1ModelSampling
    from flowlora.trainer_core.losses import LossConfig
    from tiny_u1 import tiny_config

    g = torch.Generator().manual_seed(0)
    x0, eps, x0_hat = (torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    sigma = torch.tensor([0.01, 0.03, 0.2, 0.9], dtype=torch.float64)
    x = (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * eps
    loss = LossConfig({"v_mse": 1.0}, t_eps=0.05)
    results = {}
    for t_eps in (0.02, 0.05):
        sampling = U1ModelSampling(tiny_config(), 3.0, t_eps)
        denoised = sampling.calculate_denoised(sigma, x0_hat, x)
        trained_on = sampling.flowlora_network_x0(sigma, denoised, x)
        torch.testing.assert_close(trained_on, x0_hat, rtol=1e-12, atol=1e-12)
        results[t_eps] = loss(x0, eps, sigma, trained_on)
        # sampling: the Euler step's velocity is (x0_hat - z) / max(sigma, t_eps)
        v = (x - denoised) / sigma.view(-1, 1, 1, 1)
        torch.testing.assert_close(v, (x - x0_hat) / sigma.clamp(min=t_eps).view(-1, 1, 1, 1))
    torch.testing.assert_close(results[0.02].v_mse, results[0.05].v_mse)
    expected = ((x0_hat - x0).square().flatten(1).mean(1) / sigma.clamp(min=0.05).square()).float()
    torch.testing.assert_close(results[0.02].v_mse, expected)


# ------------------------------------------ item 7: AC-RF, the reference code decides


def test_acrf_workflow_follows_the_reference_code_where_the_report_is_ambiguous(pack_info):
    """acrf_trainer.py @4d8378e: Gaussian jitter (L131), FFTs with norm='ortho' (L255-256),
    one cosine per sample (L202-204), sqrt(d^2 + 1e-6) (L195)."""
    for name in ("acrf_zimage_turbo", "demo_tiny"):
        workflow = shipped(name)
        (t,) = widgets(workflow, "FlowLoRATimestepsAnchorCoupled", pack_info)
        assert (t["num_anchors"], t["anchor_shift"], t["jitter"], t["jitter_kind"]) == (10, 3.0, 0.02, "gaussian")
        (charbonnier,) = widgets(workflow, "FlowLoRALossCharbonnier", pack_info)
        assert (charbonnier["space"], charbonnier["weight"], charbonnier["charbonnier_eps"]) == ("velocity", 1.0, 1e-6)
        assert [w["weight"] for w in widgets(workflow, "FlowLoRALossCosine", pack_info)] == [0.1]
        (fft,) = widgets(workflow, "FlowLoRALossFFT", pack_info)
        assert (fft["space"], fft["weight"], fft["fft_norm"]) == ("velocity", 0.1, "ortho")
        assert [w["snr_gamma"] for w in widgets(workflow, "FlowLoRALossMinSNR", pack_info)] == [5.0]
    note = next(n["widgets_values"][0] for n in shipped("acrf_zimage_turbo")["nodes"] if n.get("title") == "Read me: AC-RF on Z-Image Turbo")
    for fact in ("4d8378e", "L131", "norm='ortho'", "L255-256", "L202-204", "L195"):
        assert fact in note


def test_the_packs_other_choices_stay_one_click_away(pack_info):
    for node in ("FlowLoRATimestepsAnchorCoupled", "FlowLoRATimestepSampler"):
        inputs = pack_info[node]["input"]["required"]
        assert inputs["jitter_kind"][0] == ["uniform", "gaussian"] or inputs["jitter_kind"][1]["options"] == ["uniform", "gaussian"]
        assert inputs["jitter_kind"][1]["default"] == "uniform"
    for node in ("FlowLoRALossFFT", "FlowLoRALossBuilder"):
        assert pack_info[node]["input"]["required"]["fft_norm"][1]["default"] == "ortho"


def test_fft_norms_differ_by_sqrt_hw_and_cosine_is_per_sample():
    import torch
    from flowlora.trainer_core import losses as ls

    g = torch.Generator().manual_seed(0)
    x0, eps, x0_pred = (torch.randn(2, 4, 128, 128, generator=g) for _ in range(3))
    sigma = torch.tensor([0.3, 0.7])
    p = ls.FlowPrediction(x0, eps, sigma, x0_pred)
    ortho = ls.v_fft(p, ls.TermParams(fft_norm="ortho"))
    backward = ls.v_fft(p, ls.TermParams(fft_norm="backward"))
    torch.testing.assert_close(backward / ortho, torch.full((2,), 128.0))
    cos = torch.nn.functional.cosine_similarity(p.v_pred.reshape(2, -1), p.v_target.reshape(2, -1), dim=1)
    torch.testing.assert_close(ls.v_cosine(p, ls.TermParams()), 1 - cos)
    d = p.v_error
    torch.testing.assert_close(ls.v_charbonnier(p, ls.TermParams()), (torch.sqrt(d.square() + 1e-6) - 1e-3).flatten(1).mean(1))


def test_gaussian_jitter_is_the_reference_codes():
    """acrf_trainer.py L130-132: anchor + randn * 0.02, clamped to [0.001, 0.999]."""
    import torch
    from flowlora.trainer_core import timesteps as ts

    sampler = ts.AnchorCoupled(jitter_kind="gaussian")
    draws = torch.cat([sampler.sample(10, torch.Generator().manual_seed(i)) for i in range(400)]).view(400, 10)
    offsets = (draws - sampler.anchors)[:, 1:-1]  # the clamp bites at both ends
    assert abs(float(offsets.std()) - 0.02) < 0.002 and float(offsets.abs().max()) > 0.02


# ------------------------------------------------ item 8: anchors from the graph


def comfy_flow_sigmas(shift: float, scheduler: str, steps: int):
    """What BasicScheduler gives on a model patched by ModelSamplingAuraFlow(shift)."""
    import comfy.model_sampling
    import comfy.samplers

    class Flow(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    sampling = Flow(None)
    sampling.set_parameters(shift=shift, multiplier=1.0)
    return comfy.samplers.calculate_sigmas(sampling, scheduler, steps).cpu()


@pytest.mark.parametrize(("scheduler", "steps"), [("simple", 10), ("simple", 8), ("beta", 9)])
def test_sigmas_input_makes_the_anchors_the_schedulers_sigmas(comfy_root, scheduler, steps):
    import torch
    from flowlora.nodes import timesteps as node

    sigmas = comfy_flow_sigmas(3.0, scheduler, steps)
    assert len(sigmas) == steps + 1 and float(sigmas[-1]) == 0.0
    (config,) = node.TimestepsAnchorCoupled.execute(num_anchors=10, anchor_shift=3.0, jitter=0.02, jitter_kind="gaussian", clamp_min=0.001, clamp_max=0.999, anchor_sigmas=sigmas).result
    (image,) = node.TimestepHistogram.execute(config, axis="sigma", batch_size=steps, seq_len=4096, seed=0).result
    assert torch.equal(config.sampler.anchors, sigmas[:-1].double())
    assert config.sampler.anchor_sigmas == tuple(sigmas[:-1].tolist())
    assert "the graph's SIGMAS" in config.describe() and image.shape[0] == 1
    draws = config.sample(steps, torch.Generator().manual_seed(0))  # stratified: one draw per anchor
    assert (draws - sigmas[:-1].double()).abs().max() < 0.2


def test_comfyui_simple_sigmas_differ_from_the_reports_anchors(comfy_root):
    import torch
    from flowlora.trainer_core import timesteps as ts

    graph = comfy_flow_sigmas(3.0, "simple", 10)[:-1].double()
    report = ts.AnchorCoupled().anchors
    torch.testing.assert_close(graph[-2:], torch.tensor([0.4286, 0.25], dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(report[-2:], torch.tensor([0.278, 0.009], dtype=torch.float64), atol=1e-3, rtol=0)
    assert "AC-RF report" in ts.TimestepConfig(ts.AnchorCoupled()).describe()


def test_graph_anchors_round_trip_and_errors():
    from flowlora.trainer_core import timesteps as ts
    from flowlora.trainer_core.errors import ConfigError

    config = ts.TimestepConfig(ts.AnchorCoupled(anchor_sigmas=(1.0, 0.5, 0.25, 0.0)))
    assert config.sampler.anchor_sigmas == (1.0, 0.5, 0.25)
    assert ts.TimestepConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="anchor_sigmas"):
        ts.AnchorCoupled(anchor_sigmas=(14.6, 7.0, 0.0))  # not a flow-matching schedule
    with pytest.raises(ConfigError, match="anchor_sigmas"):
        ts.AnchorCoupled(anchor_sigmas=(0.0,))


def test_sigmas_with_another_sampler_is_an_error(comfy_root):
    from flowlora.nodes import legacy_timesteps as node
    from flowlora.trainer_core.errors import ConfigError
    from test_nodes_maths import WIDGETS

    with pytest.raises(ConfigError, match="anchor_sigmas"):
        node.TimestepSampler.execute(**{**WIDGETS, "sampler": "uniform", "anchor_sigmas": comfy_flow_sigmas(3.0, "simple", 4)})


def test_acrf_workflow_offers_graph_anchors_bypassed(pack_info):
    """Report anchors by default; a BasicScheduler (mode 4 = bypassed) on the model as sampled feeds anchor_sigmas."""
    workflow = shipped("acrf_zimage_turbo")
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    (sampler,) = [n for n in workflow["nodes"] if n["type"] == "FlowLoRATimestepsAnchorCoupled"]
    (slot,) = [i for i in sampler["inputs"] if i["name"] == "anchor_sigmas"]
    scheduler = nodes[links[slot["link"]][1]]
    assert scheduler["type"] == "BasicScheduler" and scheduler["mode"] == 4
    assert scheduler["widgets_values"] == ["simple", 10, 1.0]
    shifted = nodes[links[scheduler["inputs"][0]["link"]][1]]
    assert shifted["type"] == "ModelSamplingAuraFlow" and shifted["widgets_values"] == [3.0]
    assert nodes[links[shifted["inputs"][0]["link"]][1]]["type"] == "UNETLoader"
