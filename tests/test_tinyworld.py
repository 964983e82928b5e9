"""The tiny world (scripts/tinyworld): determinism, grammar, split, content metric, style sets, Content Accuracy node."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from harness import REPO

sys.path.insert(0, str(REPO / "scripts"))
import tinyworld as tw
from tinyworld import content
from tinyworld.make_style_sets import DEFAULT_COUNT, DEFAULT_HELDOUT, heldout_prompts, write_style_set

STYLE_SETS = REPO / "scripts" / "tinyworld" / "style_sets"


def test_same_index_same_scene_and_bytes():
    for i in (0, 1, 17, 10**9 + 3):
        assert tw.scene(i) == tw.scene(i)
        for style in tw.STYLES:
            assert tw.render(tw.scene(i), style).tobytes() == tw.render(tw.scene(i), style).tobytes()
    images, captions = tw.batch(range(4), style="ink")
    again, captions_again = tw.batch(range(4), style="ink")
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and captions == captions_again


def test_different_indices_differ():
    scenes = [tw.scene(i) for i in range(200)]
    assert len({tw.content_key(s) for s in scenes}) > 190
    assert not np.array_equal(tw.render(scenes[0]), tw.render(scenes[1]))


def test_scene_is_one_seeded_generator_per_index():
    """No global random state: drawing numpy's global RNG in between changes nothing."""
    first = tw.scene(5)
    np.random.seed(123)
    np.random.random(1000)
    assert tw.scene(5) == first


@pytest.mark.parametrize("split", ["train", "heldout", "any"])
def test_captions_parse_back(split):
    for i in range(300):
        s = tw.scene(i, split)
        assert tw.parse_caption(tw.caption(s)) == s
        assert tw.parse_caption(tw.caption(s, "inkstyle")) == s
        assert tw.caption(s, "inkstyle") == "inkstyle, " + tw.caption(s)


def test_caption_grammar_example():
    s = tw.Scene((tw.SceneObject("star", "red", "top left", "large"), tw.SceneObject("ring", "green", "bottom right", "small")), "pale blue")
    assert tw.caption(s) == "a large red star at the top left and a small green ring at the bottom right on a pale blue background"
    with pytest.raises(ValueError, match="not in the tiny-world grammar"):
        tw.parse_caption("a large red hexagon at the top on a pale blue background")


def test_grammar_covers_every_attribute():
    scenes = [tw.scene(i, "any") for i in range(2000)]
    objects = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objects} == set(tw.SHAPES) and len(tw.SHAPES) >= 6
    assert {o.colour for o in objects} == set(tw.COLOURS) and len(tw.COLOURS) >= 8
    assert {o.position for o in objects} == set(tw.POSITIONS) and len(tw.POSITIONS) == 9
    assert {o.size for o in objects} == set(tw.SIZES)
    assert {s.background for s in scenes} == set(tw.BACKGROUNDS)
    assert {len(s.objects) for s in scenes} == {1, 2}
    assert all(len({o.position for o in s.objects}) == len(s.objects) for s in scenes)


def test_named_colours_are_far_apart_and_from_backgrounds():
    objects = content.lab(np.array(list(tw.COLOURS.values())) / 255)
    backgrounds = content.lab(np.array(list(tw.BACKGROUNDS.values())) / 255)
    between = np.linalg.norm(objects[:, None] - objects[None], axis=-1)
    assert between[~np.eye(len(objects), dtype=bool)].min() > 40
    assert np.linalg.norm(objects[:, None] - backgrounds[None], axis=-1).min() > 1.5 * content.FOREGROUND_DELTA_E


def test_heldout_split_is_disjoint_by_content():
    train = {tw.content_key(tw.scene(i, "train")) for i in range(3000)}
    heldout = {tw.content_key(tw.scene(i, "heldout")) for i in range(300)}
    assert not train & heldout
    assert all(tw.is_heldout(tw.scene(i, "heldout")) for i in range(50))
    # "A and B" is the same picture as "B and A": the key, hence the split, ignores order
    s = next(tw.scene(i, "heldout") for i in range(100) if len(tw.scene(i, "heldout").objects) == 2)
    assert tw.is_heldout(tw.Scene(s.objects[::-1], s.background))


def test_content_metric_on_ground_truth():
    scenes = [tw.scene(i, "heldout") for i in range(200)]
    for style, floor in (("plain", 0.98), ("ink", 0.97), ("mosaic", 0.97)):
        scores = content.score_images(np.stack([tw.render(s, style) for s in scenes]), scenes)
        assert content.accuracy(scores) >= floor, (style, content.attribute_accuracy(scores))


