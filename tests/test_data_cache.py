"""The safetensors cache: keys, packing of conditioning, damaged entries rebuilt."""

from __future__ import annotations

import os
import time

import pytest
import torch
from flowlora.trainer_core.data.cache import TensorCache, file_digest, fingerprint_tensors, make_key, pack, unpack


def test_keys_are_canonical_and_sensitive():
    assert make_key({"a": 1, "b": [2, 3]}) == make_key({"b": [2, 3], "a": 1})
    assert make_key({"a": 1, "b": [2, 3]}) != make_key({"a": 1, "b": [3, 2]})
    assert len(make_key({})) == 64


def test_file_digest(tmp_path):
    (tmp_path / "x").write_bytes(b"abc")
    assert file_digest(tmp_path / "x") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # SHA-256("abc")


def test_fingerprint_sees_weight_changes():
    g = torch.Generator().manual_seed(0)
    w = {"a.weight": torch.randn(64, 32, generator=g), "a.bias": torch.randn(64, generator=g)}
    base = fingerprint_tensors(w.items())
    assert base == fingerprint_tensors({k: v.clone() for k, v in w.items()}.items())
    changed = {k: v.clone() for k, v in w.items()}
    changed["a.weight"] += 1e-3  # a fine-tune moves every value
    assert fingerprint_tensors(changed.items()) != base
    assert fingerprint_tensors({"b.weight": w["a.weight"], "a.bias": w["a.bias"]}.items()) != base  # names count
    assert fingerprint_tensors({**w, "meta": torch.empty(3, device="meta")}.items()) != base


def test_pack_round_trips_comfy_conditioning():
    cond = torch.randn(1, 7, 16)
    result = [[cond, {"pooled_output": cond.mean(1), "attention_mask": torch.ones(1, 7, dtype=torch.int64), "note": None, "scale": 1.5, "flag": True}]]
    tensors, skeleton = pack(result)
    assert sorted(tensors) == ["result.0.0", "result.0.1.attention_mask", "result.0.1.pooled_output"]
    back = unpack(tensors, skeleton)
    assert isinstance(back, list) and isinstance(back[0], list) and isinstance(back[0][1], dict)
    assert torch.equal(back[0][0], cond) and back[0][1]["attention_mask"].dtype == torch.int64
    assert back[0][1]["note"] is None and back[0][1]["scale"] == 1.5 and back[0][1]["flag"] is True
    assert unpack(*pack((1, "a")))[1] == "a" and isinstance(unpack(*pack((1, "a"))), tuple)
    with pytest.raises(TypeError, match=r"result\.0\.1\.hooks: object cannot be stored"):
        pack([[cond, {"hooks": object()}]])


def test_save_load_and_damaged_entries_are_rebuilt(tmp_path, caplog):
    cache = TensorCache(tmp_path)
    latent = torch.randn(4, 8, 8)
    key = make_key({"x": 1})
    path = cache.save("latents", key, {"latent": latent})
    assert path == tmp_path / "latents" / key[:2] / f"{key}.safetensors"
    assert torch.equal(cache.load("latents", key)["latent"], latent)
    assert cache.load("latents", make_key({"x": 2})) is None
    assert (cache.hits, cache.misses, cache.rebuilt) == (1, 1, 0)
    assert not list(path.parent.glob("*.tmp-*"))  # the temp file was renamed

    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # killed mid-write (without atomic rename)
    assert cache.load("latents", key) is None
    assert not path.exists() and cache.rebuilt == 1
    assert "is damaged" in caplog.text and "rebuilding" in caplog.text

    path.write_bytes(data[:5])  # not even a header
    assert cache.load("latents", key) is None and cache.rebuilt == 2

    garbled = bytearray(data)
    garbled[-1] ^= 0xFF  # same size, one tensor byte flipped (e.g. unsynced page after a crash)
    path.write_bytes(bytes(garbled))
    assert cache.load("latents", key) is None and cache.rebuilt == 3

    other = make_key({"x": 3})
    cache.save("latents", other, {"latent": latent})
    os.replace(cache.path("latents", other), path)  # an entry under the wrong name
    assert cache.load("latents", key) is None and cache.rebuilt == 4


def test_stale_temp_files_are_removed(tmp_path):
    cache = TensorCache(tmp_path)
    stale = tmp_path / "latents" / "ab" / "abc.safetensors.tmp-123"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    fresh = stale.with_name("abd.safetensors.tmp-124")
    fresh.write_bytes(b"in progress")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert cache.remove_stale_temps() == 1
    assert not stale.exists() and fresh.exists()
