"""A KV cache that appends in place: the sampling loop's cache.

Hugging Face's ``DynamicCache`` appends each new token with ``torch.cat``, which copies the whole cache at
every layer and step. At 2,500 cached tokens (a BBH few-shot prompt) that copy was 2/3 of a decode step on
CPU. :class:`ReservedLayer` keeps each layer's keys and values in buffers reserved for the whole generation
(prompt + ``max_new_tokens``) and hands attention views of the filled part, so a step writes one token.
The numbers are the same as ``DynamicCache``'s: only where they are stored changes.
"""

from __future__ import annotations

import functools

import torch
from transformers import DynamicCache

try:  # transformers >= 4.56 builds caches from layers; older ones keep lists and get a plain DynamicCache
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - depends on the installed transformers
    DynamicLayer = None


class _ReservedLayerBase:
    """Buffers (bs, kv_heads, capacity, head_dim) per layer; ``keys`` / ``values`` are views [:, :, :length]."""

    def __init__(self, reserve: int):
        super().__init__()
        self.reserve = reserve
        self.length = 0
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.length, self._keys, self._values = 0, None, None
        self.is_initialized = True

    def _refresh_views(self) -> None:
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]

    def _reallocate(self, capacity: int, rows: torch.Tensor | None = None) -> None:
        """New buffers of ``capacity`` positions holding the filled part (of ``rows`` only, if given)."""
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            filled = old[:, :, : self.length] if rows is None else old[rows, :, : self.length]
            new = old.new_empty((filled.shape[0], old.shape[1], capacity, old.shape[3]))
            new[:, :, : self.length] = filled
            setattr(self, name, new)
        self._refresh_views()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Append (bs, kv_heads, n, head_dim) states; return views of all cached states."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        if self._keys is None:
            capacity = max(self.reserve, n)
            self._keys = key_states.new_empty((*key_states.shape[:2], capacity, key_states.shape[3]))
            self._values = value_states.new_empty((*value_states.shape[:2], capacity, value_states.shape[3]))
        elif self.length + n > self._keys.shape[-2]:  # past the reservation: grow geometrically
            self._reallocate(max(self.length + n, 2 * self._keys.shape[-2]))
        self._keys[:, :, self.length : self.length + n] = key_states
        self._values[:, :, self.length : self.length + n] = value_states
        self.length += n
        self._refresh_views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep (and reorder) the rows ``beam_idx``: the sampler drops finished rows this way."""
        if self._keys is not None:
            self._reallocate(self._keys.shape[-2], beam_idx.to(self._keys.device))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.reorder_cache(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._keys is not None:
            rows = torch.arange(self._keys.shape[0], device=self._keys.device).repeat_interleave(repeats)
            self._reallocate(self._keys.shape[-2], rows)

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        if self._keys is not None and tokens_to_remove < 0:
            self.length = max(self.length + tokens_to_remove, 0)
            self._refresh_views()

    def reset(self) -> None:
        self.length, self._keys, self._values = 0, None, None
        super().reset()


if DynamicLayer is not None:

    class ReservedLayer(_ReservedLayerBase, DynamicLayer):
        """A ``DynamicLayer`` that writes new tokens into reserved buffers instead of concatenating."""

else:  # pragma: no cover
    ReservedLayer = None


def reserved_kv_cache(reserve: int) -> DynamicCache:
    """A ``DynamicCache`` whose layers reserve ``reserve`` positions (prompt length + max new tokens)."""
    cache = DynamicCache()
    if ReservedLayer is not None and hasattr(cache, "layer_class_to_replicate"):
        cache.layer_class_to_replicate = functools.partial(ReservedLayer, reserve)
    return cache
