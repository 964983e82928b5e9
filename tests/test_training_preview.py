"""Training Preview on the LoRA Trainer: a tiny real Z-Image and a tiny real VAE (ComfyUI's own classes), CPU, fp32.

Previews every 2 steps of a 4-step run (steps 0, 2, 4; two prompts) with LoRA
dropout and gradient checkpointing on, so that a preview which moved torch's
global RNG, left the adapters' hooks off or checkpointing in a wrong state
would change the training.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image
from test_trainer import data, settings

STEPS = 4
EVERY = 2
SEED = 5
SIZE = 128  # pixels; latent 16 x 16
DDCONFIG = {"double_z": True, "z_channels": 16, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


def tiny_vae(channels: int = 16, seed: int = 0):
    """A real ComfyUI VAE (AutoencoderKL, /8) with ``channels`` latent channels, from a seeded state dict."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = {**DDCONFIG, "z_channels": channels}
    g = torch.Generator().manual_seed(seed)
    shapes = AutoencoderKL(ddconfig=ddconfig, embed_dim=channels).state_dict()
    sd = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in shapes.items()}
    vae = comfy.sd.VAE(sd=sd, config={"params": {"ddconfig": ddconfig, "embed_dim": channels}})
    vae.latent_channels = channels  # a VAE built from an explicit config keeps the default 4 (comfy/sd.py)
    return vae


def prompts(dim: int = 32, seed: int = 11):
    """Two preview prompts and one negative, shaped like the tiny Z-Image's text features (8 tokens)."""
    g = torch.Generator().manual_seed(seed)
    positive = [[torch.randn(1, 8, dim, generator=g), {}], [torch.randn(1, 8, dim, generator=g), {}]]
    negative = [[torch.randn(1, 8, dim, generator=g), {}]]
    return positive, negative


def preview_node(vae, positive, negative, **changes):
    from flowlora.nodes.preview import TrainingPreview

    widgets = dict(sampler_name="euler", scheduler="simple", steps=3, cfg=2.0, seed=SEED, width=SIZE, height=SIZE, every_n_steps=EVERY)
    widgets.update(changes)
    assert TrainingPreview.validate_inputs(**widgets) is True
    return TrainingPreview.execute(positive=positive, negative=negative, vae=vae, **widgets).result[0]


def run_settings(**changes):
    from flowlora.trainer_core.lora.config import LoraConfig

    return settings(**{"steps": STEPS, "lora": LoraConfig(preset="zimage_attn", rank=4, alpha=4, dropout=0.1), "gradient_checkpointing": True, **changes})


@contextlib.contextmanager
def recording():
    """Yields ``(decoded, sent, progress)``: every preview image the trainer decodes (float IMAGE, before PNG rounding),
    every PNG preview it sends through ComfyUI's progress-bar hook (what the server forwards to the frontend), and
    ``(value, total)`` of every call of that hook."""
    import comfy.utils
    from flowlora.nodes import preview as preview_module

    decoded, sent, progress = [], [], []
    real_decode = preview_module.decode

    def spy(vae_, samples):
        out = real_decode(vae_, samples)
        decoded.append(out.clone())
        return out

    def hook(value, total, image, prompt_id=None, node_id=None):
        progress.append((value, total))
        if image is not None and image[0] == "PNG":
            sent.append((value, total, image))

    preview_module.decode = spy
    saved_hook = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        yield decoded, sent, progress
    finally:
        preview_module.decode = real_decode
        comfy.utils.set_progress_bar_global_hook(saved_hook)


@pytest.fixture(scope="module")
def runs(trainer_env):
    """The same 4-step run with previews (recording every decoded preview and every image sent to the
    progress hook) and without; and a 2-step run without, for the stock-sampler comparison."""
    tiny_models, Trainer, _ = trainer_env
    vae = tiny_vae()
    positive, negative = prompts()
    preview = preview_node(vae, positive, negative)
    latents, train_positive = data(9)
    with recording() as (decoded, sent, progress):
        on = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=train_positive, preview=preview, **run_settings(output_name="preview/on")).result
    off = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=train_positive, **run_settings(output_name="preview/off")).result
    short = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=train_positive, **run_settings(steps=EVERY, output_name="preview/short")).result
    return dict(env=trainer_env, vae=vae, positive=positive, negative=negative, preview=preview, on=on, off=off, short=short, decoded=decoded, sent=sent, progress=progress)


