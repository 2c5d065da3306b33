"""Tally the bytes of tensor storages created inside a block and still alive: a CPU stand-in for peak memory."""

from __future__ import annotations

import weakref
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveBytes(TorchDispatchMode):
    """``with LiveBytes() as tally: ...``; then ``tally.peak[dtype]`` = most bytes of ``dtype`` alive at once.

    Counts every storage an op creates inside the block (each once, however many views share it) from
    its creation until its last tensor dies; storages that existed before (the model's) are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[torch.dtype, int] = defaultdict(int)
        self.peak: dict[torch.dtype, int] = defaultdict(int)
        self._seen: set[int] = set()

    def _release(self, key: int, dtype: torch.dtype, nbytes: int) -> None:
        self._seen.discard(key)
        self.live[dtype] -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if type(leaf) is not torch.Tensor or leaf.is_meta:
                continue
            storage = leaf.untyped_storage()
            key = id(storage)  # the storage's Python object lives exactly as long as the storage
            if key in self._seen or storage.nbytes() == 0:
                continue
            if any(key == id(a.untyped_storage()) for a in tree_leaves((args, kwargs)) if type(a) is torch.Tensor):
                continue  # an in-place op or a view of an input: no new memory
            self._seen.add(key)
            self.live[leaf.dtype] += storage.nbytes()
            self.peak[leaf.dtype] = max(self.peak[leaf.dtype], self.live[leaf.dtype])
            weakref.finalize(storage, self._release, key, leaf.dtype, storage.nbytes())
        return out
