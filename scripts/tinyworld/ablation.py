"""The two reports' claims, measured in the tiny world: one command per row, one for the table.

    .venv/bin/python scripts/tinyworld/ablation.py run turbo_acrf --seeds 0 1 2   # one row, three seeds
    .venv/bin/python scripts/tinyworld/ablation.py run turbo --seeds 0 1 2        # a study (turbo or u1)
    .venv/bin/python scripts/tinyworld/ablation.py run all --seeds 0 1 2          # the whole table
    .venv/bin/python scripts/tinyworld/ablation.py table                          # docs/ABLATION.md from the results
    .venv/bin/python scripts/tinyworld/ablation.py run turbo_acrf --smoke         # CI size: 3 updates, 2 prompts
    .venv/bin/python scripts/tinyworld/ablation.py curve turbo_acrf --every 100    # metrics along one run, on other prompts

**Training** goes through a live ComfyUI server (``main.py --cpu``), as a user
runs it: each run is a graph built with the same node specs as the shipped
workflows (``scripts/build_workflows.py``), converted to API format against the
server's ``/object_info`` and queued on ``/prompt``. Our rows run the pack's LoRA
Trainer node; the anchor row runs ComfyUI's own ``TrainLoraNode`` (its
defaults, the same model, data and number of updates) and saves with
``SaveLoRA``. The model and data are the committed tiny-world ones
(``assets.install``): the tiny Turbo (Turbo study) or the tiny U1 (U1 study) and
the mosaic style set (48 captioned images; the demo's set), trained and
prompted without its trigger word, as the demo is (``make_style_sets.py``
says why).

**Measuring** happens afterwards in this process, the same way for every row:
base model plus the run's LoRA file through ComfyUI's own LoRA loading (the
U1 LoRA Loader node for U1), on held-out prompts (scenes that never occur in
any training split):

- ``style_score``: Style Distance's score of the samples, 0 = the base model's
  samples of the same prompts and seeds, 1 = the mosaic set;
- ``content``: tiny-world content accuracy of the samples (shape, colour and
  position of every object); ``content_base`` is the base model's;
- ``x0_mse``: mean squared error of the model's x0 estimate of held-out mosaic
  renders noised at sigma 0.25, 0.5 and 0.75 (fixed noise), in [-1, 1] pixels;
- ``drift`` (Turbo): mean squared difference between 8-step and 32-step samples
  of the same prompt and noise (how far the few-step sampler strays from the
  model's own many-step answer); ``drift_base`` is the base model's;
- ``wall_s``: seconds from queueing the graph to its end (server side, model
  loading and dataset encoding included).

Every run writes ``<results>/<row>/seed<k>/metrics.json`` and keeps its
training log; ``table`` reads only those files.

``curve`` trains one row once with the trainer's ``save_every`` and measures
every kept save the same way, on *validation* prompts (held-out scenes
:data:`VALIDATION_FIRST` onwards, none of them among the table's or the demos'
prompts): where along a run the style arrives and the content goes, so a step
count can be chosen without looking at the prompts it is then judged on.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _p in (REPO / "scripts", REPO / "tests", HERE):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import build_workflows as bw  # noqa: E402  (the shipped graphs' recipes and the demo's settings)

RESULTS = REPO / "docs" / "ablation"
"""Committed results: one folder per row and seed (metrics.json, training log)."""
DOC = REPO / "docs" / "ABLATION.md"
STYLE = "mosaic"
SIGMAS = (0.25, 0.5, 0.75)
"""Noise levels of the held-out x0-MSE."""
VALIDATION_FIRST = 100
"""First held-out scene index of ``curve``'s prompts: the table measures scenes 0-47, the demos 0-7."""


# ---------------------------------------------------------------- rows

@dataclass(frozen=True)
class Scale:
    """How a report's run is scaled to the tiny world (stated in the table)."""

    steps: int
    batch: int
    prompts: int
    smoke_steps: int = 3


TURBO_SCALE = Scale(steps=600, batch=4, prompts=48)
"""AC-RF: the report trains 10 epochs of batch 1, accumulation 4 on its set; here 600 updates of batch 4 on 48 images (50 epochs), the demo's run."""
U1_SCALE = Scale(steps=300, batch=1, prompts=24)
"""U1 report: 6000 steps of batch 1 on 56 images; here 300 (1/20) on 48 images (6.25 epochs against 107)."""


@dataclass(frozen=True)
class Row:
    """One configuration of a study: what differs from the study's reference recipe, as nodes and widget values.

    ``timesteps``: (Timesteps family node, widgets); ``loss``: the loss chain as in
    ``build_workflows.ACRF_RECIPE["loss"]``, ((node, title, widgets), ...); ``lora``, ``optimizer``, ``trainer``:
    widget values over the study's LoRA Config, Optimizer Config and LoRA Trainer. Empty: the study's reference.
    ``strength``: the LoRA strength the row is sampled and measured at (the trainer's ``strength``, a loader's
    ``strength_model``). ``exploratory``: a candidate setting measured with :func:`curve` on validation prompts to
    choose a recipe, not one of its study's table rows (``run`` takes it by name only).
    """

    name: str
    study: str
    label: str
    claim: str
    timesteps: tuple = ()
    loss: tuple = ()
    trainer: dict = field(default_factory=dict)
    lora: dict = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    strength: float = 1.0
    graph_anchors: bool = False
    builtin: bool = False
    exploratory: bool = False


ROWS: dict[str, Row] = {}


def row(r: Row) -> Row:
    ROWS[r.name] = r
    return r


def _acrf_loss_without(*node_types: str) -> tuple:
    """The AC-RF loss chain (build_workflows.ACRF_RECIPE) less the nodes of ``node_types``."""
    return tuple(step for step in bw.ACRF_RECIPE["loss"] if step[0] not in node_types)


def _mse(space: str, t_eps: float) -> tuple:
    return (("FlowLoRALossMSE", f"MSE on {space}", dict(space=space, weight=1.0, t_eps=t_eps)),)


