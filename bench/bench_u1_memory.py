"""Peak memory of one U1 training step under the CPU-resident plan, against the weights' size.

Plan (issue 5, spec 5.11): bf16 weights live on the CPU; the understanding
tower encodes the prompt once (prefix KV cached); only the generation tower
and ``fm_modules`` take part in the step. The step here is forward + backward
of the x0 loss with ``fm_modules`` trainable (the default unfreeze set) at one
resolution, on a tiny U1 with the official key names.

On CUDA the generation tower is moved to the GPU (the understanding tower
stays on the CPU) and the peak is ``torch.cuda.max_memory_allocated``. On the
CPU the peak is the process's resident-set growth during the step, sampled
every millisecond by a thread (coarse, includes allocator slack).

Usage::

    .venv/bin/python bench/bench_u1_memory.py [--config tiny|small] [--size 256] [--device cpu|cuda] [--markdown]
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import harness  # noqa: E402

harness.register_package()

from flowlora.trainer_core.models.u1 import U1Config, build_towers  # noqa: E402
from flowlora.trainer_core.models.u1.config import LLMConfig, VisionConfig  # noqa: E402
from flowlora.trainer_core.models.u1.presets import DEFAULT_UNFREEZE  # noqa: E402
from tiny_u1 import tiny_config, tiny_state_dict  # noqa: E402

log = logging.getLogger("bench_u1_memory")

CONFIGS = {
    "tiny": tiny_config(),
    "small": U1Config(llm=LLMConfig(hidden_size=512, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=2, head_dim=64), vision=VisionConfig(hidden_size=128)),
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakRSS:
    """Samples RSS every millisecond in a thread; ``peak - start`` is the growth."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def run(config: str, size: int, device: str) -> dict:
    import re

    cfg = CONFIGS[config]
    state = tiny_state_dict(cfg, seed=0)
    with torch.device("meta"):
        prefix, gen = build_towers(cfg)
    prefix.load_state_dict({k: state[k] for k in prefix.state_dict()}, assign=True)
    gen.load_state_dict({k: state[k] for k in gen.state_dict()}, assign=True)
    del state
    ids = torch.randint(0, 151000, (1, 350), generator=torch.Generator().manual_seed(0))
    kv = prefix.encode(ids)  # understanding tower on the CPU, once per caption
    kv_bytes = sum(t.numel() * t.element_size() for t in kv.keys + kv.values)
    patterns = [re.compile(p) for p in DEFAULT_UNFREEZE]
    for name, p in gen.named_parameters():
        p.requires_grad_(any(r.search(name) for r in patterns))
    trainable = sum(p.numel() for p in gen.parameters() if p.requires_grad)
    gen.to(device)
    x0 = torch.rand(1, 3, size, size, device=device) * 2 - 1
    n = (size // 32) ** 2
    t = torch.tensor([0.4], device=device)
    eps = torch.randn(x0.shape, device=device) * cfg.noise_scale_for(n)
    z = t * x0 + (1 - t) * eps

    def step():
        out = gen(z, t, kv)
        loss = (out.float() - x0).pow(2).mean()
        loss.backward()
        return float(loss.detach())

    step()  # warm-up (allocator, kernels)
    gen.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        peak, growth = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_allocated() - base
    else:
        with PeakRSS() as m:
            t0 = time.perf_counter()
            step()
            secs = time.perf_counter() - t0
        peak, growth = m.peak, m.peak - m.start
    return {
        "config": config,
        "device": device,
        "image": f"{size}x{size} ({n} tokens)",
        "weights_total_MB": (nbytes(prefix) + nbytes(gen)) / 2**20,
        "gen_tower_MB": nbytes(gen) / 2**20,
        "understanding_tower_MB": nbytes(prefix) / 2**20,
        "prefix_kv_MB": kv_bytes / 2**20,
        "trainable_params": trainable,
        "step_growth_MB": growth / 2**20,
        "peak_MB": peak / 2**20,
        "step_s": secs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    parser.add_argument("--size", type=int, default=256, help="square image side in pixels (multiple of 32)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--markdown", action="store_true", help="one markdown table row")
    a = parser.parse_args()
    torch.set_num_threads(1)
    r = run(a.config, a.size, a.device)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.markdown:
        log.info("| %s | %s | %s | %.1f | %.1f | %.1f | %.2f | %d | %.1f | %.1f | %.2f |", r["config"], r["device"], r["image"], r["weights_total_MB"], r["gen_tower_MB"], r["understanding_tower_MB"], r["prefix_kv_MB"], r["trainable_params"], r["step_growth_MB"], r["peak_MB"], r["step_s"])
    else:
        for k, v in r.items():
            log.info("%-24s %s", k, f"{v:.2f}" if isinstance(v, float) else v)


if __name__ == "__main__":
    main()
