"""SenseNova-U1 as a ComfyUI MODEL: BaseModel subclass, model_sampling, loaders.

The generation tower (every ``*_mot_gen`` weight, ``norm_mot_gen``,
``fm_modules``) is the MODEL's ``diffusion_model``, so ComfyUI's model
management moves it to the device for sampling/training, and its parameter
names are the official ones under ``diffusion_model.``. The understanding tower
is a separate :class:`U1TextEncoder` with its own ModelPatcher: it is loaded to
the device only while the prompt encoder runs, and unloaded by ComfyUI when
memory is needed. Weights are the checkpoint's bf16 tensors, resident on the CPU.

Sampling is in pixel space (``latent_format.ChromaRadiance``: 3 channels,
[-1, 1]; decode with the ``pixel_space`` VAE). :class:`U1ModelSampling` speaks
U1's parameterisation in ComfyUI's sigma (sigma = 1 - t):

- the network predicts x0; ``calculate_denoised`` applies the t_eps clamp so
  ComfyUI's Euler step equals U1's ``z += (t_next - t) * (x0_hat - z) / max(1 - t, t_eps)``;
- ``noise_scaling`` multiplies the unit noise by U1's resolution noise scale
  ``s_eff = min(noise_scale * sqrt(N / 64), max)``, N = the model's generation
  tokens (32 px for official checkpoints; ``U1Config.token_px``), and the
  loader makes ComfyUI's stochastic samplers scale the noise they add by the
  same ``s_eff`` (:func:`compat.add_noise_scale`);
- sigmas are ComfyUI's discrete-flow table with U1's timestep shift
  (``multiplier`` 1: the timestep passed to the network is sigma itself). The
  ``simple`` scheduler reproduces the official t grid exactly when the step
  count divides 1000.

CONDITIONING carries the prefix KV packed as ``(B, L, layers*2*KV*hd)``
(:meth:`PrefixKV.pack`), wrapped in ``CONDRegular`` so ComfyUI never pads a
shorter prefix by repetition (prefixes of different lengths run in separate
batches).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.ops
import comfy.supported_models_base
import torch

from ...trainer_core.data.cache import fingerprint_tensors, make_key
from ...trainer_core.errors import ConfigError
from ...trainer_core.models.u1 import GenerationTower, PrefixKV, PrefixTower, U1Config, prompts
from ...trainer_core.models.u1.checkpoint import load_towers
from ...trainer_core.models.u1.sampling import clamped_denoised, raw_x0
from ...trainer_core.registry import Registry
from .. import compat

log = logging.getLogger(__name__)

WEIGHT_DTYPES: Registry[torch.dtype | None] = Registry("U1 weight dtype")
WEIGHT_DTYPES.register("checkpoint")(None)
WEIGHT_DTYPES.register("bfloat16")(torch.bfloat16)
WEIGHT_DTYPES.register("float16")(torch.float16)
WEIGHT_DTYPES.register("float32")(torch.float32)

BUNDLED_TOKENIZER = ("text_encoders", "qwen25_tokenizer")
PREFIX_RULES = "official-v1"
"""Names :func:`prompts.training_prefix` in dataset cache keys; change it when the prefix strings change."""


def _sigma_view(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return comfy.model_sampling.reshape_sigma(sigma, x.ndim)


class U1ModelSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    """x0 prediction, sigma = 1 - t, t_eps clamp, timestep shift, resolution noise scale.

    A CONST (flow) model_sampling like SD3's, so flow-only code paths (the
    trainer, RF samplers) accept it; every CONST method is overridden here.
    Names the pack adds carry a ``u1_`` or ``flowlora_`` prefix: ComfyUI's
    own classes may add any plain name later, as 0.21 did with the float
    ``noise_scale`` that hid a method of that name.
    """

    def __init__(self, cfg: U1Config, shift: float, t_eps: float):
        super().__init__(None)
        self.u1_config = cfg
        self.u1_t_eps = t_eps
        self.set_parameters(shift=shift, multiplier=1.0)

    def calculate_input(self, sigma, noise):
        return noise

    def calculate_denoised(self, sigma, model_output, model_input):
        """``model_output`` is U1's x0_hat; see :func:`clamped_denoised`."""
        return clamped_denoised(model_input, model_output, _sigma_view(sigma, model_output), self.u1_t_eps)

    def flowlora_network_x0(self, sigma, denoised, model_input):
        """The network's own x0 estimate from :meth:`calculate_denoised`'s output.

        Differs from ``denoised`` only below sigma = t_eps (t > 1 - t_eps); U1's
        x0 and v losses are taken on this (spec 5.5, 5.6), so the trainer uses it.
        """
        return raw_x0(model_input, denoised, _sigma_view(sigma, denoised), self.u1_t_eps)

    def u1_noise_scale(self, x: torch.Tensor) -> float:
        """``s_eff`` for an image-shaped tensor ``(B, 3, H, W)``: N counts the model's own tokens (official: 32 px).

        A size that is not a whole number of tokens raises the model's ConfigError here, when the
        sampler first noises the latent, rather than later inside the forward.
        """
        return self.u1_config.noise_scale_for_image(*x.shape[-2:])

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        """``z = (1 - sigma) * x0 + sigma * s_eff * eps`` (U1's ``t * x0 + (1 - t) * s * eps``)."""
        sigma = _sigma_view(sigma, noise)
        return sigma * self.u1_noise_scale(noise) * noise + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma, latent):
        sigma = _sigma_view(sigma, latent)
        return latent / (1.0 - sigma)


