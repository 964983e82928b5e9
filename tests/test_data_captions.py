"""Folder scanning, kohya repeat folders, captions, think sections and templates."""

from __future__ import annotations

import logging

import pytest
from flowlora.trainer_core.data.captions import MAX_CAPTION_BYTES, CaptionConfig, SourceImage, read_caption, scan_folder, split_think
from flowlora.trainer_core.data.errors import DataError, FatalDataError
from flowlora.trainer_core.errors import ConfigError
from test_data_support import save_rgb


def test_scan_finds_images_repeats_and_captions(tmp_path, caplog):
    save_rgb(tmp_path / "b.PNG", 8, 8)
    (tmp_path / "b.txt").write_text("bee")
    save_rgb(tmp_path / "a.jpg", 8, 8)
    (tmp_path / "notes.md").write_text("not an image")
    save_rgb(tmp_path / "10_my style" / "c.webp", 8, 8)
    (tmp_path / "10_my style" / "c.txt").write_text("sea")
    save_rgb(tmp_path / ".flowlora_cache" / "x.png", 8, 8)
    save_rgb(tmp_path / "misc" / "d.png", 8, 8)
    save_rgb(tmp_path / "0_off" / "e.png", 8, 8)
    with caplog.at_level(logging.WARNING):
        found = scan_folder(tmp_path)
    assert [(f.path.name, f.repeats, f.folder_name, f.caption_path.name if f.caption_path else None) for f in found] == [
        ("a.jpg", 1, "", None),
        ("b.PNG", 1, "", "b.txt"),
        ("c.webp", 10, "my style", "c.txt"),
    ]
    assert "misc: ignored; only subfolders named N_name" in caplog.text
    assert "0_off: ignored" in caplog.text


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match=r"nope: does not exist; give an absolute folder path"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match=r"empty: holds no png/jpg/jpeg/webp images"):
        scan_folder(tmp_path / "empty")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"file.png: is not a folder"):
        scan_folder(tmp_path / "file.png")


@pytest.mark.parametrize(
    "text, caption, think",
    [
        ("a red fox", "a red fox", None),
        ("  a fox \n---think---\n1. plan\n2. draw\n", "a fox", "1. plan\n2. draw"),
        ("a fox\n  ----- THINK ---  \nreason", "a fox", "reason"),
        ("a fox\n---think---\n   \n", "a fox", None),
        ("a fox --- think --- inline is not a delimiter", "a fox --- think --- inline is not a delimiter", None),
    ],
)
def test_think_sections(text, caption, think):
    assert split_think(text) == (caption, think)


