"""Toy workers for the single-controller tests (no torch.distributed unless a method asks for it)."""

from __future__ import annotations

import os

import numpy as np
import torch

from verl.protocol import DataProto
from verl.single_controller import Dispatch, Worker, register


def square_plus_rank_free(data: DataProto, offset: float) -> DataProto:
    """Reference computation, independent of ranks: ``y = x**2 + offset``, ``tag = name + "!"``."""
    out = DataProto.from_dict(
        {"y": data.batch["x"] ** 2 + offset},
        {"tag": [f"{name}!" for name in data.non_tensor_batch["name"]]},
    )
    return out


class ToyWorker(Worker):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.calls = 0

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def describe(self) -> dict:
        """What this rank sees: its rank properties, the env the group set and its process id."""
        keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "env": {key: os.environ.get(key) for key in keys},
            "pid": os.getpid(),
            "scale": self.scale,
        }

    @register(dispatch_mode=Dispatch.ALL_TO_ALL)
    def add_to_rank(self, value: int, extra: int = 0) -> int:
        return self.rank * 100 + value + extra

    @register(dispatch_mode=Dispatch.RANK_ZERO)
    def whoami(self) -> int:
        return self.rank

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute(self, data: DataProto, offset: float = 0.0) -> DataProto:
        """Rank-free math plus the rank that did each row (to check the chunk assignment)."""
        self.calls += 1
        out = square_plus_rank_free(data, offset)
        out.batch["done_by"] = torch.full((len(data),), self.rank)
        return out

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def expand(self, data: DataProto, n: int) -> DataProto:
        """Several output rows per input row, interleaved (like n rollout samples per prompt)."""
        return data.repeat(n, interleave=True)

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def bad_output(self, data: DataProto) -> dict:
        return {"not": "a DataProto"}

    @register(dispatch_mode=Dispatch.DP_COMPUTE_METRIC)
    def metrics(self, data: DataProto) -> dict:
        x = data.batch["x"]
        return {
            "rank": self.rank,
            "rows": len(data),
            "sum": float(x.sum()),
            "names": list(data.non_tensor_batch["name"]),
        }

    @register(dispatch_mode=Dispatch.ONE_TO_ALL, blocking=False)
    def slow_scaled_sum(self, values: list[float]) -> float:
        return self.scale * float(np.sum(values)) + self.rank

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def gloo_all_reduce_rank(self) -> float:
        """Join a gloo process group through the env:// rendezvous the worker group set up."""
        import torch.distributed as dist

        dist.init_process_group(backend="gloo", init_method="env://")
        try:
            value = torch.tensor([float(dist.get_rank())])
            dist.all_reduce(value)
            return float(value.item())
        finally:
            dist.destroy_process_group()


class ShiftWorker(ToyWorker):
    """Adds a non-blocking DataProto method, to feed one call's future into the next call."""

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO, blocking=False)
    def shift(self, data: DataProto, by: float) -> DataProto:
        return DataProto.from_dict({"x": data.batch["x"] + by}, {"name": data.non_tensor_batch["name"]})