def test_previews_every_2_steps_write_files_grid_and_reach_the_frontend(runs):
    from flowlora.nodes import charts
    from flowlora.trainer_core import previews

    _, _, loras = runs["env"]
    folder = loras / "preview" / "on" / "previews"
    expected = [f"step_{step:06d}_p{p}.png" for step in (0, 2, 4) for p in (0, 1)]
    assert sorted(p.name for p in folder.iterdir()) == expected
    text = previews.read_text(folder / "step_000002_p1.png")
    assert {k: text[f"flowlora.{k}"] for k in ("step", "prompt_index", "seed", "sampler", "scheduler", "steps", "cfg")} == {
        "step": "2", "prompt_index": "1", "seed": str(SEED), "sampler": "euler", "scheduler": "simple", "steps": "3", "cfg": "2"}
    assert len(runs["decoded"]) == 6 and all(d.shape == (1, SIZE, SIZE, 3) for d in runs["decoded"])

    # the grid: rows prompts, columns steps, each cell the saved PNG
    grid = runs["on"][3]
    layout = charts.grid_layout(2, 3, (SIZE, SIZE), cell_size=SIZE, column_labels=["step 0", "step 2", "step 4"], row_labels=["prompt 0", "prompt 1"],
                                title=f"on: euler / simple, 3 steps, cfg 2, seed {SEED}")
    assert tuple(grid.shape) == (1, layout.size[1], layout.size[0], 3)
    pixels = previews.to_pixels(grid[0])
    for column, step in enumerate((0, 2, 4)):
        for row in (0, 1):
            x0, y0, x1, y1 = layout.cell_box(row, column)
            saved = np.asarray(Image.open(folder / f"step_{step:06d}_p{row}.png"))
            assert np.abs(pixels[y0:y1, x0:x1].astype(int) - saved.astype(int)).max() <= 1  # float grid rounded again

    # sent while training ran, through ComfyUI's progress bar: one labelled strip per previewed step
    assert [(value, total) for value, total, _ in runs["sent"]] == [(0, STEPS), (2, STEPS), (4, STEPS)]
    assert all(isinstance(image[1], Image.Image) and image[2] == 512 for _, _, image in runs["sent"])
    # the previews' own KSampler steps never reach the trainer's bar (it would jump from "2/4" to "1/3")
    assert {total for _, total in runs["progress"]} == {STEPS}

    # without a Training Preview the output is a note, and no previews folder appears
    assert runs["off"][3].shape[0] == 1 and not (loras / "preview" / "off").exists()


def test_training_with_previews_equals_training_without(runs):
    from safetensors.torch import load_file

    a, b = load_file(runs["on"][1]), load_file(runs["off"][1])
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    on, off = runs["on"][2].records(), runs["off"][2].records()
    assert [r["step"] for r in on] == [r["step"] for r in off] == list(range(1, STEPS + 1))
    for key in ("loss", "x0_mse", "v_mse", "grad_norm"):
        assert [r[key] for r in on] == pytest.approx([r[key] for r in off], abs=1e-6), key
    assert [r["sigma"] for r in on] == [r["sigma"] for r in off]


