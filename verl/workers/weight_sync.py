"""Streaming weight sync: the FSDP actor's full weights, one tensor at a time, in the rollout's dtype.

``iter_full_weights(model, dtype)`` walks the actor's (sharded) state dict and yields
``(hf_name, full_tensor)`` pairs: each DTensor shard is all-gathered on its own (``full_tensor()``,
a collective: every rank must drain the iterator in the same order), cast to ``dtype`` and handed
over before the next one is gathered. With LoRA, each adapted module is merged on the fly
(W + s * B @ A). So a sync never holds the whole model: the extra memory is a few copies of the
largest parameter (the tensor being handed over, the one the consumer still holds, and for LoRA the
base weight and B @ A while merging), instead of the full fp32 state dict of the old path.

Both rollout backends consume the same iterator (``BaseRollout.load_weights``): the HF rollout copies
each tensor into its own parameter in place, vLLM passes it to its model's ``load_weights``.
``SyncTally`` wraps the iterator and counts the bytes of handed-over tensors still alive, so the
bound is measured, not assumed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

PEFT_PREFIX = "base_model.model."


def _gather(value: torch.Tensor) -> torch.Tensor:
    """A DTensor shard -> the full tensor (collective); a plain tensor as it is."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def lora_scaling(peft_model: nn.Module) -> float:
    """s in W + s * B @ A for the default adapter (lora_alpha / r)."""
    config = peft_model.peft_config["default"]
    return config.lora_alpha / config.r


def merged_lora_items(
    state: Mapping[str, Any], scaling: float, materialize: Callable[[Any], torch.Tensor] = lambda v: v
) -> Iterator[tuple[str, torch.Tensor]]:
    """PEFT state dict -> (base-model name, tensor) pairs with every LoRA update merged (W + s * B @ A).

    ``materialize`` turns a stored value into a tensor when it is needed (``_gather`` for FSDP shards),
    so a caller can stream: only the current module's base weight, A (r, in) and B (out, r) are alive.
    The adapters themselves (``.lora_`` keys) are not yielded.
    """
    for key, value in state.items():
        if ".lora_" in key:
            continue
        name = key.removeprefix(PEFT_PREFIX)
        tensor = materialize(value)
        if ".base_layer." in key:
            stem = key.split(".base_layer.")[0]
            a_key, b_key = f"{stem}.lora_A.default.weight", f"{stem}.lora_B.default.weight"
            if key.endswith("weight") and a_key in state and b_key in state:
                lora_a, lora_b = materialize(state[a_key]), materialize(state[b_key])
                tensor = tensor + scaling * (lora_b.float() @ lora_a.float()).to(tensor.dtype)
                del lora_a, lora_b
            name = name.replace(".base_layer.", ".")
        yield name, tensor
        del tensor


def iter_full_weights(
    model: nn.Module, dtype: torch.dtype | None = None, merge_lora: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, full tensor) for every entry of ``model``'s state dict, one gathered at a time.

    Collective when ``model`` is FSDP-sharded: all ranks must iterate to the end together.
    Floating tensors are cast to ``dtype`` (the rollout's); ``merge_lora`` merges a PEFT model's
    adapters into the base weights and drops the PEFT name prefix.
    """
    state = model.state_dict()  # FSDP2: references to this rank's shards (DTensors), no copy
    items: Iterable[tuple[str, torch.Tensor]]
    if merge_lora:
        items = merged_lora_items(state, lora_scaling(model), _gather)
    else:
        items = ((name, _gather(value)) for name, value in state.items())
    for name, tensor in items:
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        yield name, tensor.detach()
        del tensor


class SyncTally:
    """Counts the tensors a weight iterator hands over and the peak bytes of those still alive.

    ``wrap(weights)`` yields the same pairs; a tensor counts as alive from its hand-over until the last
    reference to it is dropped (a ``weakref.finalize``), whoever holds it: the producer, the consumer,
    or a full state dict behind the iterator.
    """

    def __init__(self) -> None:
        self.live_bytes = 0
        self.peak_bytes = 0
        self.largest_bytes = 0
        self.total_bytes = 0
        self.tensors = 0

    def _release(self, nbytes: int) -> None:
        self.live_bytes -= nbytes

    def wrap(self, weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in weights:
            nbytes = tensor.numel() * tensor.element_size()
            self.tensors += 1
            self.total_bytes += nbytes
            self.largest_bytes = max(self.largest_bytes, nbytes)
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            weakref.finalize(tensor, self._release, nbytes)
            yield name, tensor
            del tensor

    def summary(self) -> dict[str, int]:
        return {
            "tensors": self.tensors,
            "peak_bytes": self.peak_bytes,
            "largest_bytes": self.largest_bytes,
            "total_bytes": self.total_bytes,
        }
