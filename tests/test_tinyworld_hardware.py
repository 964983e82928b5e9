"""tinyworld.hardware: a pretraining run says when --bf16 autocast would be emulated, and records the CPU it ran on."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from harness import REPO

sys.path.insert(0, str(REPO / "scripts"))
from tinyworld import hardware


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "native"),
    [(True, False, True), (False, True, True), (False, False, False), (None, None, None)],
)
def test_native_bf16_reads_the_matrix_units(amx, avx512_bf16, native):
    cpu = {"capability": "AVX2", "amx": amx, "avx512_bf16": avx512_bf16, "threads": 2}
    assert hardware.native_bf16(cpu) is native


def test_describe_names_threads_kernels_and_units():
    assert hardware.describe({"capability": "AVX512", "amx": True, "avx512_bf16": True, "threads": 2}) == "2 CPU thread(s), AVX512 kernels, AMX + AVX-512 BF16"
    assert hardware.describe({"capability": "AVX2", "amx": False, "avx512_bf16": False, "threads": 1}) == "1 CPU thread(s), AVX2 kernels, no bf16 matrix units"


def test_this_cpu_is_described_from_torch():
    cpu = hardware.cpu_description()
    assert cpu["capability"] == torch.backends.cpu.get_cpu_capability() and cpu["threads"] == torch.get_num_threads()
    assert cpu["amx"] in (True, False, None) and cpu["avx512_bf16"] in (True, False, None)


@pytest.mark.parametrize(("units", "bf16", "warned"), [(False, True, True), (True, True, False), (False, False, False)])
def test_bf16_on_a_cpu_that_emulates_it_is_warned(monkeypatch, caplog, units, bf16, warned):
    """The warning depends on torch's own probes of the CPU (set here) and on --bf16 only."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: units)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: units)
    log = logging.getLogger("test_hardware")
    with caplog.at_level(logging.WARNING, logger="test_hardware"):
        hardware.warn_if_bf16_emulated(bf16, log)
    assert any("--bf16 on a CPU without AMX or AVX-512 BF16" in r.message for r in caplog.records) is warned
