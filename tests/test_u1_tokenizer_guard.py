"""A real-size SenseNova-U1 folder must bring the official tokenizer (issue 11, item 5).

Without tokenizer files the loader used to fall back to ComfyUI's bundled
Qwen2.5 tokenizer with a warning, which puts ``<think>`` and ``<img>`` at ids the
model never saw. Real checkpoints (understanding tower at least
``REAL_MODEL_MIN_HIDDEN`` wide) now fail with an error naming the folder and
the files to copy; tokenizer files whose special-token ids differ from the
official ones (specs/sensenova-u1.md) fail naming each token. Tiny test models
keep the fallback. The "real" model here is a one-layer U1 at width 1024 with a
1,000-token vocabulary: real by the loader's rule, small enough for a test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def wide_checkpoint(comfy_root, tmp_path_factory) -> Path:
    import tiny_u1
    from flowlora.trainer_core.models.u1 import U1Config
    from flowlora.trainer_core.models.u1.checkpoint import save_sharded
    from flowlora.trainer_core.models.u1.config import LLMConfig
    from flowlora.trainer_core.models.u1.prompts import REAL_MODEL_MIN_HIDDEN

    llm = LLMConfig(hidden_size=REAL_MODEL_MIN_HIDDEN, intermediate_size=64, num_hidden_layers=1, num_attention_heads=8, num_key_value_heads=8, head_dim=128, vocab_size=1000)
    cfg = U1Config(llm=llm, vision=tiny_u1.TINY_VISION)
    folder = tmp_path_factory.mktemp("wide_u1")
    save_sharded(folder, tiny_u1.tiny_state_dict(cfg), cfg, num_shards=1)
    return folder


def test_a_real_size_checkpoint_without_tokenizer_files_is_refused(wide_checkpoint):
    from flowlora.nodes.u1.model import load_u1_text_encoder
    from flowlora.trainer_core.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_u1_text_encoder(str(wide_checkpoint))
    message = str(caught.value)
    assert str(wide_checkpoint) in message and "vocab.json" in message and "<img>" in message


def test_tokenizer_files_with_other_special_ids_are_refused(wide_checkpoint, tmp_path):
    from flowlora.nodes.u1.model import load_u1_text_encoder
    from flowlora.trainer_core.errors import ConfigError

    folder = tmp_path / "with_other_tokenizer"
    shutil.copytree(wide_checkpoint, folder)
    own_bpe = Path(__file__).resolve().parents[1] / "scripts" / "tinyworld" / "models" / "u1"  # the tiny world's 715-token BPE
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy2(own_bpe / name, folder / name)
    with pytest.raises(ConfigError) as caught:
        load_u1_text_encoder(str(folder))
    message = str(caught.value)
    assert "not SenseNova-U1's" in message and "<img> is" in message and "(official 151670)" in message


def test_official_ids_pass_and_tiny_models_keep_the_fallback(comfy_root, tmp_path, caplog):
    import tiny_u1
    from flowlora.nodes.u1.model import load_u1_text_encoder
    from flowlora.trainer_core.models.u1.prompts import OFFICIAL_TOKEN_IDS, wrong_token_ids

    class Official:
        def get_vocab(self):
            return {"hello": 0, **OFFICIAL_TOKEN_IDS}

    assert wrong_token_ids(Official()) == {}
    assert OFFICIAL_TOKEN_IDS["<img>"] == 151670 and OFFICIAL_TOKEN_IDS["</think>"] == 151668

    tiny_u1.write_tiny_checkpoint(tmp_path)
    encoder = load_u1_text_encoder(str(tmp_path))  # width 64: a test model, bundled tokenizer allowed
    assert "<img>" in encoder.tokenizer.get_vocab()  # U1's tokens were added to the bundled BPE
    assert any("test models only" in r.message for r in caplog.records)
