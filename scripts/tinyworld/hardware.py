"""What the CPU offers for bfloat16, so a pretraining budget is read beside the hardware it was measured on.

The tiny-world pretraining budgets (45 minutes on 2 cores) were measured on a
CPU with AMX and AVX-512 BF16, where ``--bf16`` autocast is 1.2-1.3x faster
than fp32 (``bench/RESULTS.md``). Without those units PyTorch emulates bf16
matmuls: on a 2-core AVX2 AMD EPYC a tiny-U1 step took 20.1 s under
autocast against 0.82 s in fp32 (``bench/bench_tiny_u1_pretrain.py``,
2026-12-06). A ``--minutes`` budget then trains a fraction of the steps, so
the scripts say so before they start, and the U1 card names the CPU it was
trained on.
"""

from __future__ import annotations

import logging

import torch


def _probe(name: str) -> bool | None:
    """``torch.cpu.<name>()`` where this torch has it (a private probe), else None (unknown)."""
    fn = getattr(torch.cpu, name, None)
    return bool(fn()) if callable(fn) else None


def cpu_description() -> dict:
    """``{"capability", "amx", "avx512_bf16", "threads"}``: PyTorch's CPU kernel level, its bf16 units, the thread count."""
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "amx": _probe("_is_amx_tile_supported"),
        "avx512_bf16": _probe("_is_avx512_bf16_supported"),
        "threads": torch.get_num_threads(),
    }


def native_bf16(cpu: dict | None = None) -> bool | None:
    """True when the CPU has bf16 matrix units (AMX or AVX-512 BF16), False when it has neither, None when unknown."""
    cpu = cpu or cpu_description()
    if cpu["amx"] or cpu["avx512_bf16"]:
        return True
    if cpu["amx"] is None and cpu["avx512_bf16"] is None:
        return None
    return False


def describe(cpu: dict) -> str:
    """One line for a model card: ``"2 threads, AVX512 kernels, AMX"``."""
    units = [n for n, k in (("AMX", "amx"), ("AVX-512 BF16", "avx512_bf16")) if cpu.get(k)]
    return f"{cpu['threads']} CPU thread(s), {cpu['capability']} kernels, " + (" + ".join(units) if units else "no bf16 matrix units")


def warn_if_bf16_emulated(bf16: bool, log: logging.Logger) -> None:
    """Log a warning when ``--bf16`` autocast was asked for on a CPU that emulates it."""
    if bf16 and native_bf16() is False:
        log.warning(
            "--bf16 on a CPU without AMX or AVX-512 BF16 (%s): autocast is emulated and a step runs several times "
            "slower than fp32 (a tiny-U1 step: 20 s against 0.8 s in fp32 on a 2-core AVX2 EPYC), so a --minutes budget trains "
            "far fewer steps. Drop --bf16 (the same training in fp32, not the same bits) and budget by --steps.",
            describe(cpu_description()),
        )
