"""The one place that knows about accelerators.

Everything else asks this module for the device type, the torch.distributed backend and the
Ray resource name, so that the same code runs on CPU (gloo, fp32) and on GPUs (NCCL).
"""

from __future__ import annotations

import os

import torch


def is_gpu_available() -> bool:
    return torch.cuda.is_available()


def device_count() -> int:
    """Accelerators visible to this process (0 on a CPU machine or with ``VERL_DEVICE=cpu``)."""
    return torch.cuda.device_count() if get_device_name() == "cuda" else 0


def get_device_name() -> str:
    """``"cuda"`` on a GPU machine, else ``"cpu"``; ``VERL_DEVICE=cpu`` forces the CPU."""
    if os.environ.get("VERL_DEVICE", "").lower() == "cpu":
        return "cpu"
    return "cuda" if is_gpu_available() else "cpu"


def get_torch_device() -> torch.device:
    """The device of this process: the local GPU (``LOCAL_RANK``) or the CPU."""
    name = get_device_name()
    if name == "cpu":
        return torch.device("cpu")
    return torch.device(name, int(os.environ.get("LOCAL_RANK", "0")) % max(torch.cuda.device_count(), 1))


def get_dist_backend() -> str:
    return "nccl" if get_device_name() == "cuda" else "gloo"


def set_device() -> None:
    if get_device_name() == "cuda":
        torch.cuda.set_device(get_torch_device())


def empty_cache() -> None:
    if get_device_name() == "cuda":
        torch.cuda.empty_cache()


def synchronize() -> None:
    if get_device_name() == "cuda":
        torch.cuda.synchronize()


def peak_memory_bytes() -> int:
    """Peak accelerator memory on GPU; peak resident set size of this process on CPU."""
    if get_device_name() == "cuda":
        return torch.cuda.max_memory_allocated()
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def default_dtype(requested: str = "auto") -> torch.dtype:
    """bf16 on GPU, fp32 on CPU (bf16 matmuls are emulated and ~20x slower on these CPUs)."""
    if requested == "auto":
        return torch.bfloat16 if get_device_name() == "cuda" else torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    table.update({"fp16": torch.float16, "float16": torch.float16})
    if requested not in table:
        raise ValueError(f"unknown dtype {requested!r}; choose one of: auto, {', '.join(sorted(table))}")
    return table[requested]


def ray_gpu_resource() -> str:
    return "GPU"
