"""The LoRA engine on a tiny real Z-Image (ComfyUI's own classes, CPU, fp32).

What is proved here: targets resolve as the presets say (qkv split into row
slices), adapters leave the output unchanged at init, only adapter and
unfrozen tensors get gradients (every base parameter has requires_grad False
while attached), detaching restores the model exactly, adapters train on top
of an upstream LoRA that ModelPatcher patched in, and the exported file, loaded
by stock ComfyUI onto a fresh base, reproduces the attached model's output.
"""

from __future__ import annotations

import pytest
import torch
from flowlora.trainer_core.errors import ConfigError
from flowlora.trainer_core.lora import LoraAdapters, LoraConfig, lora_state_dict, resolve

TOL = 1e-5


@pytest.fixture(scope="module")
def tm(comfy_root):
    import tiny_models

    return tiny_models


@pytest.fixture(scope="module")
def base(tm):
    """One tiny Z-Image, shared read-only: tests that mutate build their own."""
    return tm.tiny_zimage(seed=0)


@pytest.fixture(scope="module")
def inputs(tm):
    return tm.zimage_inputs(batch=2, height=16, width=16, tokens=8, seed=1)


def randomize(adapters: LoraAdapters, seed: int = 3, scale: float = 0.05) -> None:
    """Stand-in for training: non-zero A, B and unfrozen tensors, from a seed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapters.lora_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
        for p in adapters.unfrozen_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def snapshot(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------ targets


def test_zimage_attn_splits_qkv_into_row_slices(base):
    dm = base.model.diffusion_model
    plan = resolve(dm, LoraConfig(preset="zimage_attn", rank=4))
    names = [t.name for t in plan.targets]
    assert names == [f"layers.{i}.attention.{p}" for i in (0, 1) for p in ("to_q", "to_k", "to_v", "out")]
    to_k = plan.targets[1]
    assert (to_k.module, to_k.rows, to_k.in_features, to_k.out_features) == ("layers.0.attention.qkv", (256, 256), 256, 256)
    assert plan.modules == ("layers.0.attention.qkv", "layers.0.attention.out", "layers.1.attention.qkv", "layers.1.attention.out")
    assert plan.lora_numel == 8 * 4 * (256 + 256)
    assert plan.summary() == "8 adapters on 4 modules, 16,384 LoRA parameters"


def test_zimage_attn_ffn_and_exclusions(base):
    dm = base.model.diffusion_model
    plan = resolve(dm, LoraConfig(preset="zimage_attn_ffn", rank=2, exclude=("layers.1.*",), unfreeze=("layers.*.attention_norm1.weight",)))
    assert [t.name.split(".", 2)[2] for t in plan.targets] == ["attention.to_q", "attention.to_k", "attention.to_v", "attention.out", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"]
    assert all(t.name.startswith("layers.0.") for t in plan.targets)
    assert plan.unfrozen == ("layers.0.attention_norm1.weight", "layers.1.attention_norm1.weight") and plan.unfrozen_numel == 512
    # refiners, adaLN, embedders, final layer: never in the Z-Image presets
    assert not any(k in t.module for t in plan.targets for k in ("refiner", "adaLN", "embedder", "final_layer"))


def test_all_linear_and_custom_patterns(base):
    dm = base.model.diffusion_model
    linears = [n for n, m in dm.named_modules() if isinstance(m, torch.nn.Linear)]
    assert [t.name for t in resolve(dm, LoraConfig(preset="all_linear")).targets] == linears
    plan = resolve(dm, LoraConfig(preset="custom", include=("re:noise_refiner\\.0\\.feed_forward\\.w[13]", "*adaLN_modulation.0")))
    assert [t.name for t in plan.targets] == ["noise_refiner.0.feed_forward.w1", "noise_refiner.0.feed_forward.w3", "noise_refiner.0.adaLN_modulation.0", "layers.0.adaLN_modulation.0", "layers.1.adaLN_modulation.0"]


def test_zero_matches_lists_close_names(base):
    dm = base.model.diffusion_model
    with pytest.raises(ConfigError) as e:
        resolve(dm, LoraConfig(preset="custom", include=("layers.0.atention.qkv",)))
    assert e.value.field == "include" and "close names: layers.0.attention.qkv" in str(e.value)
    with pytest.raises(ConfigError) as e:
        resolve(dm, LoraConfig(unfreeze=("layers.0.attention_nrm1.weight",)))
    assert e.value.field == "unfreeze" and "layers.0.attention_norm1.weight" in str(e.value)


# ------------------------------------------------------------------ engine


def test_output_unchanged_at_init(tm, base, inputs):
    dm = base.model.diffusion_model
    adapters = LoraAdapters.build(dm, LoraConfig(preset="zimage_attn_ffn", rank=4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y0 = tm.denoise(base, *inputs)
        with adapters.attached(dm):
            y1 = tm.denoise(base, *inputs)
    assert torch.equal(y0, y1)
    assert all(b.abs().max() == 0 for _, _, b in adapters.lora_pairs())
    assert all(a.abs().max() > 0 for _, a, _ in adapters.lora_pairs())


def test_only_adapter_and_unfrozen_tensors_get_gradients(tm, base, inputs):
    from flowlora.nodes import compat

    dm = base.model.diffusion_model
    adapters = LoraAdapters.build(dm, LoraConfig(preset="zimage_attn", rank=4, unfreeze=("layers.0.attention_norm1.weight",)))
    randomize(adapters)
    before = {id(p): p.requires_grad for p in dm.parameters()}
    with adapters.attached(dm):
        trainable = {id(p) for p in adapters.parameters()}
        # autograd never computes a gradient for a tensor that does not require one
        assert [n for n, p in dm.named_parameters() if p.requires_grad and id(p) not in trainable] == []
        with compat.training_flag():  # newer ComfyUI: fused kernels without backward off
            tm.denoise(base, *inputs).square().mean().backward()
        with_grad = [n for n, p in dm.named_parameters() if p.grad is not None]
    assert with_grad == ["layers.0.attention_norm1.weight"]  # the swapped-in trained copy, under its own name
    assert all(p.grad is None for p in dm.parameters())  # after detach: the original tensors, untouched
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters.parameters())
    assert {id(p): p.requires_grad for p in dm.parameters()} == before


def test_detach_restores_module_tree_state_dict_and_flags(tm, base, inputs):
    from flowlora.nodes import compat

    dm = base.model.diffusion_model
    names = [n for n, _ in dm.named_modules()]
    params = {n: p for n, p in dm.named_parameters()}
    values = snapshot(dm)
    adapters = LoraAdapters.build(dm, LoraConfig(preset="zimage_attn_ffn", rank=4, unfreeze=("*norm1.weight",)))
    randomize(adapters)
    opt = torch.optim.SGD(adapters.parameters(), lr=0.1)
    with adapters.attached(dm):
        assert list(dm.state_dict()) == list(values)  # no renaming while attached either
        with compat.training_flag():
            tm.denoise(base, *inputs).square().mean().backward()
        opt.step()
    assert [n for n, _ in dm.named_modules()] == names
    assert all(p is params[n] for n, p in dm.named_parameters())
    after = dm.state_dict()
    assert list(after) == list(values) and all(torch.equal(after[k], values[k]) for k in values)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in dm.modules())
    assert not adapters.is_attached


def test_detach_also_on_error(base):
    dm = base.model.diffusion_model
    adapters = LoraAdapters.build(dm, LoraConfig(rank=2))
    with pytest.raises(ZeroDivisionError):
        with adapters.attached(dm):
            1 / 0  # noqa: B018
    assert all(not m._forward_hooks for m in dm.modules()) and not adapters.is_attached
    with adapters.attached(dm), pytest.raises(RuntimeError, match="already attached"):
        with adapters.attached(dm):
            pass


def test_row_slice_adds_only_to_its_rows(base):
    dm = base.model.diffusion_model
    adapters = LoraAdapters.build(dm, LoraConfig(preset="zimage_attn", rank=4, include=(), exclude=("*.to_q", "*.to_v", "*.out")))
    assert [t.name for t in adapters.plan.targets] == ["layers.0.attention.to_k", "layers.1.attention.to_k"]
    randomize(adapters)
    qkv = dm.layers[0].attention.qkv
    x = torch.randn(3, 5, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y0 = qkv(x)
        with adapters.attached(dm):
            y1 = qkv(x)
    _, a, b = next(adapters.lora_pairs())
    assert torch.equal(y1[..., :256], y0[..., :256]) and torch.equal(y1[..., 512:], y0[..., 512:])
    expected = y0[..., 256:512] + adapters.config.scale * (x @ a.T) @ b.T
    torch.testing.assert_close(y1[..., 256:512], expected, rtol=0, atol=1e-6)


def test_state_dict_round_trip_resumes_the_same_model(tm, base, inputs):
    dm = base.model.diffusion_model
    config = LoraConfig(preset="zimage_attn", rank=4, unfreeze=("layers.1.ffn_norm1.weight",))
    first = LoraAdapters.build(dm, config, generator=torch.Generator().manual_seed(1))
    randomize(first)
    second = LoraAdapters.build(dm, config, generator=torch.Generator().manual_seed(2))
    second.load_state_dict(first.state_dict())
    with torch.no_grad():
        with first.attached(dm):
            y1 = tm.denoise(base, *inputs)
        with second.attached(dm):
            y2 = tm.denoise(base, *inputs)
    assert torch.equal(y1, y2)
    assert "unfrozen_base.layers/1/ffn_norm1/weight" in first.state_dict()


def test_dropout_only_in_training_mode(tm, base, inputs):
    dm = base.model.diffusion_model
    adapters = LoraAdapters.build(dm, LoraConfig(rank=4, dropout=0.5))
    randomize(adapters)
    with torch.no_grad(), adapters.attached(dm):
        torch.manual_seed(0)
        y_train = tm.denoise(base, *inputs)
        adapters.eval()
        y_eval1, y_eval2 = tm.denoise(base, *inputs), tm.denoise(base, *inputs)
    assert torch.equal(y_eval1, y_eval2) and not torch.equal(y_train, y_eval1)


# ------------------------------------------------------------------ ComfyUI round trips


def upstream_lora(rank: int = 4, seed: int = 7) -> dict:
    """A third-party LoRA in native ComfyUI keys (kohya names) on qkv and w1: the "training adapter"."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for i in (0, 1):
        for module, (out_f, in_f) in {"attention.qkv": (768, 256), "feed_forward.w1": (768, 256)}.items():
            stem = f"diffusion_model.layers.{i}.{module}"
            sd[f"{stem}.lora_down.weight"] = torch.randn(rank, in_f, generator=gen) * 0.1
            sd[f"{stem}.lora_up.weight"] = torch.randn(out_f, rank, generator=gen) * 0.1
            sd[f"{stem}.alpha"] = torch.tensor(2.0)
    return sd


