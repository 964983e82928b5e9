"""Write the demo's tiny model files and dataset (random weights, seeded).

    .venv/bin/python scripts/make_demo_model.py BASE_DIR

writes, under the ComfyUI base directory ``BASE_DIR``:

- ``models/diffusion_models/flowlora_demo_zimage.safetensors``: a Z-Image
  (ComfyUI's own ``NextDiT`` classes) at width 256, 2 layers, 4 heads: 6.4 M
  parameters. Loads with the stock UNETLoader once the ``flowlora_tiny``
  package (``scripts/flowlora_tiny``) is in ``custom_nodes``.
- ``models/text_encoders/flowlora_demo_qwen3.safetensors``: a Qwen3 text
  encoder at width 32, 3 layers, real vocabulary (4.9 M parameters), for
  ``Tiny Text Encoder Loader (FlowLoRA demo)``.
- ``models/vae/flowlora_demo_ae.safetensors``: the Flux/Z-Image VAE
  architecture (16 latent channels, 84 M parameters, fp16, 160 MB) with random
  weights; the stock VAELoader builds that architecture whatever the file, so
  it cannot be smaller.
- ``input/flowlora_demo/``: 4 small pictures with captions.

The weights are random: the demo shows the machinery (load, train, save, plot,
sample), not a useful LoRA. The end-to-end tests write the same files under the
names the shipped workflows expect (:func:`write_models`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from flowlora_tiny import TINY_TEXT_ENCODER, TINY_ZIMAGE_EXTRA, TINY_ZIMAGE_WIDTH  # noqa: E402

DEMO_FILES = {
    "unet": "flowlora_demo_zimage.safetensors",
    "text_encoder": "flowlora_demo_qwen3.safetensors",
    "vae": "flowlora_demo_ae.safetensors",
}
DEMO_DATASET = "flowlora_demo"
ZIMAGE_CONFIG = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": TINY_ZIMAGE_WIDTH, "n_layers": 2, "cap_feat_dim": TINY_TEXT_ENCODER["hidden_size"], "qk_norm": True, **TINY_ZIMAGE_EXTRA}
VAE_DDCONFIG = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
"""ComfyUI's built-in AutoencoderKL layout (comfy/sd.py) with Z-Image's 16 latent channels."""
CAPTIONS = (
    "a red circle on a cream background",
    "a blue square on a cream background",
    "a green triangle on a cream background",
    "a yellow star on a cream background",
)


def import_comfy() -> Path:
    """ComfyUI (``COMFYUI_PATH`` or ``.comfyui/ComfyUI``) on ``sys.path``, CPU mode."""
    root = Path(os.environ.get("COMFYUI_PATH") or REPO / ".comfyui" / "ComfyUI")
    if not (root / "main.py").is_file():
        raise SystemExit(f"no ComfyUI at {root}: run `make host` first (or set COMFYUI_PATH)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = True
    return root


def zimage_state(seed: int = 0) -> dict:
    import comfy.supported_models
    import torch

    with torch.device("meta"):
        model = comfy.supported_models.ZImage(dict(ZIMAGE_CONFIG)).get_model({})
    return _materialise(model.diffusion_model, seed, torch.float32)


def text_encoder_state(seed: int = 1) -> dict:
    import comfy.ops
    import comfy.text_encoders.llama
    import torch

    with torch.device("meta"):
        model = comfy.text_encoders.llama.Qwen3_4B(dict(TINY_TEXT_ENCODER), torch.float32, "meta", comfy.ops.disable_weight_init)
    return _materialise(model, seed, torch.float32)


def vae_state(seed: int = 2) -> dict:
    import comfy.ldm.models.autoencoder as ae
    import torch

    with torch.device("meta"):
        model = ae.AutoencodingEngine(
            regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
            encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": VAE_DDCONFIG},
            decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": VAE_DDCONFIG},
        )
    return _materialise(model, seed, torch.float16)


def _materialise(meta_module, seed: int, dtype) -> dict:
    """Seeded real tensors for the state dict of a module built on the meta device.

    Matrices and kernels ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), norm weights
    1 + 0.02 N, other vectors 0.02 N: finite, well-scaled activations.
    """
    import torch

    real = {}
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in meta_module.state_dict().items():
        if tensor.ndim >= 2:
            bound = 1.0 / math.sqrt(tensor[0].numel())
            values = (torch.rand(tensor.shape, generator=gen) * 2 - 1) * bound
        elif "norm" in name and name.endswith("weight"):
            values = 1.0 + 0.02 * torch.randn(tensor.shape, generator=gen)
        else:
            values = 0.02 * torch.randn(tensor.shape, generator=gen)
        real[name] = values.to(dtype).contiguous()
    return real


def save(path: Path, state: dict) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)
    return path


def write_models(models_dir: Path, unet: str, text_encoder: str, vae: str) -> dict[str, Path]:
    """Tiny Z-Image, text encoder and VAE under ``models_dir`` with the given file names (skips existing files)."""
    targets = {
        "unet": (models_dir / "diffusion_models" / unet, zimage_state),
        "text_encoder": (models_dir / "text_encoders" / text_encoder, text_encoder_state),
        "vae": (models_dir / "vae" / vae, vae_state),
    }
    out = {}
    for kind, (path, make) in targets.items():
        if not path.is_file():
            save(path, make())
        out[kind] = path
    return out


def write_dataset(folder: Path, size: int = 64, count: int = len(CAPTIONS)) -> Path:
    """``count`` pictures (``size`` x ``size`` PNG) of coloured shapes with same-stem captions."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    colours = ((200, 40, 40), (40, 70, 200), (40, 160, 60), (230, 200, 30))
    for i in range(count):
        image = Image.new("RGB", (size, size), (240, 230, 210))
        draw = ImageDraw.Draw(image)
        m, colour = size // 5, colours[i % len(colours)]
        box = (m, m, size - m, size - m)
        shape = i % 4
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour)
        elif shape == 2:
            draw.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=colour)
        else:
            c, r = size / 2, size / 2 - m
            pts = [(c + (r if k % 2 == 0 else r / 2.5) * math.sin(k * math.pi / 5), c - (r if k % 2 == 0 else r / 2.5) * math.cos(k * math.pi / 5)) for k in range(10)]
            draw.polygon(pts, fill=colour)
        image.save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(CAPTIONS[i % len(CAPTIONS)] + "\n", encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="ComfyUI base directory (models/ and input/ are written under it)")
    args = parser.parse_args(argv)
    import_comfy()
    paths = write_models(args.base / "models", **DEMO_FILES)
    dataset = write_dataset(args.base / "input" / DEMO_DATASET)
    for kind, path in paths.items():
        print(f"{kind:13s} {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"{'dataset':13s} {dataset}")


if __name__ == "__main__":
    main()
