"""DataProto: the batch that travels between the driver and the workers.

One ``DataProto`` holds, for the same ``bs`` rows:

- ``batch``: a ``TensorDict`` of tensors whose first dimension is ``bs``
  (e.g. ``input_ids`` (bs, seq_len), ``responses`` (bs, response_length));
- ``non_tensor_batch``: a dict of numpy object arrays of length ``bs``
  (e.g. ``ground_truth``, ``uid``, ``raw_prompt``);
- ``meta_info``: a plain dict for everything that is not per row (temperature, step, metrics).

It is picklable, so Ray ships it between processes as is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict


def _to_object_array(values: Any) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == object and values.ndim == 1:
        return values
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


@dataclass
class DataProto:
    batch: TensorDict | None = None
    non_tensor_batch: dict[str, np.ndarray] = field(default_factory=dict)
    meta_info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.non_tensor_batch = {key: _to_object_array(value) for key, value in self.non_tensor_batch.items()}
        self.check_consistency()

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dict(
        cls,
        tensors: dict[str, torch.Tensor] | None = None,
        non_tensors: dict[str, Sequence[Any]] | None = None,
        meta_info: dict[str, Any] | None = None,
    ) -> DataProto:
        tensors = tensors or {}
        batch = None
        if tensors:
            sizes = {key: value.shape[0] for key, value in tensors.items()}
            if len(set(sizes.values())) != 1:
                raise ValueError(f"tensors differ in their first dimension: {sizes}")
            batch = TensorDict(dict(tensors), batch_size=[next(iter(sizes.values()))])
        return cls(batch=batch, non_tensor_batch=dict(non_tensors or {}), meta_info=dict(meta_info or {}))

    @classmethod
    def from_single_dict(cls, data: dict[str, Any], meta_info: dict[str, Any] | None = None) -> DataProto:
        """Split a mixed dict: tensors go to ``batch``, everything else to ``non_tensor_batch``."""
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        non_tensors = {k: v for k, v in data.items() if not isinstance(v, torch.Tensor)}
        return cls.from_dict(tensors, non_tensors, meta_info)

    # ---------------------------------------------------------------- basics
    def __len__(self) -> int:
        if self.batch is not None:
            return int(self.batch.batch_size[0])
        if self.non_tensor_batch:
            return len(next(iter(self.non_tensor_batch.values())))
        return 0

    def check_consistency(self) -> None:
        n = len(self)
        for key, value in self.non_tensor_batch.items():
            if len(value) != n:
                raise ValueError(f"non_tensor_batch[{key!r}] has {len(value)} rows, the batch has {n}")

    def __getitem__(self, item: int | slice | Sequence[int] | np.ndarray | torch.Tensor) -> DataProto:
        """Rows by slice, index list or boolean mask (returns a ``DataProto``)."""
        if isinstance(item, int):
            item = [item]
        if isinstance(item, slice):
            indices = np.arange(len(self))[item]
        else:
            indices = np.asarray(item.cpu() if isinstance(item, torch.Tensor) else item)
            if indices.dtype == bool:
                indices = np.nonzero(indices)[0]
        return self.select_idxs(indices)

    def select_idxs(self, indices: Sequence[int] | np.ndarray) -> DataProto:
        indices = np.asarray(indices, dtype=np.int64)
        batch = self.batch[torch.from_numpy(indices)] if self.batch is not None else None
        non_tensors = {key: value[indices] for key, value in self.non_tensor_batch.items()}
        return DataProto(batch=batch, non_tensor_batch=non_tensors, meta_info=dict(self.meta_info))

    def keys(self) -> list[str]:
        return list(self.batch.keys() if self.batch is not None else []) + list(self.non_tensor_batch)

    # ---------------------------------------------------------------- key-wise operations
    def select(
        self, batch_keys: Iterable[str] | None = None, non_tensor_keys: Iterable[str] | None = None
    ) -> DataProto:
        """A new DataProto with only these keys (``None`` keeps all of that kind)."""
        batch = self.batch
        if batch is not None and batch_keys is not None:
            batch = batch.select(*batch_keys)
        non_tensors = self.non_tensor_batch
        if non_tensor_keys is not None:
            non_tensors = {key: self.non_tensor_batch[key] for key in non_tensor_keys}
        return DataProto(batch=batch, non_tensor_batch=dict(non_tensors), meta_info=dict(self.meta_info))

    def pop(self, batch_keys: Iterable[str] = (), non_tensor_keys: Iterable[str] = ()) -> DataProto:
        """Remove these keys from ``self`` and return them as a new DataProto."""
        tensors = {key: self.batch.pop(key) for key in batch_keys}
        non_tensors = {key: self.non_tensor_batch.pop(key) for key in non_tensor_keys}
        return DataProto.from_dict(tensors, non_tensors, dict(self.meta_info))

    def union(self, other: DataProto) -> DataProto:
        """Merge ``other`` into ``self`` (in place, returned); shared keys must hold equal values."""
        if len(self) and len(other) and len(self) != len(other):
            raise ValueError(f"cannot union DataProtos of {len(self)} and {len(other)} rows")
        if other.batch is not None:
            if self.batch is None:
                self.batch = other.batch
            else:
                for key, value in other.batch.items():
                    if key in self.batch.keys() and not torch.equal(self.batch[key], value):
                        raise ValueError(f"union: tensor {key!r} differs between the two DataProtos")
                    self.batch[key] = value
        for key, value in other.non_tensor_batch.items():
            if key in self.non_tensor_batch and not np.array_equal(self.non_tensor_batch[key], value):
                raise ValueError(f"union: non-tensor {key!r} differs between the two DataProtos")
            self.non_tensor_batch[key] = value
        for key, value in other.meta_info.items():
            if key in self.meta_info and self.meta_info[key] != value:
                raise ValueError(f"union: meta_info {key!r} differs ({self.meta_info[key]!r} vs {value!r})")
            self.meta_info[key] = value
        return self

    # ---------------------------------------------------------------- row-wise operations
    def repeat(self, repeat_times: int, interleave: bool = True) -> DataProto:
        """Each row ``repeat_times`` times: ``aabb`` when interleaved (n samples per prompt), else ``abab``."""
        n = len(self)
        if interleave:
            indices = np.repeat(np.arange(n), repeat_times)
        else:
            indices = np.tile(np.arange(n), repeat_times)
        return self.select_idxs(indices)

    def chunk(self, chunks: int) -> list[DataProto]:
        """``chunks`` equal pieces in order; the length must be divisible (pad first, see below)."""
        if len(self) % chunks != 0:
            raise ValueError(f"cannot chunk {len(self)} rows into {chunks} equal pieces; pad to a divisor first")
        return self.split(len(self) // chunks) if len(self) else [self.select_idxs([]) for _ in range(chunks)]

    def split(self, split_size: int) -> list[DataProto]:
        """Consecutive pieces of ``split_size`` rows (the last may be shorter)."""
        if split_size <= 0:
            raise ValueError(f"split_size must be positive, got {split_size}")
        return [self[i : i + split_size] for i in range(0, len(self), split_size)]

    @staticmethod
    def concat(data: list[DataProto]) -> DataProto:
        """Rows of every piece, in order; meta_info of the first piece (plus list-valued metrics merged)."""
        if not data:
            raise ValueError("cannot concat an empty list of DataProtos")
        batches = [d.batch for d in data if d.batch is not None]
        batch = torch.cat(batches, dim=0) if batches else None
        non_tensors = {
            key: np.concatenate([d.non_tensor_batch[key] for d in data]) for key in data[0].non_tensor_batch
        }
        return DataProto(batch=batch, non_tensor_batch=non_tensors, meta_info=dict(data[0].meta_info))

    def reorder(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> None:
        """Permute the rows in place: row ``i`` becomes old row ``indices[i]``."""
        reordered = self.select_idxs(np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices))
        self.batch, self.non_tensor_batch = reordered.batch, reordered.non_tensor_batch

    def to(self, device: torch.device | str) -> DataProto:
        if self.batch is not None:
            self.batch = self.batch.to(device)
        return self

    def __repr__(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in (self.batch.items() if self.batch is not None else [])}
        return f"DataProto(len={len(self)}, batch={shapes}, non_tensor={list(self.non_tensor_batch)})"

    # ---------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        batch = None if self.batch is None else (self.batch.to_dict(), list(self.batch.batch_size))
        return {"batch": batch, "non_tensor_batch": self.non_tensor_batch, "meta_info": self.meta_info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        batch = state["batch"]
        self.batch = None if batch is None else TensorDict(batch[0], batch_size=batch[1])
        self.non_tensor_batch = state["non_tensor_batch"]
        self.meta_info = state["meta_info"]


def pad_dataproto_to_divisor(data: DataProto, size_divisor: int) -> tuple[DataProto, int]:
    """Append copies of the first rows so that ``len`` is a multiple of ``size_divisor``.

    Returns the padded DataProto and the number of rows added (give it to ``unpad_dataproto``).
    """
    remainder = len(data) % size_divisor
    if remainder == 0:
        return data, 0
    pad_size = size_divisor - remainder
    if len(data) == 0:
        raise ValueError("cannot pad an empty DataProto")
    indices = np.arange(pad_size) % len(data)
    return DataProto.concat([data, data.select_idxs(indices)]), pad_size


def unpad_dataproto(data: DataProto, pad_size: int) -> DataProto:
    return data[: len(data) - pad_size] if pad_size else data