def load_stock(model_patcher, lora_sd: dict, strength: float = 1.0):
    """Stock ComfyUI: ``comfy.sd.load_lora_for_models`` (what LoraLoaderModelOnly calls), with unloaded keys."""
    import comfy.sd
    from flowlora.nodes.lora_patch import capture_unloaded

    with capture_unloaded() as unloaded:
        patched, _ = comfy.sd.load_lora_for_models(model_patcher, None, lora_sd, strength, 0)
    return patched, unloaded


def test_adapters_see_the_upstream_lora_patched_by_modelpatcher(tm, inputs):
    model = tm.tiny_zimage(seed=0)
    with_upstream, unloaded = load_stock(model, upstream_lora())
    assert unloaded == []
    dm = with_upstream.model.diffusion_model
    with torch.no_grad():
        y_base = tm.denoise(model, *inputs)
        with tm.patched(with_upstream):
            y_upstream = tm.denoise(with_upstream, *inputs)
            adapters = LoraAdapters.build(dm, LoraConfig(preset="zimage_attn_ffn", rank=4))
            with adapters.attached(dm):
                y_attached = tm.denoise(with_upstream, *inputs)
        y_after = tm.denoise(model, *inputs)
    assert (y_upstream - y_base).abs().max() > 1e-2  # the upstream LoRA does something
    assert torch.equal(y_attached, y_upstream)  # adapters at B = 0 see the patched weights
    assert torch.equal(y_after, y_base)  # unpatching after detach restores the base