row(Row("turbo_acrf", "turbo", "AC-RF (report recipe)", "reference"))
row(Row("turbo_plain", "turbo", "plain LoRA: uniform t, MSE", "AC-RF keeps few-step quality better than a plain LoRA",
        timesteps=("FlowLoRATimestepsUniform", dict(sigma_min=0.0, sigma_max=1.0, clamp_min=0.001, clamp_max=0.999)), loss=_mse("velocity", 0.001)))
row(Row("turbo_acrf_graph", "turbo", "AC-RF, anchors from the graph's sampler", "anchors where you sample: ComfyUI's 8-step simple sigmas", graph_anchors=True))
row(Row("turbo_acrf_no_minsnr", "turbo", "AC-RF without Min-SNR", "Min-SNR weighting helps", loss=_acrf_loss_without("FlowLoRALossMinSNR")))
row(Row("turbo_acrf_no_cos_fft", "turbo", "AC-RF without cosine and FFT", "the cosine and FFT terms help", loss=_acrf_loss_without("FlowLoRALossCosine", "FlowLoRALossFFT")))
row(Row("turbo_acrf_all_linear", "turbo", "AC-RF, LoRA on every Linear", "how much of the built-in's result its wider targets explain (it adapts every Linear, plus every norm and bias in full)",
        lora=dict(preset="all_linear")))
# candidates for the demo's recipe, compared along a run on validation prompts (``curve``)
row(Row("turbo_acrf_lr3e-4", "turbo", "AC-RF at learning rate 3e-4", "a gentler rate keeps more of the base's content", optimizer=dict(learning_rate=3e-4), exploratory=True))
row(Row("turbo_acrf_all_linear_lr3e-4", "turbo", "AC-RF, every Linear, learning rate 3e-4", "wider targets at a gentler rate", lora=dict(preset="all_linear"),
        optimizer=dict(learning_rate=3e-4), exploratory=True))
row(Row("turbo_acrf_ffn", "turbo", "AC-RF, LoRA on the feed-forward layers only", "leaving attention (how the prompt is read) untouched keeps content",
        lora=dict(preset="custom", include="layers.*.feed_forward.w1\nlayers.*.feed_forward.w2\nlayers.*.feed_forward.w3"), exploratory=True))
row(Row("turbo_demo", "turbo", f"the demo: AC-RF on every Linear, lr {bw.TINYWORLD_LR_TEXT}, strength {bw.TINYWORLD_STRENGTH:g}",
        "the demo's recipe, chosen on validation prompts (curves below)", lora=dict(bw.TINYWORLD_LORA),
        optimizer=dict(learning_rate=bw.TINYWORLD_LEARNING_RATE), strength=bw.TINYWORLD_STRENGTH))
row(Row("turbo_builtin", "turbo", "ComfyUI TrainLoraNode (its defaults)", "the anchor users would pick instead", builtin=True))

_UNIFORM = ("FlowLoRATimestepsUniform", dict(sigma_min=0.0, sigma_max=0.95, clamp_min=0.0, clamp_max=1.0))
_LOGIT = ("FlowLoRATimestepsLogitNormal", dict(mean=-0.8, std=0.8, space="t", clamp_min=0.05, clamp_max=0.95))
_X0, _V = _mse("x0", 0.05), _mse("velocity", 0.05)  # U1's training t_eps (train_u1 constants.py L43)
row(Row("u1_baseline", "u1", "baseline: x0 loss, uniform t", "reference (the report's release default)", timesteps=_UNIFORM, loss=_X0))
row(Row("u1_a_velocity", "u1", "(a) velocity loss", "velocity loss degrades reconstruction (banding)", timesteps=_UNIFORM, loss=_V))
row(Row("u1_b_logit_normal", "u1", "(b) logit-normal t", "logit-normal t degrades reconstruction (speckle)", timesteps=_LOGIT, loss=_X0))
row(Row("u1_c_dropout", "u1", "(c) condition dropout 0.1 / 0.1", "dropout is harmless, slightly better structure", timesteps=_UNIFORM, loss=_X0, trainer=dict(p_text=0.1, p_both=0.1)))
row(Row("u1_d_all", "u1", "(d) all three", "all three together distort structure most", timesteps=_LOGIT, loss=_V, trainer=dict(p_text=0.1, p_both=0.1)))
row(replace(ROWS["u1_baseline"], name="u1_demo", label=f"the demo: the baseline at strength {bw.TINYWORLD_U1_STRENGTH:g}",
            claim="the U1 demo's recipe, its strength chosen on validation prompts (curves below)", strength=bw.TINYWORLD_U1_STRENGTH))

STUDIES = {study: [r for r in ROWS.values() if r.study == study and not r.exploratory] for study in ("turbo", "u1")}
"""The table's rows of each study (exploratory rows left out)."""


def select(names: list[str]) -> list[Row]:
    """Rows by name, study name or ``all`` (every study's table rows); a ValueError names an unknown one."""
    out: list[Row] = []
    for name in names:
        if name == "all":
            out += [r for rows in STUDIES.values() for r in rows]
        elif name in STUDIES:
            out += STUDIES[name]
        elif name in ROWS:
            out.append(ROWS[name])
        else:
            raise ValueError(f"row {name!r}: not one of all, {', '.join(STUDIES)}, {', '.join(ROWS)}")
    return list({r.name: r for r in out}.values())


# ---------------------------------------------------------------- graphs (built like the shipped workflows)

