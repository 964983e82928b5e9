"""SenseNova-U1 think mode (issue 11, item 6): the official greedy think generation (spec 4.5).

The understanding tower decodes greedily with a KV cache from the prefix ending
``<think>\\n``; each step must pick what a full causal pass over everything so
far picks (the reference), stop after ``</think>`` (kept) or at ``<|im_end|>``
(not kept), and the conditioning is the KV of exactly prefix + generated tokens
+ ``\\n\\n<img>``. Tiny random checkpoint, fp32.
"""

from __future__ import annotations

import pytest
import torch
from tiny_u1 import write_tiny_checkpoint


@pytest.fixture(scope="module")
def encoder(comfy_root, tmp_path_factory):
    from flowlora.nodes.u1 import model as u1m

    folder = tmp_path_factory.mktemp("u1think")
    write_tiny_checkpoint(folder, seed=7)
    return u1m.load_u1_text_encoder(str(folder), "float32")


def prompt_ids(encoder, prompt="a red fox in the snow"):
    from flowlora.trainer_core.models.u1 import prompts

    return prompts.tokenize(encoder.tokenizer, prompts.think_generation_prefix(prompt))


def reference_tokens(tower, ids: list[int], count: int) -> list[int]:
    """Greedy without a cache: a full causal pass per token."""
    out = []
    for _ in range(count):
        out.append(int(tower.next_token_logits(torch.tensor([ids + out])).argmax()))
    return out


def test_cached_greedy_decoding_equals_the_step_by_step_reference(encoder):
    ids = prompt_ids(encoder)
    new, why = encoder.tower.greedy(torch.tensor([ids]), stop_id=-1, end_id=-2, max_new_tokens=12)
    assert why == "length" and len(new) == 12
    assert new == reference_tokens(encoder.tower, ids, 12)


def test_it_stops_after_the_stop_token_and_before_the_end_token(encoder):
    ids = prompt_ids(encoder)
    free, _ = encoder.tower.greedy(torch.tensor([ids]), stop_id=-1, end_id=-2, max_new_tokens=12)
    k = next(i for i in range(3, 12) if free[i] not in free[:i])  # first new id from the fourth step on
    stopped, why = encoder.tower.greedy(torch.tensor([ids]), stop_id=free[k], end_id=-2, max_new_tokens=12)
    assert (stopped, why) == (free[: k + 1], "stop")  # </think> is kept
    ended, why = encoder.tower.greedy(torch.tensor([ids]), stop_id=-1, end_id=free[k], max_new_tokens=12)
    assert (ended, why) == (free[:k], "end")  # <|im_end|> is not


def test_prompt_encode_generate_mode_conditions_on_exactly_the_generated_ids(encoder):
    from flowlora.nodes.u1.nodes import U1PromptEncode
    from flowlora.trainer_core.models.u1 import prompts

    positive, negative, think_text = U1PromptEncode.execute(encoder, "a red fox in the snow", think_mode="generate", think_max_tokens=6).result
    ids = prompt_ids(encoder)
    vocab = encoder.tokenizer.get_vocab()
    new, why = encoder.tower.greedy(torch.tensor([ids]), vocab["</think>"], vocab["<|im_end|>"], 6)
    expected = encoder.encode_ids(ids + new + prompts.tokenize(encoder.tokenizer, prompts.THINK_SUFFIX))
    assert torch.equal(positive[0][0], expected) and positive[0][1]["u1_prefix_length"] == expected.shape[1]
    assert torch.equal(negative[0][0], encoder.encode_text(prompts.UNCONDITIONAL_PREFIX))
    text_ids = new[:-1] if why == "stop" else new
    assert think_text == encoder.tokenizer.decode(text_ids, skip_special_tokens=False).strip()

    given = U1PromptEncode.execute(encoder, "a red fox", think="1. plan").result
    assert given[2] == "1. plan" and torch.equal(given[0][0][0], encoder.encode_text(prompts.conditional_prefix("a red fox", "1. plan")))
    schema = U1PromptEncode.define_schema()
    assert [o.display_name for o in schema.outputs] == ["positive", "negative", "think_text"] and all(i.tooltip for i in schema.inputs)