@pytest.mark.parametrize(
    "preset, key_style, weight_names, unfreeze",
    [
        ("zimage_attn", "native", "lora_A", ("layers.0.attention_norm1.weight", "layers.1.attention.out.weight")),
        ("zimage_attn_ffn", "diffusers", "lora_down", ("x_pad_token",)),
        ("all_linear", "native", "lora_A", ()),
    ],
)
def test_exported_lora_loads_in_stock_comfyui_with_the_same_output(tm, inputs, preset, key_style, weight_names, unfreeze):
    trained_on = tm.tiny_zimage(seed=0)
    dm = trained_on.model.diffusion_model
    adapters = LoraAdapters.build(dm, LoraConfig(preset=preset, rank=4, alpha=8, unfreeze=unfreeze))
    randomize(adapters)
    with torch.no_grad(), adapters.attached(dm):
        y_attached = tm.denoise(trained_on, *inputs)

    sd = lora_state_dict(adapters, key_style=key_style, weight_names=weight_names)
    if preset.startswith("zimage"):
        assert "diffusion_model.layers.0.attention.to_k.alpha" in sd
    if key_style == "diffusers":
        assert "diffusion_model.layers.1.attention.to_out.0.lora_up.weight" in sd
    fresh = tm.tiny_zimage(seed=0)
    with torch.no_grad():
        y_fresh = tm.denoise(fresh, *inputs)
    loaded, unloaded = load_stock(fresh, sd)
    assert unloaded == []
    expected = {f"diffusion_model.{t.module}.weight" for t in adapters.plan.targets} | {f"diffusion_model.{u}" for u in unfreeze}
    assert set(loaded.patches) == expected
    with torch.no_grad(), tm.patched(loaded):
        y_loaded = tm.denoise(loaded, *inputs)
    assert (y_attached - y_fresh).abs().max() > 1e-3
    assert (y_loaded - y_attached).abs().max().item() <= TOL