def turbo_graph(r: Row, seed: int, steps: int, output: str, save_every: int = 0):
    from tinyworld import assets

    wf = bw.Workflow(f"ablation_{r.name}")
    unet = wf.add("UNETLoader", (0, 0), unet_name=assets.ZIMAGE_FILES["turbo"], weight_dtype="default")
    clip = wf.add("FlowLoRATinyTextEncoderLoader", (0, 160), clip_name=assets.TEXT_ENCODER, type="lumina2")
    vae = wf.add("VAELoader", (0, 320), vae_name="pixel_space")
    folder = assets.STYLE_FOLDER.format(style=STYLE)
    dataset = wf.add("FlowLoRADataset", (400, 0), folder=folder, vae=vae["VAE"], clip=clip["CLIP"], trigger="", bucket_mode="auto", max_pixels=64 * 64, bucket_step=16, crop="center", seed=0)
    # the AC-RF recipe (the demo's: rank 8, AdamW 1e-3 for the tiny model) with the row's changes
    timestep_node, timestep_widgets = r.timesteps or ("FlowLoRATimestepsAnchorCoupled", bw.ACRF_RECIPE["timesteps"])
    timesteps = wf.add(timestep_node, (800, 0), **timestep_widgets)
    if r.graph_anchors:
        scheduler = wf.add("BasicScheduler", (800, 600), model=unet["MODEL"], scheduler="simple", steps=8, denoise=1.0)
        timesteps.values["anchor_sigmas"] = scheduler["SIGMAS"]
    loss = bw.loss_chain(wf, r.loss or bw.ACRF_RECIPE["loss"], 1200, 0)[-1]
    lora = wf.add("FlowLoRALoraConfig", (800, 400), **{**bw.ACRF_RECIPE["lora"], "rank": 8, "alpha": 8.0, **r.lora})
    optimizer = wf.add("FlowLoRAOptimizerConfig", (1200, 600), **{**bw.ACRF_RECIPE["optimizer"], "optimizer": "adamw", "learning_rate": 1e-3, "grad_accumulation": 1, **r.optimizer})
    wf.add("FlowLoRALoraTrainer", (1600, 0), model=unet["MODEL"], dataset=dataset["dataset"], timesteps=timesteps["timesteps"], loss=loss["loss"],
           lora=lora["lora"], optimizer=optimizer["optimizer"], steps=steps, epochs=0, batch_size=TURBO_SCALE.batch, seed=seed,
           training_dtype="fp32", gradient_checkpointing=False, save_every=save_every, output_name=output, resume=False, overwrite=True, **r.trainer)
    return wf


def u1_graph(r: Row, seed: int, steps: int, output: str, save_every: int = 0):
    from tinyworld import assets

    wf = bw.Workflow(f"ablation_{r.name}")
    loader = wf.add("FlowLoRAU1Loader", (0, 0), checkpoint=assets.U1_CHECKPOINT, shift=3.0, t_eps=0.02, weight_dtype="float32")
    vae = wf.add("VAELoader", (0, 200), vae_name="pixel_space")
    folder = assets.STYLE_FOLDER.format(style=STYLE)
    dataset = wf.add("FlowLoRADataset", (400, 0), folder=folder, vae=vae["VAE"], u1_text_encoder=loader["text_encoder"], trigger="", missing_caption="skip",
                     bucket_mode="auto", max_pixels=64 * 64, bucket_step=16, crop="center", resize_filter="bicubic", seed=0)
    timesteps = wf.add(r.timesteps[0], (800, 0), **r.timesteps[1])
    loss = bw.loss_chain(wf, r.loss, 800, 400)[-1]
    lora = wf.add("FlowLoRALoraConfig", (800, 700), preset="u1_attn_mlp_no_head", rank=8, alpha=8.0, unfreeze=bw.U1_UNFREEZE)
    # the shipped U1 optimizer (betas 0.9 / 0.95, no clipping) at a tiny-model learning rate; plain AdamW (paged 8-bit needs CUDA)
    optimizer = wf.add("FlowLoRAOptimizerConfig", (1200, 0), **{**dict(optimizer="adamw", learning_rate=1e-3, beta1=0.9, beta2=0.95, schedule="constant", grad_accumulation=1, max_grad_norm=0.0), **r.optimizer})
    wf.add("FlowLoRALoraTrainer", (1600, 0), model=loader["MODEL"], dataset=dataset["dataset"], timesteps=timesteps["timesteps"], loss=loss["loss"], lora=lora["lora"],
           optimizer=optimizer["optimizer"], steps=steps, epochs=0, batch_size=U1_SCALE.batch, seed=seed, training_dtype="fp32", gradient_checkpointing=False,
           save_every=save_every, output_name=output, resume=False, overwrite=True, **{"p_text": 0.0, "p_both": 0.0, **r.trainer})
    return wf


def builtin_prompt(object_info: dict, seed: int, steps: int, output: str) -> dict:
    """API prompt of ComfyUI's own LoRA training on the same model and data: LoadImageTextDataSetFromFolder ->
    VAEEncode and CLIPTextEncode (mapped over the lists) -> TrainLoraNode (its defaults but batch, steps, seed) -> SaveLoRA.

    Written in API form: CLIPTextEncode's text is a widget fed by a link here, which the workflow builder does not draw.
    """
    from tinyworld import assets

    def node(class_type: str, **inputs) -> dict:
        spec = object_info[class_type]["input"]
        for group in ("required", "optional"):
            for name, entry in spec.get(group, {}).items():
                options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
                if name not in inputs and "default" in options:
                    inputs[name] = options["default"]
        return {"class_type": class_type, "inputs": inputs}

    folder = assets.STYLE_FOLDER.format(style=STYLE)
    return {
        "1": node("UNETLoader", unet_name=assets.ZIMAGE_FILES["turbo"], weight_dtype="default"),
        "2": node("FlowLoRATinyTextEncoderLoader", clip_name=assets.TEXT_ENCODER, type="lumina2"),
        "3": node("VAELoader", vae_name="pixel_space"),
        "4": node("LoadImageTextDataSetFromFolder", folder=folder),
        "5": node("VAEEncode", pixels=["4", 0], vae=["3", 0]),
        "6": node("CLIPTextEncode", text=["4", 1], clip=["2", 0]),
        "7": node("TrainLoraNode", model=["1", 0], latents=["5", 0], positive=["6", 0], batch_size=TURBO_SCALE.batch, steps=steps, seed=seed),
        "8": node("SaveLoRA", lora=["7", 1], prefix=output, steps=["7", 3]),
    }


GRAPHS: dict[str, Callable] = {"turbo": turbo_graph, "u1": u1_graph}


# ---------------------------------------------------------------- measuring

def heldout(count: int, first: int = 0) -> tuple[list[str], list]:
    """Prompts (bare captions, as the set is trained) and scenes of ``count`` held-out scenes from index ``first``."""
    from tinyworld import world

    scenes = [world.scene(i, "heldout") for i in range(first, first + count)]
    return [world.caption(s) for s in scenes], scenes