class U1DiffusionModel(GenerationTower):
    """The generation tower with ComfyUI's ``diffusion_model`` call signature."""

    def forward(self, x, timesteps, context=None, control=None, transformer_options=None, **kwargs):
        """``x (B, 3, H, W)``, ``timesteps`` = sigma ``(B,)``, ``context`` = packed prefix KV -> x0_hat."""
        if context is None:
            raise ValueError("SenseNova-U1 needs CONDITIONING from the 'U1 Prompt Encode (FlowLoRA)' node (its prefix KV); got none")
        llm = self.cfg.llm
        prefix = PrefixKV.unpack(context, llm.num_hidden_layers, llm.num_key_value_heads, llm.head_dim)
        return super().forward(x, 1.0 - timesteps.float(), prefix)


class U1ComfyConfig(comfy.supported_models_base.BASE):
    """Model config for ComfyUI: pixel-space latent, no unet creation (the tower is loaded)."""

    unet_config = {"disable_unet_model_creation": True}  # noqa: RUF012 (ComfyUI reads these class attributes)
    latent_format = comfy.latent_formats.ChromaRadiance
    memory_usage_factor = 0.03
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]  # noqa: RUF012


class U1Model(comfy.model_base.BaseModel):
    """ComfyUI BaseModel around :class:`U1DiffusionModel`.

    ``apply_model(x, sigma, c_crossattn=packed_prefix_kv)`` returns the
    (t_eps-clamped) x0 estimate, like every ComfyUI model.
    """

    def __init__(self, model_config: U1ComfyConfig, diffusion_model: U1DiffusionModel, shift: float, t_eps: float, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.FLOW, device=device)
        self.diffusion_model = diffusion_model
        self.model_sampling = U1ModelSampling(diffusion_model.cfg, shift, t_eps)
        self.u1_config = diffusion_model.cfg

    def get_dtype(self):
        return self.diffusion_model.dtype

    def extra_conds(self, **kwargs):
        out = {}
        cross_attn = kwargs.get("cross_attn", None)
        if cross_attn is not None:
            out["c_crossattn"] = comfy.conds.CONDRegular(cross_attn)
        return out