def test_caption_files_utf8_bom_and_bad_bytes(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffcafé au lait".encode("utf-8"))
    assert read_caption(tmp_path / "a.txt") == ("café au lait", None)
    (tmp_path / "b.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match=r"b.txt: is not UTF-8 text \(byte 0xe9 at offset 3\); re-save the caption as UTF-8"):
        read_caption(tmp_path / "b.txt")


@pytest.mark.parametrize(
    "trigger, template, expected",
    [
        ("sks", "{trigger}, {caption}", "sks, a dog on grass"),
        ("", "{trigger}, {caption}", "a dog on grass"),
        ("", "photo of {trigger} person, {caption}", "photo of person, a dog on grass"),
        ("sks", "{caption}. Style: {trigger}", "a dog on grass. Style: sks"),
        ("", "{caption}. Style: {trigger}", "a dog on grass. Style"),  # separators next to an empty trigger go
        ("sks", "{trigger} {folder}: {caption} | {think}", "sks dogs: a dog on grass | why"),
    ],
)
def test_templates(trigger, template, expected):
    assert CaptionConfig(trigger=trigger, template=template).render("a dog on grass", "why", "dogs") == expected


def test_config_validation():
    with pytest.raises(ConfigError, match=r"unknown placeholder\(s\) capiton"):
        CaptionConfig(template="{trigger}, {capiton}")
    with pytest.raises(ConfigError, match=r"must contain {caption} or {trigger}"):
        CaptionConfig(template="just words")
    with pytest.raises(ConfigError, match=r"caption_dropout = 1.5"):
        CaptionConfig(dropout=1.5)
    with pytest.raises(ConfigError, match=r"unknown missing-caption policy; valid: default, folder_name, skip, fail"):
        CaptionConfig(missing="ignore")


def test_missing_caption_policies(tmp_path):
    src = SourceImage(tmp_path / "10_cat" / "x.png", None, 10, "cat")
    assert CaptionConfig(missing="default", default_caption="a photo").caption_for(src) == ("a photo", None)
    assert CaptionConfig(missing="folder_name").caption_for(src) == ("cat", None)
    assert CaptionConfig(missing="skip").caption_for(src) is None
    with pytest.raises(FatalDataError, match=r"x.png: has no caption file x.txt; write one"):
        CaptionConfig(missing="fail").caption_for(src)
    # an empty caption with a trigger is the trigger alone (kohya class-token style)
    assert CaptionConfig(trigger="sks").render("") == "sks"


def test_caption_size_limit_nul_bytes_and_empty_captions(tmp_path, caplog):
    big = tmp_path / "big.txt"
    big.write_bytes(b"a dog " * 200_000)  # 1.2 MB: used to reach the text encoder and ask for hundreds of GB
    with pytest.raises(DataError, match=rf"{big}: is a 1,200,000-byte caption, above the limit of 65,536 bytes; shorten it"):
        read_caption(big)
    edge = tmp_path / "edge.txt"
    edge.write_bytes(b"x" * MAX_CAPTION_BYTES)
    assert read_caption(edge) == ("x" * MAX_CAPTION_BYTES, None)

    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes("a red fox".encode("utf-16-le"))  # UTF-16 without BOM is valid UTF-8 with NULs
    with caplog.at_level(logging.WARNING):
        assert read_caption(utf16) == ("a red fox", None)
    assert f"{utf16}: 9 NUL bytes removed from the caption" in caplog.text

    caplog.clear()
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\t\n")
    with caplog.at_level(logging.WARNING):
        assert read_caption(blank) == ("", None)
    assert f"{blank}: the caption is empty" in caplog.text


def test_big_caption_is_a_bad_file_in_a_dataset(tmp_path, caplog):
    from flowlora.trainer_core.data.prepare import DatasetConfig, prepare
    from test_data_support import counting_encoders

    save_rgb(tmp_path / "ok.png", 32, 32)
    (tmp_path / "ok.txt").write_text("fine")
    save_rgb(tmp_path / "huge.png", 32, 32, seed=1)
    (tmp_path / "huge.txt").write_bytes(b"y" * (MAX_CAPTION_BYTES + 1))
    with caplog.at_level(logging.WARNING):
        ds = prepare(tmp_path, DatasetConfig(), counting_encoders()[0], None)
    assert [s.source.name for s in ds.samples] == ["ok.png"]
    assert dict(ds.skipped)[str(tmp_path / "huge.png")].startswith("is a 65,537-byte caption")
    assert f"{tmp_path / 'huge.txt'}: is a 65,537-byte caption" in caplog.text
    with pytest.raises(DataError, match=r"huge.txt: is a 65,537-byte caption"):
        prepare(tmp_path, DatasetConfig(on_bad_file="fail"), counting_encoders()[0], None)


def test_links_out_of_the_dataset_folder_are_refused(tmp_path, caplog):
    from flowlora.trainer_core.data.prepare import DatasetConfig, prepare
    from test_data_support import counting_encoders

    outside, data = tmp_path / "outside", tmp_path / "data"
    save_rgb(outside / "secret.png", 32, 32, seed=4)
    (outside / "secret.txt").write_text("private")
    save_rgb(outside / "repeat" / "r.png", 32, 32, seed=5)
    save_rgb(data / "own.png", 32, 32)
    (data / "own.txt").write_text("mine")
    (data / "linked.png").symlink_to(outside / "secret.png")
    save_rgb(data / "cap.png", 32, 32, seed=6)
    (data / "cap.txt").symlink_to(outside / "secret.txt")
    (data / "2_more").symlink_to(outside / "repeat", target_is_directory=True)
    save_rgb(data / "inner.png", 32, 32, seed=7)
    (data / "alias.png").symlink_to(data / "inner.png")  # a link inside the folder is fine

    with caplog.at_level(logging.WARNING):
        ds = prepare(data, DatasetConfig(), counting_encoders()[0], None)
    assert sorted(s.source.name for s in ds.samples) == ["alias.png", "inner.png", "own.png"]
    skipped = dict(ds.skipped)
    assert set(skipped) == {str(data / "linked.png"), str(data / "cap.png"), str(data / "2_more" / "r.png")}
    assert skipped[str(data / "linked.png")].startswith(f"is a link to {outside / 'secret.png'}, outside the dataset folder {data}")
    assert f"{data / 'cap.txt'}: is a link to {outside / 'secret.txt'}" in caplog.text
    with pytest.raises(DataError, match=r"is a link to .*, outside the dataset folder"):
        prepare(data, DatasetConfig(on_bad_file="fail"), counting_encoders()[0], None)

    followed = prepare(data, DatasetConfig(), counting_encoders()[0], None, follow_links_out=True)
    assert len(followed) == 6 and followed.skipped == ()