class Study:
    """The base model of a study, loaded once in this process, and what every run is compared with."""

    def __init__(self, study: str, prompts: int, first: int = 0):
        import evaluate_u1  # noqa: F401  (these put the repository root on sys.path, where the pack's own nodes/ would hide ComfyUI's nodes.py)
        import evaluate_zimage  # noqa: F401
        import harness

        root = str(harness.import_comfy())
        sys.path.remove(root)
        sys.path.insert(0, root)
        import flowlora_tiny

        import nodes  # noqa: F401  (ComfyUI's, imported now that its root comes first)

        flowlora_tiny.register_tiny_zimage()
        self.study, self.texts, self.scenes = study, *heldout(prompts, first)
        import numpy as np

        from tinyworld.render import render, to_comfy

        self.x0 = to_comfy(np.stack([render(s, STYLE) for s in self.scenes])).permute(0, 3, 1, 2) * 2 - 1
        """Held-out style-set renders ``(N, 3, 64, 64)`` in [-1, 1]: the pixel_space latent of each scene."""
        self.base = self.load()
        self.reference = self._reference()
        self.base_images = self.sample(self.base, 8 if study == "turbo" else 50)
        self.base_long = self.sample(self.base, 32) if study == "turbo" else None

    def load(self):
        from tinyworld import assets

        if self.study == "turbo":
            import evaluate_zimage as ez
            import pretrain_zimage as pz

            self.clip = self.clip if hasattr(self, "clip") else pz.load_text_encoder()
            return ez.load_unet(assets.MODELS / "zimage_turbo.safetensors")
        import evaluate_u1 as eu

        patcher, self.encoder = eu.load(assets.MODELS / "u1", t_eps=0.02, weight_dtype="float32")
        return patcher

    def with_lora(self, path: Path, strength: float = 1.0):
        """The base patched with a LoRA file at ``strength``: ComfyUI's own ``load_lora_for_models`` (what LoraLoaderModelOnly
        runs) for Z-Image, the pack's LoRA loading for U1 (its fully trained fm_modules tensors are not LoRA keys ComfyUI maps)."""
        import comfy.sd
        import comfy.utils

        if self.study == "u1":
            from flowlora.nodes import lora_patch

            result = lora_patch.apply_lora(self.base, lora_patch.load_lora_file(str(path)), strength)
            if result.not_loaded():
                raise ValueError(f"{path}: {len(result.not_loaded())} keys did not load into the tiny U1")
            return result.model
        sd = comfy.utils.load_torch_file(str(path), safe_load=True)
        model, _ = comfy.sd.load_lora_for_models(self.base, None, sd, strength, 0.0)
        return model

    def conds(self, texts: list[str]):
        """Positive and negative CONDITIONING per prompt, the way the shipped graphs encode them."""
        if self.study == "turbo":
            import evaluate_zimage as ez

            return ez.encode(self.clip, texts), ez.encode(self.clip, [""])[0]
        from flowlora.nodes.u1.nodes import U1PromptEncode

        encoded = [U1PromptEncode.execute(self.encoder, t).result for t in texts]
        return [e[0] for e in encoded], encoded[0][1]

    def sample(self, model, steps: int):
        """IMAGE ``(N, 64, 64, 3)``: one sample per held-out prompt, seed = prompt index (Turbo: cfg 1; U1: cfg 4)."""
        import torch

        import nodes

        positives, negative = self.conds(self.texts)
        vae = _pixel_vae()
        out = []
        cfg = 1.0 if self.study == "turbo" else 4.0
        for i, positive in enumerate(positives):
            latent = {"samples": torch.zeros(1, 3, 64, 64)}
            (samples,) = nodes.common_ksampler(model, i, steps, cfg, "euler", "simple", positive, negative, latent, denoise=1.0, disable_noise=False)
            out.append(nodes.VAEDecode().decode(vae, samples)[0].float())
        return torch.cat(out)

    def x0_mse(self, model) -> float:
        """Mean over :data:`SIGMAS` of the x0 error on held-out style-set renders: one Euler step from sigma to 0 returns the model's x0."""
        import comfy.sample
        import comfy.samplers
        import torch

        positives, negative = self.conds(self.texts)
        errors = []
        for sigma in SIGMAS:
            for i, positive in enumerate(positives):
                x0 = self.x0[i : i + 1]
                noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1000 * i + int(100 * sigma)))
                sigmas = torch.tensor([sigma, 0.0])
                out = comfy.sample.sample_custom(model, noise, 1.0, comfy.samplers.sampler_object("euler"), sigmas, positive, negative, x0, disable_pbar=True, seed=i)
                errors.append(float((out.float() - x0).square().mean()))
        return statistics.fmean(errors)

    def _reference(self):
        from flowlora.trainer_core import style

        from tinyworld import assets

        return style.StyleReference.from_folder(assets.STYLE_SETS / STYLE / "train")

    def measure(self, model) -> dict:
        from flowlora.trainer_core import style

        from tinyworld import content

        images = self.sample(model, 8 if self.study == "turbo" else 50)
        baseline = style.StyleReference.from_images(self.base_images)
        scores, base_scores = content.score_images(images, self.scenes), content.score_images(self.base_images, self.scenes)
        result = {
            "style_score": float(style.style_score(images, baseline, self.reference).mean()),
            "style_distance": float(self.reference.distance(images).mean()),
            "style_distance_base": float(self.reference.distance(self.base_images).mean()),
            "content": content.accuracy(scores),
            "content_base": content.accuracy(base_scores),
            "content_attributes": content.attribute_accuracy(scores),
            "content_attributes_base": content.attribute_accuracy(base_scores),
            "x0_mse": self.x0_mse(model),
            "x0_mse_base": self.base_x0_mse,
        }
        if self.study == "turbo":
            from flowlora.trainer_core.previews import drift  # the Training Preview's drift_steps measures the same

            long = self.sample(model, 32)
            result["drift"] = drift(images, long)
            result["drift_base"] = drift(self.base_images, self.base_long)
        return result, images

    @property
    def base_x0_mse(self) -> float:
        if not hasattr(self, "_base_x0"):
            self._base_x0 = self.x0_mse(self.base)
        return self._base_x0