class U1TextEncoder:
    """Understanding tower + tokenizer: prompt text -> packed prefix KV.

    ``patcher`` is a ModelPatcher over the :class:`PrefixTower`, so ComfyUI
    loads it to its text-encoder device only while encoding.
    """

    def __init__(self, tower: PrefixTower, tokenizer, source: str):
        self.tower = tower
        self.tokenizer = tokenizer
        self.source = source
        self.patcher = comfy.model_patcher.ModelPatcher(tower, load_device=comfy.model_management.text_encoder_device(), offload_device=comfy.model_management.text_encoder_offload_device())

    def encode_text(self, text: str) -> torch.Tensor:
        """One prefix string -> packed KV ``(1, L, C)`` on ComfyUI's intermediate device."""
        return self.encode_ids(prompts.tokenize(self.tokenizer, text))

    def encode_ids(self, ids: list[int]) -> torch.Tensor:
        """Token ids -> packed KV ``(1, L, C)`` on ComfyUI's intermediate device."""
        vocab = self.tower.cfg.llm.vocab_size
        if max(ids) >= vocab:
            raise ValueError(f"tokenizer from {self.source} produced id {max(ids)} >= the model's vocab_size {vocab}: use the tokenizer files that came with this checkpoint")
        comfy.model_management.load_model_gpu(self.patcher)
        kv = self.tower.encode(torch.tensor([ids], dtype=torch.long, device=self.patcher.load_device))
        return kv.pack().to(comfy.model_management.intermediate_device())

    def generate_think(self, prompt: str, max_tokens: int = 1024) -> tuple[torch.Tensor, str]:
        """Official think mode (spec 4.5): greedy decoding from ``...<think>\n`` with the language head, then ``\n\n<img>``.

        Returns the conditional packed KV of exactly those ids (prefix, generated
        tokens, suffix) and the generated think text (without ``</think>``).
        """
        vocab = self.tokenizer.get_vocab()
        ids = prompts.tokenize(self.tokenizer, prompts.think_generation_prefix(prompt))
        comfy.model_management.load_model_gpu(self.patcher)
        new, why = self.tower.greedy(torch.tensor([ids], dtype=torch.long, device=self.patcher.load_device), vocab["</think>"], vocab["<|im_end|>"], max_tokens)
        text_ids = new[:-1] if why == "stop" else new
        log.info("think mode: %d tokens generated (stopped: %s)", len(new), {"stop": "</think>", "end": "<|im_end|>", "length": f"{max_tokens} tokens"}[why])
        think = self.tokenizer.decode(text_ids, skip_special_tokens=False).strip()
        return self.encode_ids(ids + new + prompts.tokenize(self.tokenizer, prompts.THINK_SUFFIX)), think

    def encode(self, prompt: str, think: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """(conditional, unconditional) packed prefix KVs with the official templates."""
        cond = self.encode_text(prompts.conditional_prefix(prompt, think.strip() or None))
        uncond = self.encode_text(prompts.UNCONDITIONAL_PREFIX)
        return cond, uncond

    def dataset_encoder(self) -> tuple[Callable[[str], list], str]:
        """``(encode, identity)`` for the Dataset node, like its CLIP encoder.

        ``encode(prompt)`` returns U1 CONDITIONING ``[[kv (1, L, C), {"u1_prefix_length": L}]]``
        of :func:`prompts.training_prefix` (the empty prompt: the official
        unconditional prefix). ``identity`` changes with the weights, the
        tokenizer and the prefix rules.
        """

        def encode(prompt: str) -> list:
            kv = self.encode_text(prompts.training_prefix(prompt))
            return [[kv, {"u1_prefix_length": kv.shape[1]}]]

        identity = make_key({
            "kind": "text",
            "class": "sensenova_u1.prefix_kv",
            "prefix_rules": PREFIX_RULES,
            "tokenizer": [self.source, len(self.tokenizer)],
            "weights": fingerprint_tensors(self.tower.state_dict().items()),
            "compute_dtype": str(self.tower.compute_dtype),
        })
        return encode, identity


def base_weights(patcher) -> dict[str, torch.Tensor]:
    """The MODEL's generation-tower tensors by official name, without ComfyUI's LoRA patches.

    ``get_key_patches`` gives each weight's backup when ComfyUI has patched it
    in place, else the weight itself (no copies).
    """
    prefix = "diffusion_model."
    return {k[len(prefix):]: v[0][0] for k, v in patcher.get_key_patches(prefix).items()}


def _ops_for(weight_dtype: torch.dtype, load_device):
    compute = comfy.model_management.unet_manual_cast(weight_dtype, load_device, U1ComfyConfig.supported_inference_dtypes)
    return comfy.ops.pick_operations(weight_dtype, compute), compute


def _stored_dtype(folder: Path) -> torch.dtype:
    from ...trainer_core.models.u1.checkpoint import load_state_dict

    return load_state_dict(folder, ["fm_modules.timestep_embedder.mlp.0.bias"])["fm_modules.timestep_embedder.mlp.0.bias"].dtype


def load_u1_model(folder: str, shift: float, t_eps: float, weight_dtype: str = "checkpoint", disable_dynamic: bool = False) -> comfy.model_patcher.ModelPatcher:
    """The generation tower as a ComfyUI MODEL (ModelPatcher), weights on the offload device (CPU)."""
    path = Path(folder)
    dtype = WEIGHT_DTYPES.get(weight_dtype, "weight_dtype") or _stored_dtype(path)
    load_device = comfy.model_management.get_torch_device()
    ops, compute = _ops_for(dtype, load_device)
    cfg, _, gen = load_towers(path, ops=ops, dtype=dtype, include_prefix=False, gen_class=U1DiffusionModel)
    gen.compute_dtype = compute
    model_config = U1ComfyConfig({"disable_unet_model_creation": True})
    model_config.sampling_settings = {"shift": shift, "multiplier": 1.0}
    model_config.manual_cast_dtype = compute
    model = U1Model(model_config, gen, shift, t_eps, device=None)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=comfy.model_management.unet_offload_device())
    compat.register_reload(patcher, load_u1_model, (folder, shift, t_eps, weight_dtype))
    compat.add_noise_scale(patcher, model.model_sampling.u1_noise_scale)
    log.info("SenseNova-U1 generation tower from %s (%s head, weights %s, compute %s)", folder, cfg.head_kind, dtype, compute or dtype)
    return patcher


