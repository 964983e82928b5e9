"""Decoding every image mode to RGB, and bad files named in errors."""

from __future__ import annotations

import numpy as np
import pytest
from flowlora.trainer_core.data.errors import DataError
from flowlora.trainer_core.data.images import load_rgb, probe
from PIL import Image
from test_data_support import save_bomb_png, save_exif_rotated, save_rgb


def pixels(path, **kw) -> np.ndarray:
    image = load_rgb(path, **kw)
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def test_rgba_is_composited_on_the_background(tmp_path):
    a = np.zeros((4, 6, 4), dtype=np.uint8)
    a[..., 0] = 255  # red
    a[:, :3, 3] = 255  # left: opaque
    a[:, 3:, 3] = 51  # right: alpha 0.2
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    out = pixels(tmp_path / "a.png", background=(0, 0, 200))
    assert out.shape == (4, 6, 3)
    assert (out[:, :3] == [255, 0, 0]).all()
    # 0.2 * (255, 0, 0) + 0.8 * (0, 0, 200) = (51, 0, 160)
    assert np.abs(out[:, 3:] - [51, 0, 160]).max() <= 1


def test_grey_palette_and_palette_transparency(tmp_path):
    Image.new("L", (5, 3), 77).save(tmp_path / "l.png")
    assert (pixels(tmp_path / "l.png") == 77).all()

    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.save(tmp_path / "p.png")
    assert (pixels(tmp_path / "p.png") == [10, 200, 30]).all()

    p.info["transparency"] = 1
    p.save(tmp_path / "pt.png", transparency=1)
    assert (pixels(tmp_path / "pt.png", background=(1, 2, 3)) == [1, 2, 3]).all()

    la = Image.new("LA", (3, 3), (100, 0))
    la.save(tmp_path / "la.png")
    assert (pixels(tmp_path / "la.png", background=(9, 8, 7)) == [9, 8, 7]).all()


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    out = pixels(tmp_path / "c.jpg")
    assert np.abs(out - [255, 0, 0]).max() <= 3


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode in ("I;16", "I")
    out = pixels(tmp_path / "g16.png")
    # round(v * 255 / 65535): 0, 4, 128, 255
    assert out[0, :, 0].tolist() == [0, 4, 128, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.mark.parametrize(
    "orientation, size, top_left, bottom_right",
    [
        (1, (40, 20), "red", "blue"),
        (3, (40, 20), "blue", "red"),  # rotated 180
        (6, (20, 40), "red", "blue"),  # rotate 90 cw: stored left (red) becomes the top
        (8, (20, 40), "blue", "red"),  # rotate 90 ccw: stored right (blue) becomes the top
    ],
)
def test_exif_orientation_is_applied_and_probe_agrees(tmp_path, orientation, size, top_left, bottom_right):
    path = save_exif_rotated(tmp_path / f"o{orientation}.jpg", 40, 20, orientation)
    info = probe(path)
    assert (info.width, info.height) == size and info.orientation == orientation
    out = pixels(path)
    assert out.shape == (size[1], size[0], 3)
    colours = {"red": [255, 0, 0], "blue": [0, 0, 255]}
    assert np.abs(out[2, 2] - colours[top_left]).max() <= 12
    assert np.abs(out[-3, -3] - colours[bottom_right]).max() <= 12


def test_bad_files_are_named_with_a_fix(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.png: is empty \(0 bytes\)"):
        probe(empty)

    text = tmp_path / "notes.jpg"
    text.write_text("this is not a JPEG")
    with pytest.raises(DataError, match=r"notes.jpg: is not an image Pillow can read") as e:
        probe(text)
    assert "remove it from the folder" in str(e.value)

    whole = save_rgb(tmp_path / "whole.png", 64, 64, seed=1)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert probe(cut).width == 64  # the header is intact
    with pytest.raises(DataError, match=r"cut.png: is truncated or corrupt"):
        load_rgb(cut)

    whole_jpg = save_rgb(tmp_path / "whole.jpg", 64, 64, seed=2, quality=90)
    cut_jpg = tmp_path / "cut.jpg"
    cut_jpg.write_bytes(whole_jpg.read_bytes()[:400])
    with pytest.raises(DataError, match=r"cut.jpg"):
        load_rgb(cut_jpg)


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    bomb = save_bomb_png(tmp_path / "bomb.png", 10_000, 10_000)
    with pytest.raises(DataError, match=r"bomb.png: is 10000x10000 = 100,000,000 pixels, above the decompression-bomb limit of 89,478,485") as e:
        probe(bomb)
    assert "downscale" in str(e.value)
    # beyond twice the limit Pillow itself refuses at open; still named, still a DataError
    huge = save_bomb_png(tmp_path / "huge.png", 30_000, 30_000)
    with pytest.raises(DataError, match=r"huge.png: is larger than Pillow's decompression-bomb limit"):
        load_rgb(huge)

    small = save_rgb(tmp_path / "small.png", 100, 100)
    assert probe(small).width == 100
    with pytest.raises(DataError, match=r"above the decompression-bomb limit of 5,000"):
        load_rgb(small, pixel_limit=5_000)