def _pixel_vae():
    import comfy.sd
    import torch

    return comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})


# ---------------------------------------------------------------- running rows

def scale_of(study: str) -> Scale:
    return TURBO_SCALE if study == "turbo" else U1_SCALE


def train_on_server(server, object_info: dict, r: Row, seed: int, steps: int, save_every: int = 0) -> tuple[Path, Path | None, float]:
    """Queue row ``r``'s graph; returns (LoRA file, training log or None, wall seconds).

    ``save_every`` > 0 also keeps the trainer's periodic saves (``<LoRA stem>/steps/``; not for the built-in row).
    """
    import workflow_api

    output = f"ablation/{r.name}/seed{seed}"
    if r.builtin:
        if save_every:
            raise ValueError(f"{r.name}: ComfyUI's TrainLoraNode keeps no periodic saves; pick one of the pack's rows")
        prompt = builtin_prompt(object_info, seed, steps, output)
    else:
        prompt = workflow_api.to_api(GRAPHS[r.study](r, seed, steps, output, save_every).build(object_info), object_info)
    started = time.monotonic()
    entry = server.run_prompt(prompt, timeout=3600)
    wall = time.monotonic() - started
    if entry["status"].get("status_str") != "success":
        errors = [m[1] for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
        detail = errors[0] if errors else {}
        raise RuntimeError(f"{r.name} seed {seed}: {detail.get('node_type')} failed: {detail.get('exception_message', '').strip()[:2000]}")
    if r.builtin:
        (lora,) = sorted((server.base / "output" / "ablation" / r.name).glob(f"seed{seed}*.safetensors"))[-1:]
        return lora, None, wall
    stem = server.base / "models" / "loras" / output
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".log.jsonl"), wall


def run_rows(rows: list[Row], seeds: list[int], results: Path, smoke: bool = False, force: bool = False) -> list[Path]:
    """Train and measure every (row, seed) not measured yet (``force``: all again), one after the other.

    Writes ``results/<row>/seed<k>/metrics.json``, the training log and the first samples as soon as each run is
    measured, so a stopped command loses at most the run in progress; a rerun continues with the next one.
    """
    import demo
    import harness

    written = []
    base = results / ".comfyui"
    demo.prepare(base, "demo_tinyworld")
    commit = _commit()
    by_study: dict[str, list[Row]] = {}
    for r in rows:
        by_study.setdefault(r.study, []).append(r)
    for study, study_rows in by_study.items():
        scale = scale_of(study)
        steps = scale.smoke_steps if smoke else scale.steps
        prompts = 2 if smoke else scale.prompts
        todo = [(r, seed) for r in study_rows for seed in seeds if force or smoke or not _measured(results / r.name / f"seed{seed}" / "metrics.json", steps, prompts)]
        if not todo:
            continue
        print(f"[ablation] {study} study: {len(todo)} run(s) to train and measure on {prompts} held-out prompts; loading the base model ...", flush=True)
        measurer = Study(study, prompts)
        _save_images(measurer.base_images, results / f"{study}_base_samples.png")
        with harness.comfy_server(base) as server:
            object_info = server.get("/object_info", timeout=120)
            for r, seed in todo:
                print(f"[ablation] {r.name} seed {seed}: training ({steps} updates) ...", flush=True)
                lora, log, wall = train_on_server(server, object_info, r, seed, steps)
                written.append(_measure_and_write(measurer, r, seed, lora, log, wall, results, steps, prompts, smoke, commit))
    return written


def curve(r: Row, seed: int, every: int, results: Path, prompts: int = 0, first: int = VALIDATION_FIRST, smoke: bool = False, strengths: tuple[float, ...] = ()) -> Path:
    """Train row ``r`` once at its study's scale, keeping a save every ``every`` updates, and measure every save.

    Measured like the table (:meth:`Study.measure`, at the row's strength) but on ``prompts`` held-out scenes from
    index ``first`` (default: the study's prompt count from :data:`VALIDATION_FIRST`); the last save is measured
    again at each of ``strengths``. Writes and returns ``results/curves/<row>_seed<k>.json``: the run's settings and
    one record per measurement (``step``, ``strength`` and the metrics).
    ``smoke``: the study's smoke-size run on 2 prompts, written as ``<row>_seed<k>_smoke.json``.
    """
    import demo
    import harness

    scale = scale_of(r.study)
    steps, prompts = (scale.smoke_steps, 2) if smoke else (scale.steps, prompts or scale.prompts)
    if every <= 0 or steps % every:
        raise ValueError(f"--every {every}: must be > 0 and divide the run's {steps} updates")
    base = results / ".comfyui"
    demo.prepare(base, "demo_tinyworld")
    print(f"[curve] {r.name} seed {seed}: base model on held-out prompts {first}-{first + prompts - 1} ...", flush=True)
    measurer = Study(r.study, prompts, first)
    from flowlora.trainer_core import step_saves

    with harness.comfy_server(base) as server:
        print(f"[curve] {r.name} seed {seed}: training ({steps} updates, a save every {every}) ...", flush=True)
        lora, _, wall = train_on_server(server, server.get("/object_info", timeout=120), r, seed, steps, every)
    saves = {int(step_saves.FILE_PATTERN.fullmatch(p.name).group(1)): p for p in (lora.with_suffix("") / step_saves.FOLDER).glob("step_*.safetensors")}
    saves.setdefault(steps, lora)
    points = []
    todo = [(step, r.strength) for step in sorted(saves)] + [(steps, s) for s in strengths if s != r.strength]
    for step, strength in todo:
        metrics, _ = measurer.measure(measurer.with_lora(saves[step], strength))
        points.append({"step": step, "strength": strength, **metrics})
        print(f"[curve] step {step}, strength {strength:g}: style {metrics['style_score']:.3f}, content {100 * metrics['content']:.1f}% (base {100 * metrics['content_base']:.1f}%)", flush=True)
    out = results / "curves" / f"{r.name}_seed{seed}{'_smoke' if smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"row": r.name, "label": r.label, "seed": seed, "steps": steps, "batch": scale.batch, "every": every, "smoke": smoke, "prompts": prompts, "first_prompt": first,
              "wall_s": round(wall, 1), "commit": _commit(), "date": time.strftime("%Y-%m-%d"), "machine": machine(), "points": points}
    _write_json(out, record)
    print(curve_table(record))
    return out