def load_u1_text_encoder(folder: str, weight_dtype: str = "checkpoint") -> U1TextEncoder:
    """The understanding tower + tokenizer (the checkpoint's files, else ComfyUI's bundled Qwen BPE)."""
    path = Path(folder)
    dtype = WEIGHT_DTYPES.get(weight_dtype, "weight_dtype") or _stored_dtype(path)
    device = comfy.model_management.text_encoder_device()
    ops, compute = _ops_for(dtype, device)
    cfg, prefix, _ = load_towers(path, ops=ops, dtype=dtype, include_gen=False)
    prefix.compute_dtype = compute
    real = cfg.llm.hidden_size >= prompts.REAL_MODEL_MIN_HIDDEN
    tok_dir = path if (path / "vocab.json").is_file() else Path(comfy.model_management.__file__).parent.joinpath(*BUNDLED_TOKENIZER)
    if tok_dir != path:
        if real:
            raise ConfigError("checkpoint", str(folder), "has no tokenizer files (vocab.json, merges.txt, tokenizer_config.json): copy them from the official download into this folder. "
                              "ComfyUI's bundled Qwen2.5 tokenizer would put <think> and <img> at other ids than the model was trained with.")
        log.warning("no tokenizer files in %s; using ComfyUI's bundled Qwen2.5 tokenizer with U1's added tokens (ids differ from the real U1 tokenizer: fine for test models only)", folder)
    tokenizer = prompts.load_tokenizer(tok_dir)
    wrong = prompts.wrong_token_ids(tokenizer) if real else {}
    if wrong:
        listed = ", ".join(f"{t} is {got} (official {want})" for t, (got, want) in wrong.items())
        raise ConfigError("checkpoint", str(folder), f"its tokenizer files are not SenseNova-U1's: {listed}. Use the tokenizer files of the official download.")
    return U1TextEncoder(prefix, tokenizer, str(tok_dir))