def test_preview_equals_the_stock_ksampler_on_the_trainer_model(runs):
    """Step 2 of the 4-step run against KSampler + VAE Decode on the MODEL a 2-step run returns; step 0 against the untrained model."""
    from flowlora.trainer_core import previews

    import nodes

    tiny_models, _, loras = runs["env"]
    vae, positive, negative = runs["vae"], runs["positive"], runs["negative"]

    def stock(model, prompt):
        """The KSampler and VAE Decode nodes' bodies, under inference_mode as ComfyUI runs nodes."""
        latent = {"samples": torch.zeros(1, 16, SIZE // 8, SIZE // 8)}
        with torch.inference_mode():
            (out,) = nodes.common_ksampler(model, SEED, 3, 2.0, "euler", "simple", [positive[prompt]], negative, latent, denoise=1.0)
            return nodes.VAEDecode().decode(vae, out)[0].clone()

    folder = loras / "preview" / "on" / "previews"
    for prompt in (0, 1):
        at_2 = stock(runs["short"][0], prompt)
        assert float((runs["decoded"][2 + prompt] - at_2).abs().max()) <= 1e-5
        saved = np.asarray(Image.open(folder / f"step_000002_p{prompt}.png")).astype(int)
        assert np.abs(saved - previews.to_pixels(at_2[0]).astype(int)).max() <= 1
        at_0 = stock(tiny_models.tiny_zimage(0), prompt)
        assert float((runs["decoded"][prompt] - at_0).abs().max()) <= 1e-5
    # the LoRA shows in the previews (else the comparison above would prove nothing)
    assert float((runs["decoded"][4] - runs["decoded"][0]).abs().max()) > 1e-4


def test_cancel_during_a_preview_saves_and_resume_with_previews_equals_straight(runs):
    """ComfyUI's interrupt raised from a layer while the step-2 preview samples."""
    import comfy.model_management as mm
    from safetensors import safe_open
    from safetensors.torch import load_file

    tiny_models, Trainer, loras = runs["env"]
    latents, train_positive = data(9)
    model = tiny_models.tiny_zimage(0)
    seen = {"training": False}

    def interrupt_first_preview_after_training(module, args):
        if torch.is_grad_enabled():
            seen["training"] = True
        elif seen["training"]:
            mm.interrupt_current_processing(True)

    handle = model.model.diffusion_model.register_forward_pre_hook(interrupt_first_preview_after_training)
    kw = run_settings(output_name="preview/cancel")
    try:
        with pytest.raises(mm.InterruptProcessingException):
            Trainer.execute(model=model, latents=latents, positive=train_positive, preview=runs["preview"], **kw)
    finally:
        handle.remove()
    assert not mm.processing_interrupted()
    stem = loras / "preview" / "cancel"
    with safe_open(str(stem.with_name("cancel.safetensors")), "pt") as f:
        assert f.metadata()["flowlora.step"] == "2"
    assert sorted(p.name for p in (stem / "previews").iterdir()) == ["step_000000_p0.png", "step_000000_p1.png"]

    _, resumed, _, grid = Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=train_positive, preview=runs["preview"], **{**kw, "resume": True}).result
    a, b = load_file(runs["on"][1]), load_file(resumed)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert sorted(p.name for p in (stem / "previews").iterdir()) == [f"step_{s:06d}_p{p}.png" for s in (0, 2, 4) for p in (0, 1)]
    assert grid.shape[2] < runs["on"][3].shape[2]  # this call previewed steps 2 and 4 only


def test_a_preview_that_does_not_fit_the_model_fails_before_step_1_naming_the_input(runs):
    from flowlora.trainer_core.errors import ConfigError

    tiny_models, Trainer, loras = runs["env"]
    latents, train_positive = data(9)
    positive, negative = runs["positive"], runs["negative"]

    with pytest.raises(ConfigError, match=r"^preview vae = 'AutoencoderKL with 4 latent channels': does not fit the model \(Lumina2 samples 16-channel"):
        Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=train_positive, preview=preview_node(tiny_vae(4), positive, negative), **run_settings(output_name="preview/bad_vae"))
    wide, wide_negative = prompts(dim=48)
    with pytest.raises(ConfigError, match=r"^preview positive/negative = 'prompt 0: positive \(1, 8, 48\).*the first preview could not be sampled on this model"):
        Trainer.execute(model=tiny_models.tiny_zimage(0), latents=latents, positive=train_positive, preview=preview_node(runs["vae"], wide, wide_negative), **run_settings(output_name="preview/bad_cond"))
    for name in ("bad_vae", "bad_cond"):
        assert not (loras / "preview" / f"{name}.safetensors").exists() and not (loras / "preview" / f"{name}.log.jsonl").exists()


def test_preview_node_validation_names_the_field(trainer_env):
    from flowlora.nodes.preview import TrainingPreview

    assert TrainingPreview.validate_inputs(steps=0).startswith("steps = 0: must lie in [1, 10000]")
    assert TrainingPreview.validate_inputs(sampler_name="nope").startswith("sampler_name = 'nope': must be one of")
    assert TrainingPreview.validate_inputs(every_n_steps=-1).startswith("every_n_steps = -1")
    assert TrainingPreview.validate_inputs(every_percent=101).startswith("every_percent = 101")


def test_previews_fall_every_tenth_of_the_run_by_default(trainer_env):
    from flowlora.trainer_core.previews import PreviewConfig

    def steps(config: PreviewConfig, total: int, start: int = 0) -> list[int]:
        return [s for s in range(start, total + 1) if config.due(s, start, total)]

    assert steps(PreviewConfig(), 600) == list(range(0, 601, 60))  # 0%, 10%, ..., 100%
    assert steps(PreviewConfig(), 25) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25]  # round(2.5) = 2, and the last step
    assert steps(PreviewConfig(), 600, start=250) == [250, 300, 360, 420, 480, 540, 600]  # a resumed run keeps the run's grid
    assert steps(PreviewConfig(every_n_steps=200), 600) == [0, 200, 400, 600]  # a fixed interval wins over the share
    assert steps(PreviewConfig(every_percent=0), 600) == [0, 600]