def curve_table(record: dict) -> str:
    """Markdown table of a ``curve`` file: one line per save."""
    lines = [f"{record['label']}, seed {record['seed']}, a save every {record['every']} updates: {record['prompts']} held-out prompts from scene {record['first_prompt']}",
             "", "| update | strength | style score | content % | content drop, points | held-out x0-MSE |", "|---|---|---|---|---|---|"]
    for p in record["points"]:
        lines.append(f"| {p['step']} | {p.get('strength', 1.0):g} | {p['style_score']:.2f} | {100 * p['content']:.1f} | {_content_drop(p):.1f} | {p['x0_mse']:.4f} |")
    return "\n".join(lines)


def _content_drop(point: dict) -> float:
    """Content accuracy lost to the LoRA at one measured save, in points (the base's minus the save's)."""
    return 100 * (point["content_base"] - point["content"])


def _measurement(record: dict) -> tuple:
    """What the seeds of one ``curve`` measurement share: row, updates, prompts and first prompt."""
    return record["row"], record["steps"], record["prompts"], record["first_prompt"]


def strength_table(records: list[dict]) -> str:
    """Markdown table of one row's ``curve`` files over seeds: its last save at each strength, mean and per seed.

    ``records``: the seeds of one measurement (same row, updates, prompts and first prompt).

    The content drop is listed per seed as well as averaged, since a strength is chosen on it: a mean under a
    threshold with one seed over it is a thin margin, and the table should show that.
    """
    records = sorted(records, key=lambda record: record["seed"])
    row, steps, seeds = records[0]["row"], records[0]["steps"], [record["seed"] for record in records]
    by_strength: dict[float, list[dict]] = {}
    for record in records:
        for p in record["points"]:
            if p["step"] == steps:
                by_strength.setdefault(p.get("strength", 1.0), []).append(p)
    lines = [f"`{row}` over seeds {', '.join(map(str, seeds))}: the last save (update {steps}) at each strength measured on all of them, "
             f"{records[0]['prompts']} held-out prompts from scene {records[0]['first_prompt']}",
             "", "| strength | style score, mean | content drop, points: mean | per seed |", "|---|---|---|---|"]
    for strength in sorted(by_strength, reverse=True):
        points = by_strength[strength]
        if len(points) != len(records):
            continue
        drops = [_content_drop(p) for p in points]
        style = sum(p["style_score"] for p in points) / len(points)
        lines.append(f"| {strength:g} | {style:.2f} | {sum(drops) / len(drops):.1f} | {', '.join(f'{d:.1f}' for d in drops)} |")
    return "\n".join(lines)


def _commit() -> str:
    import subprocess

    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


def _measured(path: Path, steps: int, prompts: int) -> bool:
    if not path.is_file():
        return False
    record = json.loads(path.read_text(encoding="utf-8"))
    return not record.get("smoke") and record.get("steps") == steps and record.get("prompts") == prompts


def _measure_and_write(measurer: Study, r: Row, seed: int, lora: Path, log: Path | None, wall: float, results: Path, steps: int, prompts: int, smoke: bool, commit: str) -> Path:
    import shutil

    metrics, images = measurer.measure(measurer.with_lora(lora, r.strength))
    folder = results / r.name / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "row": r.name, "study": r.study, "label": r.label, "seed": seed, "steps": steps, "batch": scale_of(r.study).batch, "prompts": prompts, "smoke": smoke,
        "strength": r.strength, "wall_s": round(wall, 1), **metrics, "commit": commit, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
    }
    if log is not None:
        shutil.copy2(log, folder / "log.jsonl")
        record["final_loss"] = _final_loss(folder / "log.jsonl")
    _save_images(images, folder / "samples.png")
    _write_json(folder / "metrics.json", record)
    print(f"[ablation] {r.name} seed {seed}: style {metrics['style_score']:.3f}, content {100 * metrics['content']:.1f}% "
          f"(base {100 * metrics['content_base']:.1f}%), x0-MSE {metrics['x0_mse']:.4f}" + (f", drift {metrics['drift']:.4f}" if "drift" in metrics else "") + f", {wall:.0f} s", flush=True)
    return folder / "metrics.json"


def machine() -> str:
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} (no GPU)"