def test_content_metric_catches_wrong_content():
    s = tw.scene(3, "heldout")
    blank = np.full((64, 64, 3), tw.BACKGROUNDS[s.background], np.uint8)
    assert content.accuracy([content.score_image(blank, s)]) == 0.0
    obj = s.objects[0]
    other = tw.SceneObject(
        tw.SHAPES[(tw.SHAPES.index(obj.shape) + 1) % 6], tw.COLOURS and list(tw.COLOURS)[(list(tw.COLOURS).index(obj.colour) + 1) % 8],
        tw.POSITIONS[(tw.POSITIONS.index(obj.position) + 4) % 9], obj.size,
    )
    wrong = tw.Scene((other,), s.background)
    assert content.accuracy([content.score_image(tw.render(wrong), tw.Scene((obj,), s.background))]) == 0.0


def test_shape_confusion_counts_how_each_shape_is_read():
    """On clean renders the shape confusion is (nearly) diagonal; a blank image reads every object as missing."""
    scenes = [tw.scene(i, "heldout") for i in range(60)]
    table = content.confusion(content.score_images(np.stack([tw.render(s) for s in scenes]), scenes))
    objects = sum(len(s.objects) for s in scenes)
    assert sum(sum(row.values()) for row in table.values()) == objects
    assert sum(table[name].get(name, 0) for name in table) >= 0.97 * objects
    blank = np.stack([np.full((64, 64, 3), tw.BACKGROUNDS[s.background], np.uint8) for s in scenes[:5]])
    missing = content.confusion(content.score_images(blank, scenes[:5]))
    assert {found for row in missing.values() for found in row} == {content.MISSING}
    markdown = content.confusion_markdown({"star": {"star": 3, content.MISSING: 1}})
    assert "| star | 0 | 0 | 0 | 3 | 0 | 0 | 1 |" in markdown and markdown.count("\n") == 2 + len(tw.SHAPES) - 1


def test_accuracy_by_object_count_separates_binding_from_drawing():
    """Clean renders are right alone and in pairs; swapping the two objects' colours is wrong only in pairs."""
    scenes = [tw.scene(i, "heldout") for i in range(40)]
    clean = content.by_object_count(content.score_images(np.stack([tw.render(s) for s in scenes]), scenes))
    assert set(clean) == {"1", "2"} and all(v >= 0.97 for row in clean.values() for v in row.values())
    swapped = [tw.Scene(tuple(replace(o, colour=p.colour) for o, p in zip(s.objects, s.objects[::-1], strict=True)), s.background) for s in scenes]
    table = content.by_object_count(content.score_images(np.stack([tw.render(s) for s in swapped]), scenes))
    distinct = [s for s in scenes if len(s.objects) == 2 and s.objects[0].colour != s.objects[1].colour]
    assert table["1"]["colour"] >= 0.97 and table["2"]["colour"] <= 1 - len(distinct) / sum(len(s.objects) == 2 for s in scenes) + 0.03
    assert table["2"]["position"] >= 0.97
    assert "| 2 | " in content.by_object_count_markdown(table)


def test_accuracy_by_size_separates_small_from_large():
    """Clean renders are right at both sizes; drawing every small object as a circle is wrong only in the small rows."""
    scenes = [tw.scene(i, "heldout") for i in range(40)]
    clean = content.by_size(content.score_images(np.stack([tw.render(s) for s in scenes]), scenes))
    assert set(clean) == {"1 large", "1 small", "2 large", "2 small"} and all(v >= 0.97 for row in clean.values() for v in row.values())
    blobs = [tw.Scene(tuple(replace(o, shape="circle") if o.size == "small" else o for o in s.objects), s.background) for s in scenes]
    table = content.by_size(content.score_images(np.stack([tw.render(s) for s in blobs]), scenes))
    for key in ("1 small", "2 small"):
        smalls = [o for s in scenes for o in s.objects if f"{len(s.objects)} {o.size}" == key]
        assert table[key]["shape"] == pytest.approx(sum(o.shape == "circle" for o in smalls) / len(smalls), abs=0.05)
        assert table[key]["colour"] >= 0.97
    assert table["1 large"]["shape"] >= 0.97 and table["2 large"]["shape"] >= 0.9
    markdown = content.by_size_markdown(table)
    assert "| 2, small | " in markdown and markdown.count("\n") == 1 + len(table)
    assert "small 5.5 px" in content.SIZE_NOTE


