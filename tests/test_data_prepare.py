"""Folder -> Dataset with real files and counting encoders; batches within one bucket.

The encoders here are real pure-torch functions that count their calls (see
``test_data_support.counting_encoders``); the ComfyUI VAE/CLIP path is in
``test_data_node.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from flowlora.trainer_core.data.buckets import Bucket, BucketConfig
from flowlora.trainer_core.data.captions import CaptionConfig
from flowlora.trainer_core.data.dataset import Dataset, Sample
from flowlora.trainer_core.data.errors import DataError, FatalDataError
from flowlora.trainer_core.data.prepare import DatasetConfig, Encoders, prepare
from flowlora.trainer_core.errors import ConfigError
from PIL import Image
from test_data_support import counting_encoders, save_bomb_png, save_exif_rotated, save_rgb

GOOD = ["cmyk.jpg", "g16.png", "grey.png", "pal.png", "rgba.png", "rot.jpg", "3_style/s1.png", "3_style/s2.jpg"]  # top level first, then N_name folders
BAD = {"bomb.png": "decompression-bomb", "cut.png": "truncated", "empty.png": "empty (0 bytes)", "fake.jpg": "not an image", "latin1.png": "not UTF-8"}


def make_folder(root: Path) -> Path:
    """8 good images of every mode (one without caption) and 5 bad files."""
    a = np.zeros((60, 100, 4), dtype=np.uint8)
    a[..., 1] = 255
    a[..., 3] = 128
    Image.fromarray(a, "RGBA").save(root / "rgba.png")
    Image.new("L", (64, 64), 77).save(root / "grey.png")  # no caption: default
    p = Image.new("P", (80, 40), 0)
    p.putpalette([10, 20, 30] + [0] * 765)
    p.save(root / "pal.png")
    Image.new("CMYK", (80, 80), (0, 0, 0, 0)).save(root / "cmyk.jpg")
    Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).save(root / "g16.png")
    save_exif_rotated(root / "rot.jpg", 96, 64, 6)
    save_rgb(root / "3_style" / "s1.png", 120, 90, seed=1)
    save_rgb(root / "3_style" / "s2.jpg", 90, 120, seed=2, quality=90)
    captions = {"rgba": "green glass", "pal": "dark blue", "cmyk": "white sheet", "g16": "ramp", "rot": "green glass", "3_style/s1": "noise one", "3_style/s2": "noise two\n---think---\nbe random"}
    for stem, text in captions.items():
        (root / f"{stem}.txt").write_text(text, encoding="utf-8")
    (root / "empty.png").write_bytes(b"")
    (root / "fake.jpg").write_text("hello")
    whole = save_rgb(root / "cut.png", 64, 64, seed=3)
    whole.write_bytes(whole.read_bytes()[:600])
    save_bomb_png(root / "bomb.png", 10_000, 10_000)
    save_rgb(root / "latin1.png", 32, 32)
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    return root


CONFIG = DatasetConfig(
    captions=CaptionConfig(trigger="sks", default_caption="a grey square"),
    buckets=BucketConfig(mode="auto", max_pixels=64 * 64, step=16),
    background=(0, 0, 0),
)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "data").mkdir()
    return make_folder(tmp_path / "data")


def test_cold_then_warm_run(folder, tmp_path, caplog):
    encoders, calls = counting_encoders()
    with caplog.at_level(logging.WARNING):
        cold = prepare(folder, CONFIG, encoders, tmp_path / "cache")
    names = [str(s.source.relative_to(folder)) for s in cold.samples]
    assert names == GOOD
    prompts = {n: s.prompt for n, s in zip(names, cold.samples, strict=True)}
    assert prompts["grey.png"] == "sks, a grey square" and prompts["rot.jpg"] == "sks, green glass"
    by_name = dict(zip(names, cold.samples, strict=True))
    assert by_name["3_style/s2.jpg"].think == "be random" and by_name["3_style/s2.jpg"].prompt == "sks, noise two"
    assert by_name["3_style/s1.png"].repeats == 3 and cold.epoch_length == 6 + 2 * 3
    assert calls == {"image": 8, "text": 7 + 1}  # 7 distinct prompts ("green glass" twice) + the empty prompt
    assert cold.stats["image_encodes"] == 8 and cold.stats["text_encodes"] == 8
    assert {Path(p).name: reason for p, reason in cold.skipped}.keys() == BAD.keys()
    for path, reason in cold.skipped:
        assert BAD[Path(path).name] in reason
        assert Path(path).stem in caplog.text  # latin1.txt: the log names the caption file

    for s in cold.samples:
        assert s.latent.shape == (4, s.bucket.height // 8, s.bucket.width // 8) and s.latent.dtype == torch.float32
    assert by_name["rot.jpg"].original_size == (64, 96) and by_name["rot.jpg"].bucket.height > by_name["rot.jpg"].bucket.width
    mix = torch.linspace(-1.0, 1.0, 12).reshape(4, 3)
    grey = by_name["grey.png"]
    assert torch.allclose(grey.latent, (mix.sum(1) * 77 / 255)[:, None, None].expand_as(grey.latent), atol=1e-6)
    rgba = by_name["rgba.png"]  # green at alpha 128/255 over black: (0, 128, 0)
    assert torch.allclose(rgba.latent, (mix[:, 1] * 128 / 255)[:, None, None].expand_as(rgba.latent), atol=1e-6)
    cond = cold.conditionings[by_name["pal.png"].conditioning]
    assert bytes(((cond[0][0][0, :, 0] * 255).round().to(torch.uint8)).tolist()).decode() == "sks, dark blue"
    assert cold.empty_conditioning[0][0].shape == (1, 1, 8)

    encoders2, calls2 = counting_encoders()
    warm = prepare(folder, CONFIG, encoders2, tmp_path / "cache")
    assert calls2 == {"image": 0, "text": 0}
    assert warm.stats["image_encodes"] == 0 and warm.stats["text_encodes"] == 0
    assert [s.source for s in warm.samples] == [s.source for s in cold.samples]
    for a, b in zip(cold.samples, warm.samples, strict=True):
        assert torch.equal(a.latent, b.latent) and a.bucket == b.bucket and a.crop == b.crop and a.prompt == b.prompt
        ca, cb = cold.conditionings[a.conditioning], warm.conditionings[b.conditioning]
        assert torch.equal(ca[0][0], cb[0][0]) and torch.equal(ca[0][1]["pooled_output"], cb[0][1]["pooled_output"])
    assert torch.equal(warm.empty_conditioning[0][0], cold.empty_conditioning[0][0])


def test_cache_invalidation_and_half_written_entries(folder, tmp_path):
    cache = tmp_path / "cache"
    prepare(folder, CONFIG, counting_encoders()[0], cache)

    entry = sorted((cache / "latents").rglob("*.safetensors"))[3]
    entry.write_bytes(entry.read_bytes()[:-50])  # half-written by a killed run
    enc, calls = counting_encoders()
    again = prepare(folder, CONFIG, enc, cache)
    assert calls == {"image": 1, "text": 0} and again.stats["cache_rebuilt"] == 1

    p = Image.new("P", (80, 40), 0)
    p.putpalette([200, 20, 30] + [0] * 765)
    p.save(folder / "pal.png")  # new content, same name
    enc, calls = counting_encoders()
    prepare(folder, CONFIG, enc, cache)
    assert calls == {"image": 1, "text": 0}

    other = Encoders(enc.encode_image, enc.encode_text, "another-vae", enc.text_id)
    enc_calls_before = calls["image"]
    prepare(folder, CONFIG, other, cache)
    assert calls["image"] - enc_calls_before == 8 and calls["text"] == 0

    enc, calls = counting_encoders()
    prepare(folder, DatasetConfig(captions=CaptionConfig(trigger="zz", default_caption="a grey square"), buckets=CONFIG.buckets, background=(0, 0, 0)), enc, cache)
    assert calls == {"image": 0, "text": 7}  # the 7 new prompts only; the empty prompt is cached

    enc, calls = counting_encoders()
    prepare(folder, CONFIG, enc, None)  # cache off
    assert calls == {"image": 8, "text": 8}


def test_policies_and_folder_errors(folder, tmp_path):
    fail = DatasetConfig(captions=CONFIG.captions, buckets=CONFIG.buckets, on_bad_file="fail")
    with pytest.raises(DataError, match=r"bomb.png: is 10000x10000"):
        prepare(folder, fail, counting_encoders()[0], None)
    strict = DatasetConfig(captions=CaptionConfig(missing="fail"), buckets=CONFIG.buckets)  # skip bad files, but fail on a missing caption
    with pytest.raises(FatalDataError, match=r"cut.png: has no caption file cut.txt"):  # first caption-less file whose header reads
        prepare(folder, strict, counting_encoders()[0], None)
    skip = DatasetConfig(captions=CaptionConfig(missing="skip"), buckets=CONFIG.buckets)
    ds = prepare(folder, skip, counting_encoders()[0], None)
    assert "grey.png" not in [s.source.name for s in ds.samples] and len(ds) == 7
    assert ("missing_caption = skip" in dict(ds.skipped)[str(folder / "grey.png")])

    with pytest.raises(DataError, match=r"missing: does not exist"):
        prepare(tmp_path / "missing", CONFIG, counting_encoders()[0], None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: holds no png/jpg/jpeg/webp images"):
        prepare(tmp_path / "empty", CONFIG, counting_encoders()[0], None)
    (tmp_path / "allbad").mkdir()
    (tmp_path / "allbad" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"allbad: has no usable image \(1 skipped\). First: .*x.png: is empty"):
        prepare(tmp_path / "allbad", CONFIG, counting_encoders()[0], None)
    with pytest.raises(ConfigError, match=r"on_bad_file = 'ignore'"):
        DatasetConfig(on_bad_file="ignore")


def synthetic(caption_dropout: float = 0.0) -> Dataset:
    a, b = Bucket(64, 32), Bucket(32, 32)

    def s(i, bucket, repeats=1):
        return Sample(Path(f"/d/{i}.png"), bucket, torch.full((4, bucket.height // 8, bucket.width // 8), float(i)), f"p{i}", i, repeats=repeats)

    samples = (s(0, a), s(1, a, repeats=2), s(2, a), s(3, b), s(4, b))
    return Dataset(samples, tuple(f"cond{i}" for i in range(5)), "empty", caption_dropout)


def test_batches_stay_in_one_bucket_and_are_seeded():
    ds = synthetic()
    assert ds.bucket_counts() == {Bucket(32, 32): 2, Bucket(64, 32): 4}
    epoch = ds.batches(2, torch.Generator().manual_seed(0))
    assert sorted(i for batch in epoch for i in batch) == [0, 1, 1, 2, 3, 4]
    assert all(len({ds.samples[i].bucket for i in batch}) == 1 for batch in epoch)
    assert epoch == ds.batches(2, torch.Generator().manual_seed(0))
    orders = {tuple(map(tuple, ds.batches(2, torch.Generator().manual_seed(seed)))) for seed in range(10)}
    assert len(orders) > 1
    assert [len(b) for b in ds.batches(3, torch.Generator().manual_seed(0), drop_last=True)] == [3]  # 4 in 64x32 -> one full batch; 2 in 32x32 -> none
    assert ds.batches(10, torch.Generator(), shuffle=False) == [[3, 4], [0, 1, 1, 2]]  # by aspect: 1:1 first

    batch = ds.collate([0, 1, 2], torch.Generator().manual_seed(0))
    assert batch.latents.shape == (3, 4, 4, 8) and batch.latents[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0]
    assert batch.conditionings == ("cond0", "cond1", "cond2") and batch.sources[2] == Path("/d/2.png")
    assert batch.dropped.tolist() == [False] * 3 and batch.bucket == Bucket(64, 32)
    with pytest.raises(ConfigError, match=r"mixes buckets"):
        ds.collate([0, 3], torch.Generator())


def test_caption_dropout_uses_the_empty_conditioning():
    everything = synthetic(1.0).collate([0, 1], torch.Generator())
    assert everything.conditionings == ("empty", "empty") and everything.prompts == ("", "")
    ds = synthetic(0.3)
    g = torch.Generator().manual_seed(0)
    dropped = torch.cat([ds.collate([3, 4], g).dropped for _ in range(2000)])
    assert abs(dropped.double().mean().item() - 0.3) < 0.03
    stream = synthetic(0.3).iterate(2, torch.Generator().manual_seed(1))
    first = [next(stream) for _ in range(8)]
    assert sum(len(x.indices) for x in first[:3]) == 6  # one epoch = 3 batches of 2, then the next epoch starts
    assert sorted(i for x in first[3:6] for i in x.indices) == [0, 1, 1, 2, 3, 4]
