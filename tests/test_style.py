"""Style statistics (trainer_core/style.py) and the Style Distance node."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from flowlora.trainer_core import style
from flowlora.trainer_core.errors import ConfigError
from flowlora.trainer_core.style import StyleConfig, StyleReference, style_score
from harness import REPO
from PIL import Image

sys.path.insert(0, str(REPO / "scripts"))
import tinyworld as tw

STYLE_SETS = REPO / "scripts" / "tinyworld" / "style_sets"


def images_of(indices, split, look) -> torch.Tensor:
    return tw.to_comfy(tw.batch(indices, split, look)[0])


@pytest.fixture(scope="module")
def references():
    plain = StyleReference.from_images(images_of(range(48), "train", "plain"))
    return plain, {look: StyleReference.from_folder(STYLE_SETS / look / "train") for look in tw.TRIGGERS}


def test_feature_layout_and_ranges():
    config = StyleConfig()
    feats = style.features(images_of(range(5), "train", "mosaic"), config)
    assert feats.shape == (5, sum(config.group_sizes().values())) and feats.dtype == torch.float64
    sizes = list(config.group_sizes().values())
    groups = torch.split(feats, sizes, dim=1)
    for g in groups[:3]:  # Hellinger-embedded histograms: sum of squares 1/2
        assert torch.allclose((g**2).sum(dim=1), torch.full((5,), 0.5, dtype=torch.float64))
    assert ((groups[3] >= 0) & (groups[3] <= 1)).all() and (groups[4] >= 0).all()


def test_flat_image_and_shapes():
    flat = torch.full((2, 32, 48, 3), 0.5)
    feats = style.features(flat)
    assert torch.isfinite(feats).all() and torch.equal(feats[0], feats[1])
    assert style.features(flat[0]).shape == (1, feats.shape[1])  # one (H, W, C) image
    assert torch.allclose(style.features(torch.cat([flat, flat[..., :1]], dim=-1)), feats)  # alpha dropped
    with pytest.raises(ConfigError, match="images"):
        style.features(torch.zeros(2, 8, 8))
    with pytest.raises(ConfigError, match="size"):
        StyleConfig(size=2)
    with pytest.raises(ConfigError, match="palette"):
        StyleConfig(palette=-1.0)


def test_distance_zero_to_itself_and_score_ends(references):
    plain, styles = references
    one = images_of([7], "train", "ink")
    assert float(StyleReference.from_images(one).distance(one)[0]) == pytest.approx(0.0, abs=1e-12)
    ink = styles["ink"]
    # linear in the features: the mean score of each reference's own images is exactly 0 and 1
    assert float(style_score(images_of(range(48), "train", "plain"), plain, ink).mean()) == pytest.approx(0.0, abs=1e-9)
    ink_images = torch.cat([t for t in style.folder_images(STYLE_SETS / "ink" / "train")])
    assert float(style_score(ink_images, plain, ink).mean()) == pytest.approx(1.0, abs=1e-9)


def test_folder_equals_batch(tmp_path):
    images, _ = tw.batch(range(4), "train", "mosaic")
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    (tmp_path / ".hidden").mkdir()
    Image.fromarray(images[0] // 2).save(tmp_path / ".hidden" / "skip.png")
    a, b = StyleReference.from_folder(tmp_path), StyleReference.from_images(tw.to_comfy(images))
    assert a.count == 4 and torch.allclose(a.mean, b.mean)


@pytest.mark.parametrize("look", sorted(tw.TRIGGERS))
def test_style_score_separates_style_from_plain_on_heldout(references, look):
    plain, styles = references
    styled = style_score(images_of(range(150), "heldout", look), plain, styles[look])
    unstyled = style_score(images_of(range(150), "heldout", "plain"), plain, styles[look])
    assert float(styled.min()) > float(unstyled.max()) + 0.3, (float(styled.min()), float(unstyled.max()))
    assert 0.8 < float(styled.mean()) < 1.2 and abs(float(unstyled.mean())) < 0.1


def test_score_needs_matching_configs(references):
    plain, _ = references
    other = StyleReference.from_images(images_of(range(4), "train", "ink"), StyleConfig(size=32))
    with pytest.raises(ConfigError, match="feature settings"):
        style_score(images_of([0], "train", "ink"), plain, other)
    with pytest.raises(ConfigError, match="identical"):
        style_score(images_of([0], "train", "ink"), plain, plain)


# -- node ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(comfy_root):
    from flowlora.nodes import style as style_node

    return style_node


def test_node_schema(node):
    schema = node.StyleDistance.define_schema()
    assert schema.node_id == "FlowLoRAStyleDistance" and schema.category == "FlowLoRA" and schema.display_name == "Style Distance (FlowLoRA)"
    assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)


def test_node_registered(node):
    from flowlora.nodes import NODES

    assert node.StyleDistance in NODES


def test_node_runs_on_image_batches(node):
    ink_ref = images_of(range(12), "train", "ink")
    base = images_of(range(8), "heldout", "plain")
    out = node.StyleDistance.execute(images_of(range(8), "heldout", "ink"), reference_images=ink_ref, baseline_images=base)
    distance, score, summary = out.args
    assert distance > 0 and 0.7 < score < 1.3 and "style score" in summary and "8 image(s)" in summary
    d_plain, s_plain, _ = node.StyleDistance.execute(base, reference_images=ink_ref, baseline_images=base).args
    assert d_plain > distance and s_plain == pytest.approx(0.0, abs=1e-9)
    d_alone, s_alone, text = node.StyleDistance.execute(base, reference_images=ink_ref).args
    assert d_alone == pytest.approx(d_plain) and math.isnan(s_alone) and "no baseline" in text


def test_node_reads_a_folder(node, monkeypatch):
    monkeypatch.setenv("FLOWLORA_ALLOW_ANY_PATH", "1")
    folder = str(STYLE_SETS / "mosaic" / "train")
    distance, _, summary = node.StyleDistance.execute(images_of(range(4), "heldout", "mosaic"), reference_folder=folder).args
    by_batch = node.StyleDistance.execute(images_of(range(4), "heldout", "mosaic"), reference_images=torch.cat(style.folder_images(folder))).args[0]
    assert distance == pytest.approx(by_batch) and "48 reference image(s)" in summary
    assert node.StyleDistance.fingerprint_inputs(reference_folder=folder)


def test_node_refuses_bad_reference_inputs(node, tmp_path, monkeypatch):
    images = images_of([0], "train", "plain")
    with pytest.raises(ConfigError, match="reference_folder"):
        node.StyleDistance.execute(images)
    with pytest.raises(ConfigError, match="not both"):
        node.StyleDistance.execute(images, reference_folder="x", reference_images=images)
    monkeypatch.delenv("FLOWLORA_ALLOW_ANY_PATH", raising=False)
    assert "outside ComfyUI's folders" in node.StyleDistance.validate_inputs(reference_folder=str(tmp_path), size=64)
    assert "size" in node.StyleDistance.validate_inputs(size=4)
    monkeypatch.setenv("FLOWLORA_ALLOW_ANY_PATH", "1")
    with pytest.raises(Exception, match="holds no"):
        node.StyleDistance.execute(images, reference_folder=str(tmp_path))