def test_lora_trained_on_upstream_lora_reproduces_on_fresh_base_plus_upstream(tm, inputs):
    model = tm.tiny_zimage(seed=0)
    with_upstream, _ = load_stock(model, upstream_lora())
    dm = with_upstream.model.diffusion_model
    adapters = LoraAdapters.build(dm, LoraConfig(preset="zimage_attn", rank=4, unfreeze=("layers.0.attention.qkv.weight",)))
    randomize(adapters)
    with torch.no_grad(), tm.patched(with_upstream), adapters.attached(dm):
        y_trained = tm.denoise(with_upstream, *inputs)
    fresh_upstream, _ = load_stock(tm.tiny_zimage(seed=0), upstream_lora())
    ours, unloaded = load_stock(fresh_upstream, lora_state_dict(adapters))
    assert unloaded == []
    with torch.no_grad(), tm.patched(ours):
        y_loaded = tm.denoise(ours, *inputs)
    assert (y_loaded - y_trained).abs().max().item() <= TOL


def test_apply_lora_returns_a_patched_clone_and_reports_unknown_keys(tm, inputs):
    from flowlora.nodes.lora_patch import apply_lora

    model = tm.tiny_zimage(seed=0)
    dm = model.model.diffusion_model
    adapters = LoraAdapters.build(dm, LoraConfig(rank=4))
    randomize(adapters)
    with torch.no_grad(), adapters.attached(dm):
        y_attached = tm.denoise(model, *inputs)
    sd = lora_state_dict(adapters)
    sd["diffusion_model.not_a_layer.lora_A.weight"] = torch.zeros(4, 4)
    result = apply_lora(model, sd, 1.0)
    clone, unloaded = result.model, result.not_loaded()
    assert unloaded == ["diffusion_model.not_a_layer.lora_A.weight"]
    assert clone is not model and model.patches == {}
    with torch.no_grad(), tm.patched(clone):
        y_clone = tm.denoise(clone, *inputs)
    assert (y_clone - y_attached).abs().max().item() <= TOL
