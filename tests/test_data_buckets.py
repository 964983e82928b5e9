"""Bucket tables and assignments against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from flowlora.trainer_core.data.buckets import Bucket, BucketConfig, Plan, apply, auto_buckets, nearest, parse_buckets, plan
from flowlora.trainer_core.errors import ConfigError
from PIL import Image

B = Bucket


def test_auto_buckets_by_hand():
    # max 256^2 = 65536 px, step 64: for w = 64k, h = 64 * floor(1024 / w); aspect <= 4; mirrored
    # w=128 -> 512, 192 -> 320, 256 -> 256, 320 -> 192, 384 -> 128, 448 -> 128, 512 -> 128; 64 -> 1024 and >= 576 -> 64 exceed 4:1
    assert auto_buckets(65536, 64, 4.0) == (
        B(128, 512), B(128, 448), B(128, 384), B(192, 320), B(256, 256), B(320, 192), B(384, 128), B(448, 128), B(512, 128),
    )
    z_image = auto_buckets(1024 * 1024, 16)
    assert B(1024, 1024) in z_image and all(b.width % 16 == 0 and b.height % 16 == 0 for b in z_image)
    assert all(0.93 * 1024**2 <= b.area <= 1024**2 for b in z_image if 512 <= b.width <= 2048)


def test_u1_preset_is_the_spec_table():
    table = BucketConfig(mode="sensenova_u1", step=32).buckets()
    assert set(table) == {B(2048, 2048), B(2720, 1536), B(1536, 2720), B(2496, 1664), B(1664, 2496), B(2368, 1760), B(1760, 2368), B(2880, 1440), B(1440, 2880), B(3456, 1152), B(1152, 3456)}
    with pytest.raises(ConfigError, match=r"preset sensenova_u1 needs a multiple of 32"):
        BucketConfig(mode="sensenova_u1", step=16)


# (image W, H) -> (bucket, resize (w, h), left, top); U1 buckets, step 32, no upscale, centre crop.
# Worked by hand: nearest |ln(W/H) - ln(bw/bh)|, s = max(bw/W, bh/H), resize round(W*s), round(H*s).
U1_TABLE = {
    (4096, 4096): (B(2048, 2048), (2048, 2048), 0, 0),  # s = 0.5
    (4000, 3000): (B(2368, 1760), (2368, 1776), 0, 8),  # 4:3 -> 1.3455 (d .009) beats 1.5 (d .118); s = .592
    (3000, 4000): (B(1760, 2368), (1776, 2368), 8, 0),
    (7680, 4320): (B(2720, 1536), (2731, 1536), 5, 0),  # s = 1536/4320; 7680 s = 2730.67
    (6000, 2000): (B(3456, 1152), (3456, 1152), 0, 0),  # exactly 3:1, s = .576
    (5000, 2600): (B(2880, 1440), (2880, 1498), 0, 29),  # 1.923 -> 2.0 (d .039) beats 1.771 (d .082); 2600 * .576 = 1497.6
    (3000, 3000): (B(2048, 2048), (2048, 2048), 0, 0),
    (1000, 1000): (B(992, 992), (992, 992), 0, 0),  # would need s = 2.048: own bucket 32 * floor(1000/32)
    (2100, 1500): (B(2080, 1472), (2080, 1486), 0, 7),  # 2368x1760 needs s = 1.173; 65*32 x 46*32, s = 2080/2100, 1500 s = 1485.7
}


def test_u1_assignment_table():
    config = BucketConfig(mode="sensenova_u1", step=32)
    table = config.buckets()
    got = {size: tuple(plan(*size, config, table)) for size in U1_TABLE}
    assert got == {size: (b, r, left, top) for size, (b, r, left, top) in U1_TABLE.items()}


AUTO_TABLE = {
    (512, 512): (B(256, 256), (256, 256), 0, 0),
    (1000, 250): (B(512, 128), (512, 128), 0, 0),
    (300, 500): (B(192, 320), (192, 320), 0, 0),
    (900, 300): (B(384, 128), (384, 128), 0, 0),
    (700, 200): (B(448, 128), (448, 128), 0, 0),
    (640, 480): (B(320, 192), (320, 240), 0, 24),  # ln 1.333 = .288: 5/3 (d .223) beats 1 (d .288); s = .5
    (200, 200): (B(192, 192), (192, 192), 0, 0),  # 256x256 would upscale: 64 * floor(200/64)
}


def test_auto_assignment_table_and_upscale_switch():
    config = BucketConfig(mode="auto", max_pixels=65536, step=64)
    table = config.buckets()
    assert {size: tuple(plan(*size, config, table)) for size in AUTO_TABLE} == AUTO_TABLE
    up = BucketConfig(mode="auto", max_pixels=65536, step=64, allow_upscale=True)
    assert tuple(plan(200, 200, up, table)) == (B(256, 256), (256, 256), 0, 0)
    assert tuple(plan(100, 50, up, table)) == (B(320, 192), (384, 192), 32, 0)  # s = 3.84: 100 s = 384
    with pytest.raises(ConfigError, match=r"is below one bucket step \(64 px\)"):
        plan(100, 50, config, table)


def test_ties_and_crop_modes():
    table = parse_buckets("64x64, 128x32")
    assert nearest(128, 64, table) == B(64, 64)  # ln 2 is equally far from 1 and 4; equal areas; smaller width wins
    stretch = BucketConfig(mode="list", bucket_list="256x256", step=64, crop="stretch")
    assert plan(600, 300, stretch, stretch.buckets()) == Plan(B(256, 256), (256, 256), 0, 0)
    rand = BucketConfig(mode="list", bucket_list="256x256", step=64, crop="random")
    a = [plan(600, 300, rand, rand.buckets(), seed) for seed in range(20)]
    assert a == [plan(600, 300, rand, rand.buckets(), seed) for seed in range(20)]  # seeded
    assert all(p.resize == (512, 256) and p.top == 0 and 0 <= p.left <= 256 for p in a)
    assert len({p.left for p in a}) > 10


def test_apply_resizes_and_crops_the_planned_box():
    a = np.zeros((300, 600, 3), dtype=np.uint8)
    a[:, :300] = [255, 0, 0]
    a[:, 300:] = [0, 0, 255]
    image = Image.fromarray(a)
    config = BucketConfig(mode="list", bucket_list="256x256", step=64)
    p = plan(600, 300, config, config.buckets())
    assert p == Plan(B(256, 256), (512, 256), 128, 0)
    out = np.asarray(apply(image, p)).astype(int)
    assert out.shape == (256, 256, 3)
    assert (out[:, :100] == [255, 0, 0]).all() and (out[:, 156:] == [0, 0, 255]).all()
    assert np.array_equal(np.asarray(apply(image, p)), out)  # deterministic


def test_bucket_list_validation():
    assert parse_buckets("1024x1024; 1216 x 832\n832*1216, 1024x1024") == (B(1024, 1024), B(1216, 832), B(832, 1216))
    with pytest.raises(ConfigError, match=r"bucket_list = '1024 by 1024'"):
        parse_buckets("1024 by 1024")
    with pytest.raises(ConfigError, match=r"bucket_list = '1000x1000': every side must be a positive multiple of bucket_step = 16"):
        BucketConfig(mode="list", bucket_list="1024x1024, 1000x1000")
    with pytest.raises(ConfigError, match=r"bucket_list = '': is empty"):
        BucketConfig(mode="list", bucket_list="")
    with pytest.raises(ConfigError, match=r"unknown crop mode; valid: center, random, stretch"):
        BucketConfig(crop="top")
