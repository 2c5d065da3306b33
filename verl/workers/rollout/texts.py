"""Generate from already-templated prompt strings through a worker group's rollout (HF or vLLM).

The trainer's evaluator hook (``RayPPOTrainer.generate_texts``) and the runner's boundary-synthesis stage
(``RS.synth``) both turn strings into left-padded ids, call ``generate_sequences`` on the worker
group (padded and split across its workers) and decode each response's generated tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from verl.protocol import DataProto


def encode_left_padded(
    tokenizer, texts: Sequence[str], max_length: int | None = None, limit_name: str = "max_length"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of ``texts`` without special tokens, left-padded with the pad token; a text
    longer than ``max_length`` tokens (None = no limit) is a ``ValueError`` naming it and ``limit_name``."""
    if not texts:
        raise ValueError("no prompts to encode")
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    for i, ids in enumerate(encoded):
        if max_length is not None and len(ids) > max_length:
            raise ValueError(f"prompt {i} has {len(ids)} tokens > {limit_name}={max_length}")
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, ids in enumerate(encoded):
        input_ids[i, width - len(ids) :], attention_mask[i, width - len(ids) :] = torch.tensor(ids), 1
    return input_ids, attention_mask


def generate_texts(
    worker_group,
    tokenizer,
    texts: Sequence[str],
    meta: dict,
    max_prompt_length: int | None = None,
    limit_name: str = "max_prompt_length",
) -> list[str]:
    """Decoded responses of ``worker_group.generate_sequences`` for ``texts``; ``meta`` overrides the rollout's
    sampling (n, temperature, top_p, top_k, stop, max_new_tokens). ``len(texts) * n`` texts, samples of one
    prompt adjacent. A text over ``max_prompt_length`` tokens is a ``ValueError`` (see :func:`encode_left_padded`)."""
    input_ids, attention_mask = encode_left_padded(tokenizer, texts, max_prompt_length, limit_name)
    batch = DataProto.from_dict({"input_ids": input_ids, "attention_mask": attention_mask}, meta_info=dict(meta))
    out = worker_group.generate_sequences(batch)
    return [
        tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
        for ids, mask in zip(out.batch["responses"], out.batch["response_mask"])
    ]