def test_binding_diagnosis_reads_caption_order_and_fits_a_separable_probe():
    """diagnose_binding: swapped colours are wrong only for objects of two-object scenes, by caption order; the
    linear probe reads a colour that the feature carries and not one it does not."""
    sys.path.insert(0, str(REPO / "scripts" / "tinyworld"))
    import diagnose_binding

    scenes = [tw.scene(i, "heldout") for i in range(40)]
    swapped = [tw.Scene(tuple(replace(o, colour=p.colour) for o, p in zip(s.objects, s.objects[::-1], strict=True)), s.background) for s in scenes]
    table = diagnose_binding.by_caption_order(content.score_images(np.stack([tw.render(s) for s in swapped]), scenes))
    assert table["alone"]["colour"] >= 0.97 and table["first of two"]["colour"] < 0.3 and table["second of two"]["colour"] < 0.3
    assert min(table[k]["position"] for k in table) >= 0.97
    rng = np.random.default_rng(0)
    colours = [list(tw.COLOURS)[i % len(tw.COLOURS)] for i in range(240)]
    carried = [(np.eye(8)[list(tw.COLOURS).index(c)] + 0.05 * rng.normal(size=8), c) for c in colours]
    noise = [(rng.normal(size=8), c) for c in colours]
    assert diagnose_binding.probe_accuracy(carried) == 1.0 and diagnose_binding.probe_accuracy(noise) < 0.35


def test_content_metric_tolerates_mild_noise():
    rng = np.random.default_rng(0)
    scenes = [tw.scene(i, "heldout") for i in range(100)]
    images = np.stack([tw.render(s) for s in scenes]) / 255.0
    noisy = torch.from_numpy(np.clip(images + rng.normal(0, 0.04, images.shape), 0, 1)).float()
    assert content.accuracy(content.score_images(noisy, scenes)) >= 0.95


def test_committed_style_sets_match_the_generator(tmp_path):
    for style, trigger in tw.TRIGGERS.items():
        folder = STYLE_SETS / style
        pngs = sorted((folder / "train").glob("*.png"))
        assert len(pngs) == DEFAULT_COUNT and 40 <= len(pngs) <= 60
        write_style_set(tmp_path / style, style, count=3, heldout=DEFAULT_HELDOUT)
        for i in range(3):
            name = f"{i:04d}"
            committed = np.asarray(__import__("PIL.Image").Image.open(folder / "train" / f"{name}.png"))
            fresh = np.asarray(__import__("PIL.Image").Image.open(tmp_path / style / "train" / f"{name}.png"))
            assert np.array_equal(committed, fresh), f"{style}/{name}.png is stale: run scripts/tinyworld/make_style_sets.py"
            assert (folder / "train" / f"{name}.txt").read_text() == (tmp_path / style / "train" / f"{name}.txt").read_text()
        captions = [p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in pngs]
        assert not any(trigger in c for c in captions)  # the Dataset node's trigger input adds it
        assert json.loads((folder / "style.json").read_text())["trigger"] == trigger
        prompts = json.loads((folder / "heldout_prompts.json").read_text())
        assert prompts == heldout_prompts(style)
        train_keys = {tw.content_key(tw.parse_caption(c)) for c in captions}
        assert all(tw.is_heldout(tw.parse_caption(p)) and tw.content_key(tw.parse_caption(p)) not in train_keys for p in prompts)


def test_style_set_reads_as_a_pack_dataset():
    from flowlora.trainer_core.data.captions import CaptionConfig, scan_folder

    sources = scan_folder(STYLE_SETS / "ink" / "train")
    assert len(sources) == DEFAULT_COUNT and all(s.caption_path is not None for s in sources)
    caption, think = CaptionConfig().caption_for(sources[0])
    assert tw.parse_caption(caption) == tw.scene(0, "train") and think is None
    assert CaptionConfig(trigger="inkstyle").render(caption) == "inkstyle, " + caption


# -- Content Accuracy node (demo-only package) -----------------------------------


@pytest.fixture(scope="module")
def tiny_package(comfy_root):
    import flowlora_tiny

    return flowlora_tiny


def test_content_node_schema_has_tooltips(tiny_package):
    schema = tiny_package.ContentAccuracy.define_schema()
    assert schema.node_id == "FlowLoRATinyContentAccuracy"
    assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)


def test_content_node_runs_on_an_image_batch(tiny_package):
    images, captions = tw.batch(range(6), "heldout", "ink")
    out = tiny_package.ContentAccuracy.execute(tw.to_comfy(images), "\n".join(captions) + "\n")
    accuracy, summary = out.args
    assert accuracy == pytest.approx(1.0) and "content accuracy 100.0%" in summary
    shuffled = "\n".join(captions[1:] + captions[:1])
    assert tiny_package.ContentAccuracy.execute(tw.to_comfy(images), shuffled).args[0] < 0.8
    with pytest.raises(ValueError, match="one tiny-world prompt per image"):
        tiny_package.ContentAccuracy.execute(tw.to_comfy(images), captions[0])
    with pytest.raises(ValueError, match="line 2"):
        tiny_package.ContentAccuracy.execute(tw.to_comfy(images[:2]), captions[0] + "\na blue hexagon")


@pytest.mark.server
def test_content_node_loads_in_the_live_server(server):
    """The demo package (symlinked into custom_nodes) finds scripts/tinyworld from ComfyUI's own import."""
    info = server.get("/object_info")
    assert "FlowLoRATinyContentAccuracy" in info and "FlowLoRAStyleDistance" in info
