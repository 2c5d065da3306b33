"""The rollout interface shared by the HF and vLLM backends.

``generate_sequences(prompts)`` takes a DataProto of left-padded prompts and returns one row per
sample (each prompt repeated ``n`` times, interleaved), with:

=====================  ==============================  ====================================
key                    shape                           meaning
=====================  ==============================  ====================================
``prompts``            (bs*n, prompt_length)           left-padded prompt ids
``responses``          (bs*n, response_length)         generated ids, right-padded
``input_ids``          (bs*n, prompt+response)         both, concatenated
``attention_mask``     (bs*n, prompt+response)         1 on real prompt and response tokens
``position_ids``       (bs*n, prompt+response)         positions over real tokens
``response_mask``      (bs*n, response_length)         1 on generated tokens (incl. EOS/stop)
``rollout_log_probs``  (bs*n, response_length)         log-probs of the sampled tokens
=====================  ==============================  ====================================

Every non-tensor field of the prompts is repeated along with them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import torch

from verl.protocol import DataProto
from verl.workers.rollout.sampling import SamplingSpec, position_ids_from_mask


class BaseRollout(ABC):
    """``dtype``: the dtype this rollout holds its weights in (the sync casts to it); ``name``: the
    backend, for logs and tests."""

    dtype: torch.dtype = torch.float32
    name: str = "base"

    @abstractmethod
    def generate_sequences(self, prompts: DataProto) -> DataProto: ...

    @abstractmethod
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load the actor's full weights, streamed as (HF name, full tensor) pairs; consume all of them
        (the producer may run one collective per tensor) and keep no reference to any."""

    def sleep(self) -> None:
        """Free generation memory after a rollout (vLLM); no-op by default."""

    def wake_up(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        """Re-acquire generation memory before a rollout (vLLM: ``("weights",)`` before a weight sync,
        then the rest); no-op by default."""


def assemble_output(
    prompts: DataProto,
    n: int,
    responses: torch.Tensor,
    response_mask: torch.Tensor,
    log_probs: torch.Tensor,
) -> DataProto:
    """Build the shared output layout from ``n``-times repeated prompts and their responses."""
    repeated = prompts.repeat(n, interleave=True)
    prompt_ids = repeated.batch["input_ids"]
    attention_mask = torch.cat([repeated.batch["attention_mask"], response_mask.to(prompt_ids.device)], dim=1)
    tensors = {
        "prompts": prompt_ids,
        "responses": responses,
        "input_ids": torch.cat([prompt_ids, responses], dim=1),
        "attention_mask": attention_mask,
        "position_ids": position_ids_from_mask(attention_mask),
        "response_mask": response_mask,
        "rollout_log_probs": log_probs,
    }
    return DataProto.from_dict(tensors, dict(repeated.non_tensor_batch), dict(prompts.meta_info))


def sampling_from_meta(meta: dict, config, tokenizer, generation_config=None) -> tuple[SamplingSpec, int]:
    """Sampling of one rollout call: the rollout config, overridden by ``meta_info`` keys
    (temperature, top_p, top_k, n, stop, max_new_tokens); EOS ids from the tokenizer and the model's
    generation config. Returns (spec, n)."""
    eos = tokenizer.eos_token_id
    eos_ids = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    extra = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    for token in extra if isinstance(extra, (list, tuple)) else [extra]:
        if token is not None and token not in eos_ids:
            eos_ids.append(token)
    spec = SamplingSpec(
        max_new_tokens=int(meta.get("max_new_tokens", config.response_length)),
        temperature=float(meta.get("temperature", config.temperature)),
        top_p=float(meta.get("top_p", config.top_p)),
        top_k=int(meta.get("top_k", config.top_k)),
        stop=list(meta.get("stop", config.stop)),
        eos_token_ids=[e for e in eos_ids if e is not None],
    )
    return spec, int(meta.get("n", config.n))
