"""A small byte-level BPE in Qwen2 format for the tiny-world SenseNova-U1.

A real U1 checkpoint ships its own tokenizer files (Qwen2 BPE, 151,936 ids);
the pack's loader (``nodes/u1/model.py: load_u1_text_encoder``) reads
``vocab.json`` + ``merges.txt`` (+ ``tokenizer_config.json``) from the
checkpoint folder when they are there. The tiny U1 ships the same kind of files
with a vocabulary learned on what it will read: the world's captions (all
grammar words, the style triggers) and U1's official prompt templates (the
system message, the chat-template pieces). Any other text still tokenises, byte
by byte, as in every byte-level BPE.

Same pre-tokenisation as Qwen2 (NFC, its split regex, GPT-2 byte map), so the
files load as ``Qwen2Tokenizer`` through ``transformers.AutoTokenizer``; the
special and U1-added tokens follow the learned vocabulary, in
``tokenizer_config.json``'s ``added_tokens_decoder``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .render import batch
from .styles import TRIGGERS

QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
"""Qwen2's pre-tokenizer regex (its ``tokenizer.json`` ``Split`` pattern)."""

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
"""Qwen's chat specials (pad / eos), as in the real tokenizer."""
ADDED = ("<think>", "</think>", "<IMG_CONTEXT>", "<img>", "</img>")
"""U1's added tokens (``prompts.U1_ADDED_TOKENS``): think block and image markers."""

BPE_VOCAB = 1024
"""Upper bound for the learned byte-level vocabulary (256 bytes + merges); the corpus saturates below it."""
CORPUS_CAPTIONS = 4000


def corpus(count: int = CORPUS_CAPTIONS) -> list[str]:
    """Training text: train-split captions (bare and with each trigger) and U1's prompt templates."""
    from flowlora.trainer_core.models.u1 import prompts

    _, captions = batch(range(count), "train", trigger="")
    texts = list(captions)
    texts += [f"{word}, {c}" for word in TRIGGERS.values() for c in captions[: count // 10]]
    texts += [prompts.SYSTEM_MESSAGE_FOR_GEN] * 20
    texts += ["system\n", "user\n", "assistant\n", "\n\n", "\n"] * 20
    return texts


def train(out: str | Path, vocab_size: int = BPE_VOCAB) -> int:
    """Write ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` into ``out``; returns the total id count."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    first = len(vocab)
    added = {
        str(first + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": t in SPECIAL}
        for i, t in enumerate((*SPECIAL, *ADDED))
    }
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "split_special_tokens": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return first + len(added)