def test_u1_previews_with_unfrozen_tensors_and_a_noise_adding_sampler(trainer_env, tmp_path_factory):
    """The tiny SenseNova-U1 (pixel space, its own noise scale, unfrozen tensors saved as diffs) with euler_ancestral:
    the step-2 preview equals KSampler on the trainer's MODEL, and the LoRA equals a run without previews."""
    import comfy.sd
    from flowlora.nodes.u1 import model as u1m
    from flowlora.nodes.u1.nodes import U1PromptEncode
    from flowlora.trainer_core import optim
    from flowlora.trainer_core.lora.config import LoraConfig
    from flowlora.trainer_core.models.u1.presets import DEFAULT_UNFREEZE_PATTERNS
    from flowlora.trainer_core.models.u1.recipes import RECIPES
    from safetensors.torch import load_file
    from tiny_u1 import write_tiny_checkpoint

    import nodes

    _, Trainer, _ = trainer_env
    ckpt = tmp_path_factory.mktemp("u1ckpt")
    write_tiny_checkpoint(ckpt)
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    positive, negative, _ = U1PromptEncode.execute(u1m.load_u1_text_encoder(str(ckpt)), "a red square").result
    preview = preview_node(vae, positive, negative, sampler_name="euler_ancestral", steps=3, cfg=3.0, width=32, height=32, every_n_steps=1)
    r = RECIPES.get("official")
    kw = dict(
        timesteps=r.timesteps, loss=r.loss, p_text=0.0, p_both=0.0, optimizer=optim.OptimizerConfig("adamw", 1e-2),
        lora=LoraConfig(preset="u1_attn_mlp_no_head", rank=4, alpha=4, dropout=0.1, unfreeze=DEFAULT_UNFREEZE_PATTERNS),
        steps=2, epochs=0, batch_size=1, seed=0, training_dtype="fp32", gradient_checkpointing=True, save_every=0, resume=False,
    )
    latents = {"samples": torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1}

    def load():
        return u1m.load_u1_model(str(ckpt), 3.0, 0.05)

    with recording() as (decoded, sent, _):
        trained, with_previews, _, _ = Trainer.execute(model=load(), latents=latents, positive=positive, preview=preview, output_name="u1preview/on", **kw).result
    _, without, _, _ = Trainer.execute(model=load(), latents=latents, positive=positive, output_name="u1preview/off", **kw).result
    a, b = load_file(with_previews), load_file(without)
    assert any(k.endswith(".diff") for k in a) and a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert len(decoded) == 3 and [value for value, _, _ in sent] == [0, 1, 2]
    with torch.inference_mode():
        (out,) = nodes.common_ksampler(trained, SEED, 3, 3.0, "euler_ancestral", "simple", positive, negative, {"samples": torch.zeros(1, 3, 32, 32)}, denoise=1.0)
        stock = nodes.VAEDecode().decode(vae, out)[0].clone()
    assert float((decoded[2] - stock).abs().max()) <= 1e-5
    assert float((decoded[2] - decoded[0]).abs().max()) > 1e-4


def test_previews_as_the_server_runs_the_node_under_inference_mode(runs):
    """ComfyUI executes a prompt under torch.inference_mode(), and loader and text-encode nodes made their tensors there."""
    from safetensors.torch import load_file

    tiny_models, Trainer, loras = runs["env"]
    with torch.inference_mode():
        model, vae = tiny_models.tiny_zimage(0), tiny_vae()
        positive, negative = prompts()
        latents, train_positive = data(9)
        preview = preview_node(vae, positive, negative)
        _, path, _, grid = Trainer.execute(model=model, latents=latents, positive=train_positive, preview=preview, **run_settings(output_name="preview/server")).result
    a, b = load_file(runs["on"][1]), load_file(path)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert grid.shape == runs["on"][3].shape
    server, straight = loras / "preview" / "server" / "previews", loras / "preview" / "on" / "previews"
    assert sorted(p.name for p in server.iterdir()) == sorted(p.name for p in straight.iterdir())
    for png in straight.iterdir():
        assert np.array_equal(np.asarray(Image.open(server / png.name)), np.asarray(Image.open(png)))
