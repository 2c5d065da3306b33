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
    """gloo on CPU; on GPU NCCL for device tensors plus gloo for host tensors in the same group.

    The gloo half serves collectives on host memory: CPU-offloaded gradients and shards
    (``fsdp.cpu_offload``), object lists, a rank-0 broadcast of host tensors.
    """
    return "cpu:gloo,cuda:nccl" if get_device_name() == "cuda" else "gloo"


def set_device() -> None:
    if get_device_name() == "cuda":
        torch.cuda.set_device(get_torch_device())


def empty_cache() -> None:
    if get_device_name() == "cuda":
        torch.cuda.empty_cache()


def synchronize() -> None:
    if get_device_name() == "cuda":
        torch.cuda.synchronize()


def memory_allocated() -> int:
    """Bytes of accelerator memory held by tensors of this process (0 on CPU)."""
    if get_device_name() == "cuda":
        return torch.cuda.memory_allocated()
    return 0


def peak_memory_bytes() -> int:
    """Peak accelerator memory on GPU; peak resident set size of this process on CPU."""
    if get_device_name() == "cuda":
        return torch.cuda.max_memory_allocated()
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fused_adamw() -> bool:
    """Whether AdamW runs torch's fused kernel here (CPU and CUDA have one): one in-place pass over each
    parameter, where foreach AdamW makes several and a temporary of the parameters' size (SmolLM2 on 2 CPU
    cores: 0.08 s a step against 0.41 s)."""
    return get_device_name() in ("cpu", "cuda")


def flush_denormals() -> None:
    """Treat subnormal floats as zero on the CPU (a no-op on accelerators, whose kernels do not slow down on them).

    A loss that saturates (NPO's once ``log pi - log pi_ref`` is far below zero: a loss of 1e-38 and gradients
    below fp32's normal range) makes every x86 multiply on subnormals take a slow microcode path: measured 243 s
    against 32 s for the same 6 NPO steps of SmolLM2 on 2 cores. Values only change below 1.2e-38."""
    torch.set_flush_denormal(True)


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and every accelerator)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict:
    """The random states this process draws from: torch (CPU), numpy, python and the accelerator's (None on CPU)."""
    import random

    import numpy as np

    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "accelerator": torch.cuda.get_rng_state(get_torch_device()) if get_device_name() == "cuda" else None,
    }


def set_rng_state(state: dict) -> None:
    """Restore what ``get_rng_state`` returned; the accelerator part only where there is one (a no-op on CPU)."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("accelerator") is not None and get_device_name() == "cuda":
        torch.cuda.set_rng_state(state["accelerator"], get_torch_device())


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
