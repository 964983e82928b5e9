"""Cold vs warm dataset preparation through the Dataset node, side by side in one run.

Generates N images (PNG/JPEG noise, random sizes and aspects, captions) and
runs ``DatasetNode.execute`` twice on real ComfyUI parts: a tiny AutoencoderKL
(``comfy.sd.VAE``, 4 latent channels) and a tiny SD1 CLIP (``comfy.sd.CLIP``).
Cold: empty cache, every image decoded, resized and encoded. Warm: same
folder, same encoders; every latent and conditioning comes from the cache.

    .venv/bin/python bench/bench_dataset.py [--images 200] [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import harness  # noqa: E402


def make_images(folder: Path, count: int, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w, h = (int(v) for v in rng.integers(160, 321, 2))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        name = f"img{i:04d}" + (".png" if i % 2 else ".jpg")
        Image.fromarray(pixels).save(folder / name, **({} if i % 2 else {"quality": 90}))
        (folder / name).with_suffix(".txt").write_text(f"caption number {i % 50}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    harness.register_package()
    harness.import_comfy()
    import torch

    torch.set_num_threads(1)
    from flowlora.nodes import dataset as node
    from test_data_node import WIDGETS, count_calls, tiny_clip, tiny_vae

    vae, clip = tiny_vae(), tiny_clip()
    vae_calls = count_calls(vae.first_stage_model, "encode")
    clip_calls = count_calls(clip.cond_stage_model, "encode_token_weights")
    widgets = {**WIDGETS, "max_pixels": 128 * 128, "bucket_step": 16}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder, cache = Path(tmp) / "data", Path(tmp) / "cache"
        make_images(folder, args.images)

        def run(label: str) -> tuple[float, object]:
            vae_calls[0] = clip_calls[0] = 0
            start = time.perf_counter()
            dataset, _ = node.DatasetNode.execute(folder=str(folder), vae=vae, clip=clip, cache_dir=str(cache), **widgets).result
            seconds = time.perf_counter() - start
            rows.append((label, seconds, vae_calls[0], clip_calls[0], len(dataset), len(dataset.bucket_counts())))
            return seconds, dataset

        cold, first = run("cold (empty cache)")
        warm = []
        for i in range(args.warm_runs):
            seconds, again = run(f"warm #{i + 1}")
            warm.append(seconds)
            assert all(torch.equal(a.latent, b.latent) for a, b in zip(first.samples, again.samples, strict=True))
    median = statistics.median(warm)
    if args.markdown:
        print("| run | seconds | VAE encodes | text encodes | images | buckets |")
        print("|---|---|---|---|---|---|")
        for label, seconds, v, t, n, b in rows:
            print(f"| {label} | {seconds:.2f} | {v} | {t} | {n} | {b} |")
        print(f"\ncold / warm (median of {len(warm)}) = {cold / median:.1f}x")
    else:
        for row in rows:
            print(*row, sep="\t")
        print(f"speedup {cold / median:.1f}x")


if __name__ == "__main__":
    main()
