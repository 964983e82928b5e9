"""U1's T2I prompt prefixes (spec 2.2, 2.3) and its tokenizer.

The conditional prefix wraps the prompt in template ``neo1_0`` with
``SYSTEM_MESSAGE_FOR_GEN`` and ends with an empty (or labelled) think block
and ``<img>``; the unconditional prefix (CFG, condition dropout) has no system
block, an empty user turn and no think block. Tokenisation is the plain
``tokenizer(text)`` call, no BOS.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...data.captions import split_think

log = logging.getLogger(__name__)

SYSTEM_MESSAGE_FOR_GEN = (
    "You are an image generation and editing assistant that accurately understands and executes user intent.\n\n"
    "You support two modes:\n\n"
    "1. Think Mode:\n"
    "If the task requires reasoning, you MUST start with a <think></think> block. Put all reasoning inside the block using plain text. "
    "DO NOT include any image tags. Keep it reasonable and directly useful for producing the final image.\n\n"
    "2. Non-Think Mode:\n"
    "If no reasoning is needed, directly produce the final image.\n\n"
    "Task Types:\n\n"
    "A. Text-to-Image Generation:\n"
    "- Generate a high-quality image based on the user's description.\n"
    "- Ensure visual clarity, semantic consistency, and completeness.\n"
    "- DO NOT introduce elements that contradict or override the user's intent.\n\n"
    "B. Image Editing:\n"
    "- Use the provided image(s) as input or reference for modification or transformation.\n"
    "- The result can be an edited image or a new image based on the reference(s).\n"
    "- Preserve all unspecified attributes unless explicitly changed.\n\n"
    "General Rules:\n"
    "- For any visible text in the image, follow the language specified for the rendered text in the user's description, "
    "not the language of the prompt. If no language is specified, use the user's input language."
)

UNCONDITIONAL_PREFIX = "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n<img>"
"""The official unconditional (CFG / dropped-condition) prefix, byte for byte."""

U1_ADDED_TOKENS = ("<think>", "</think>", "<IMG_CONTEXT>", "<img>", "</img>")
"""Tokens U1's tokenizer has beyond the Qwen2.5 BPE (a real checkpoint ships them)."""


def think_generation_prefix(prompt: str) -> str:
    """The conditional prefix up to ``<think>\n``: what the official think mode decodes from (spec 4.5)."""
    return f"<|im_start|>system\n{SYSTEM_MESSAGE_FOR_GEN}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n"


THINK_SUFFIX = "\n\n<img>"
"""Appended after the generated think tokens (after ``</think>``) before the image."""


def conditional_prefix(prompt: str, think: str | None = None) -> str:
    """The official conditional prefix; ``think`` fills the think block (train_u1's think label)."""
    body = f"<think>\n{think}\n</think>\n\n<img>" if think else "<think>\n\n</think>\n\n<img>"
    return f"<|im_start|>system\n{SYSTEM_MESSAGE_FOR_GEN}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{body}"


OFFICIAL_TEMPLATE = "{trigger}, {caption}"
"""Dataset template of train_u1's ``official`` user text without think labels (``use_think_labels: false``)."""

OFFICIAL_THINK_TEMPLATE = "{trigger}, {caption}\n---think---\n{think}"
"""Dataset template with the think label carried after a ``---think---`` line (``use_think_labels: true``)."""


def training_prefix(prompt: str) -> str:
    """A dataset prompt (rendered from a template above) -> the prefix string U1 trains on.

    ``""`` (the dataset's empty prompt: caption and condition dropout) gives
    :data:`UNCONDITIONAL_PREFIX`, byte for byte. Otherwise the text before a
    ``---think---`` line is the user text and the text after it, if any, the
    think label: ``conditional_prefix(user, think)`` (train_u1's ``official`` template).
    """
    if not prompt:
        return UNCONDITIONAL_PREFIX
    user, think = split_think(prompt)
    return conditional_prefix(user, think)


def user_text(caption: str, trigger: str = "") -> str:
    """train_u1's ``official`` template user text: ``"{trigger}, {caption}"`` or ``caption``."""
    return f"{trigger}, {caption}" if trigger else caption


OFFICIAL_TOKEN_IDS = {"<think>": 151667, "</think>": 151668, "<IMG_CONTEXT>": 151669, "<img>": 151670}
"""Ids of U1's special tokens in the official tokenizer (specs/sensenova-u1.md: ``<img>`` is hard-coded as
``img_start_token_id``; the think tokens are Qwen3's). A prefix built with other ids conditions the model on
tokens it never saw."""
REAL_MODEL_MIN_HIDDEN = 1024
"""Understanding towers at least this wide are real checkpoints (U1-8B: 4096), never test models: their
tokenizer must be the official one."""


def wrong_token_ids(tokenizer) -> dict[str, tuple[int | None, int]]:
    """``{token: (id in this tokenizer or None, official id)}`` for each special token whose id differs from :data:`OFFICIAL_TOKEN_IDS`."""
    vocab = tokenizer.get_vocab()
    return {t: (vocab.get(t), want) for t, want in OFFICIAL_TOKEN_IDS.items() if vocab.get(t) != want}


def load_tokenizer(folder: str | Path):
    """A Qwen2 BPE tokenizer from ``folder`` (``vocab.json`` + ``merges.txt`` [+ configs]).

    U1's added tokens are added when the folder lacks them (e.g. ComfyUI's
    bundled Qwen2.5 tokenizer used with tiny test models); their ids then
    differ from the real checkpoint's, which ships its own files.
    """
    from transformers import AutoTokenizer  # optional dependency, imported on use

    tok = AutoTokenizer.from_pretrained(str(folder))
    missing = [t for t in U1_ADDED_TOKENS if t not in tok.get_vocab()]
    if missing:
        tok.add_tokens(missing, special_tokens=True)
        log.info("added U1 tokens %s to the tokenizer from %s", missing, folder)
    return tok


def tokenize(tokenizer, text: str) -> list[int]:
    """Plain ``tokenizer(text)`` ids (no BOS, no truncation)."""
    return list(tokenizer(text)["input_ids"])