def _final_loss(log: Path, last: int = 50) -> float:
    losses = [json.loads(line)["loss"] for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    return statistics.fmean(losses[-last:]) if losses else math.nan


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


SHEET_PROMPTS = 8
"""Prompts (rows) of the per-study sheets: each run's samples.png holds its first samples side by side."""


def _save_images(images, path: Path) -> None:
    """The first :data:`SHEET_PROMPTS` samples side by side, 64 x 64 each, lossless."""
    import numpy as np
    from PIL import Image

    array = (images[:SHEET_PROMPTS].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(np.concatenate(list(array), axis=1)).save(path)


def _load_strip(path: Path):
    """IMAGE ``(N, 64, 64, 3)`` from a samples.png strip."""
    import numpy as np
    import torch
    from PIL import Image

    strip = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.stack(np.split(strip, strip.shape[1] // strip.shape[0], axis=1)))


def figures(results: Path, out: Path) -> list[Path]:
    """Per study, with the pack's own nodes: the Image Grid sheet (rows: prompts; columns: base and each row's seed 0) and
    the Training Plots figures of the seed-0 logs overlaid (the U1 report's Figures 1-5). Returns the PNGs written."""
    import harness

    harness.register_package()
    harness.import_comfy()
    import numpy as np
    from flowlora.nodes.plots import MAX_RUNS, ImageGrid, TrainingPlots
    from flowlora.trainer_core.logs import TrainingLog
    from PIL import Image

    def save(image, path: Path) -> Path:
        Image.fromarray((image[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(path)
        return path

    written = []
    data = load_results(results)
    for study in STUDIES:
        rows = [r for r in STUDIES[study] if (results / r.name / "seed0" / "samples.png").is_file() and r.name in data]
        if not rows:
            continue
        base = results / f"{study}_base_samples.png"
        texts, _ = heldout(SHEET_PROMPTS)
        per_sheet = MAX_RUNS - 1
        for k in range(0, len(rows), per_sheet):
            chunk = rows[k : k + per_sheet]
            columns = [_load_strip(base), *(_load_strip(results / r.name / "seed0" / "samples.png") for r in chunk)]
            (grid,) = ImageGrid.execute(columns[0], column_labels="\n".join(["base", *(r.name for r in chunk)]), row_labels="\n".join(texts[: len(columns[0])]),
                                        title=f"{study}: held-out prompts, seed 0 of each row", cell_size=96, **{f"images_{i}": c for i, c in enumerate(columns[1:], start=2)}).result
            written.append(save(grid, out / f"{study}_sheet{k // per_sheet + 1}.png"))
        logged = [r for r in rows if (results / r.name / "seed0" / "log.jsonl").is_file()][:MAX_RUNS]
        if logged:
            logs = [TrainingLog(r.label, str(results / r.name / "seed0" / "log.jsonl"), "", 0) for r in logged]
            outputs = TrainingPlots.execute(logs[0], window=21, labels="\n".join(r.label for r in logged), **{f"log_{i}": log for i, log in enumerate(logs[1:], start=2)}).result
            for name, image in zip(("x0_mse", "loss", "v_mse", "t_histogram", "routes", "sheet"), outputs[:6], strict=True):  # [6]: validation (none here)
                written.append(save(image, out / f"{study}_plots_{name}.png"))
    return written


# ---------------------------------------------------------------- the table

COLUMNS = (
    # (metrics key, header, scale, format)
    ("style_score", "style score", 1.0, "{:.2f}"),
    ("content", "content acc. %", 100.0, "{:.1f}"),
    ("content_base", "base content %", 100.0, "{:.1f}"),
    ("x0_mse", "held-out x0-MSE", 1.0, "{:.4f}"),
    ("drift", "8-step drift ×1e-4", 1e4, "{:.1f}"),
    ("wall_s", "wall s", 1.0, "{:.0f}"),
)


def load_results(results: Path) -> dict[str, list[dict]]:
    """``{row: [metrics of each seed]}`` from ``results/<row>/seed*/metrics.json`` (smoke runs left out)."""
    out: dict[str, list[dict]] = {}
    for path in sorted(results.glob("*/seed*/metrics.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if not record.get("smoke"):
            out.setdefault(record["row"], []).append(record)
    return out


def cell(values: list[float], scale: float = 1.0, pattern: str = "{:.4f}") -> str:
    """``mean ± sample std`` of ``scale * values`` (``mean`` alone for one seed)."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "–"
    mean = pattern.format(scale * statistics.fmean(values))
    if len(values) == 1:
        return mean
    return f"{mean} ± {pattern.format(scale * statistics.stdev(values))}"


def mean_of(records: list[dict], key: str) -> float:
    values = [r[key] for r in records if r.get(key) is not None]
    return statistics.fmean(values) if values else math.nan


def verdict(difference: float, spread: float, better_when: str, expect: str, seeds: int = 3) -> str:
    """holds / does not hold / inconclusive: the expected sign, by more than the seeds' spread (at least two seeds a side)."""
    if math.isnan(difference):
        return "inconclusive (no data)"
    if seeds < 2:
        return "inconclusive (one seed)"
    if abs(difference) <= spread:
        return "inconclusive (within the seeds' spread)"
    good = difference < 0 if better_when == "lower" else difference > 0
    return "holds" if good == (expect == "better") else "does not hold"


def _spread(records: list[dict], key: str) -> float:
    values = [r[key] for r in records if r.get(key) is not None]
    return statistics.stdev(values) if len(values) > 1 else 0.0


CLAIMS = (
    # (row, reference row, metric, better_when, the claim expects the row to be "better" or "worse" than the reference, text)
    ("u1_a_velocity", "u1_baseline", "x0_mse", "lower", "worse", "U1 report (i): the velocity loss degrades reconstruction"),
    ("u1_b_logit_normal", "u1_baseline", "x0_mse", "lower", "worse", "U1 report (ii): logit-normal t degrades reconstruction"),
    ("u1_d_all", "u1_baseline", "content", "higher", "worse", "U1 report (iii): all three together distort structure"),
    ("u1_d_all", "u1_baseline", "x0_mse", "lower", "worse", "U1 report (iii), as reconstruction: all three together degrade it"),
    ("u1_c_dropout", "u1_baseline", "content", "higher", "better", "U1 report: condition dropout does not degrade, slightly improves structure"),
    ("u1_c_dropout", "u1_baseline", "x0_mse", "lower", "better", "U1 report: condition dropout does not degrade reconstruction"),
    ("turbo_acrf", "turbo_plain", "drift", "lower", "better", "AC-RF: keeps the Turbo's few-step sampling closer than a plain LoRA"),
    ("turbo_acrf", "turbo_plain", "style_score", "higher", "better", "AC-RF: learns the style at least as well as a plain LoRA"),
    ("turbo_acrf", "turbo_acrf_no_minsnr", "x0_mse", "lower", "better", "AC-RF: Min-SNR weighting helps (held-out x0-MSE)"),
    ("turbo_acrf", "turbo_acrf_no_cos_fft", "x0_mse", "lower", "better", "AC-RF: the cosine and FFT terms help (held-out x0-MSE)"),
    ("turbo_acrf", "turbo_builtin", "style_score", "higher", "better", "FlowLoRA's AC-RF against ComfyUI's TrainLoraNode: style learned"),
    ("turbo_acrf", "turbo_builtin", "content", "higher", "better", "FlowLoRA's AC-RF against ComfyUI's TrainLoraNode: content kept"),
    ("turbo_acrf_all_linear", "turbo_builtin", "style_score", "higher", "better", "AC-RF on the built-in's Linear targets against TrainLoraNode: style learned"),
)


def build_table(results: Path) -> str:
    """Markdown of every row's mean ± spread and a verdict per claim; every number from ``results``' metrics files."""
    data = load_results(results)
    lines = []
    provenance: dict[tuple[str, str, str], set[str]] = {}
    for name, records in data.items():
        for r in records:
            provenance.setdefault((r["date"], r["commit"], r["machine"]), set()).add(name)
    for (date, commit, machine), names in sorted(provenance.items()):
        lines.append(f"Measured {date} at commit `{commit}` on {machine}: {', '.join(sorted(names))}.")
    if data:
        lines.append(f"\nSeeds per row: {', '.join(f'{k} {len(v)}' for k, v in data.items())}.\n")
    for study, title in (("turbo", "Tiny Turbo: AC-RF and its parts (mosaic style, 8-step samples, cfg 1)"), ("u1", "Tiny SenseNova-U1: the report's ablation (mosaic style, 50-step samples, cfg 4)")):
        rows = [r for r in STUDIES[study] if r.name in data]
        if not rows:
            continue
        first = data[rows[0].name][0]
        lines += [f"### {title}", "", f"{first['steps']} updates of batch {first['batch']}; {first['prompts']} held-out prompts; mean ± sample standard deviation over seeds.", ""]
        columns = [c for c in COLUMNS if study == "turbo" or c[0] != "drift"]
        lines.append("| row | " + " | ".join(c[1] for c in columns) + " |")
        lines.append("|---|" + "---|" * len(columns))
        for r in rows:
            lines.append(f"| {r.label} | " + " | ".join(cell([rec.get(c[0]) for rec in data[r.name]], c[2], c[3]) for c in columns) + " |")
        base = data[rows[0].name][0]
        extra = f", 8-step drift {1e4 * base['drift_base']:.1f}e-4" if "drift_base" in base else ""
        lines += ["", f"Base model without a LoRA: content {100 * base['content_base']:.1f}%, held-out x0-MSE {base['x0_mse_base']:.4f}{extra}.", ""]
    lines += ["### Claims", "", "| claim | compared | metric | difference | verdict |", "|---|---|---|---|---|"]
    for name, ref, metric, better_when, expect, text in CLAIMS:
        if name not in data or ref not in data:
            continue
        diff = mean_of(data[name], metric) - mean_of(data[ref], metric)
        spread = max(_spread(data[name], metric), _spread(data[ref], metric))
        seeds = min(len(data[name]), len(data[ref]))
        lines.append(f"| {text} | {ROWS[name].label} vs {ROWS[ref].label} | {metric} | {diff:+.3g} (spread {spread:.2g}) | {verdict(diff, spread, better_when, expect, seeds)} |")
    curves = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((results / "curves").glob("*_seed*.json")) if not p.stem.endswith("_smoke")]
    if curves:
        lines += ["", "### Along a run, on validation prompts", "",
                  "Each run's periodic saves measured like the table but on other held-out scenes "
                  f"(from index {VALIDATION_FIRST}; `ablation.py curve ROW --seed K`), so that settings are chosen without the table's prompts."]
        for run in dict.fromkeys(map(_measurement, curves)):
            seeds = [record for record in curves if _measurement(record) == run]
            if len(seeds) > 1:
                lines += ["", strength_table(seeds)]
        for record in curves:
            lines += ["", f"`{record['row']}`, measured {record['date']} at commit `{record['commit']}`: " + curve_table(record)]
    return "\n".join(lines) + "\n"


TABLE_BEGIN, TABLE_END = "<!-- table: generated by scripts/tinyworld/ablation.py table -->", "<!-- end of generated table -->"


def write_doc(results: Path = RESULTS, doc: Path = DOC) -> Path:
    """Replace the generated part of ``doc`` (between the markers; appended when absent) with :func:`build_table`."""
    table = f"{TABLE_BEGIN}\n{build_table(results)}{TABLE_END}"
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Ablation in the tiny world\n\n"
    if TABLE_BEGIN in text and TABLE_END in text:
        text = text[: text.index(TABLE_BEGIN)] + table + text[text.index(TABLE_END) + len(TABLE_END):]
    else:
        text = text.rstrip("\n") + "\n\n" + table + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
    return doc


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and measure rows")
    run.add_argument("rows", nargs="+", help=f"row names, a study ({', '.join(STUDIES)}) or all: {', '.join(ROWS)}")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--results", type=Path, default=RESULTS)
    run.add_argument("--smoke", action="store_true", help="CI size: a few updates and two prompts (results marked smoke, left out of the table)")
    run.add_argument("--force", action="store_true", help="run again rows and seeds that already have results")
    run.add_argument("--threads", type=int, default=0, help="torch threads of this process (measuring); the server's training uses all cores")
    along = sub.add_parser("curve", help="train one row once and measure its periodic saves on validation prompts")
    along.add_argument("row", choices=[r.name for r in ROWS.values() if not r.builtin])
    along.add_argument("--seed", type=int, default=0)
    along.add_argument("--every", type=int, default=100, help="updates between the saves measured")
    along.add_argument("--prompts", type=int, default=0, help="validation prompts (0: as many as the study's table uses)")
    along.add_argument("--first", type=int, default=VALIDATION_FIRST, help="first held-out scene index of the validation prompts")
    along.add_argument("--strengths", type=float, nargs="*", default=[], help="also measure the last save at these LoRA strengths")
    along.add_argument("--results", type=Path, default=RESULTS)
    along.add_argument("--threads", type=int, default=0, help="torch threads of this process (measuring)")
    table = sub.add_parser("table", help="write docs/ABLATION.md's table from the results")
    table.add_argument("--results", type=Path, default=RESULTS)
    table.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    if args.command == "table":
        for path in figures(args.results, args.results):
            print(f"wrote {path}")
        print(f"wrote {write_doc(args.results, args.doc)}")
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "curve":
        print(f"wrote {curve(ROWS[args.row], args.seed, args.every, args.results.resolve(), args.prompts, args.first, strengths=tuple(args.strengths))}")
        return
    for path in run_rows(select(args.rows), args.seeds, args.results.resolve(), args.smoke, args.force):
        print(f"  {path}")


if __name__ == "__main__":
    main()
