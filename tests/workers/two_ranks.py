"""Run a function on N spawned ranks of one process group (torch.distributed without Ray); collect the results."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import traceback
from collections.abc import Callable
from typing import Any


def _child(rank: int, world_size: int, on_cpu: bool, port: int, fn: Callable, args: tuple, results) -> None:
    env = dict(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1")
    os.environ.update(env, MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    if on_cpu:
        os.environ["VERL_DEVICE"] = "cpu"
    try:
        import torch
        import torch.distributed as dist

        from verl.utils import device as dev

        torch.set_num_threads(1)
        dev.set_device()
        dist.init_process_group(dev.get_dist_backend(), rank=rank, world_size=world_size)
        try:
            # plain pickle copies tensors into the bytes (a queue would share memory with a dying process)
            results.put((rank, "ok", pickle.dumps(fn(rank, *args))))
        finally:
            dist.destroy_process_group()
    except BaseException:  # report the child's traceback to the parent test
        results.put((rank, "error", traceback.format_exc()))


def run_on_two_ranks(fn: Callable, *args: Any, timeout: float = 180.0) -> list[Any]:
    """``[fn(0, *args), fn(1, *args)]``, each run in its own process of a 2-rank gloo group on the CPU."""
    return run_on_ranks(fn, *args, world_size=2, device="cpu", timeout=timeout)


def run_on_ranks(fn: Callable, *args: Any, world_size: int, device: str, timeout: float = 180.0) -> list[Any]:
    """``[fn(rank, *args) for rank in range(world_size)]``, one process per rank, in one process group.

    ``device="cpu"`` forces the CPU (gloo); ``"accelerator"`` uses what ``verl.utils.device`` finds.
    ``fn`` must be a module-level function and its arguments and result picklable. A failure on
    any rank fails the caller with that rank's traceback.
    """
    if device not in ("cpu", "accelerator"):
        raise ValueError(f"run_on_ranks: device must be 'cpu' or 'accelerator', not {device!r}")
    from verl.single_controller.base import find_free_port

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = find_free_port()
    on_cpu = device == "cpu"
    procs = [
        ctx.Process(target=_child, args=(rank, world_size, on_cpu, port, fn, args, results))
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.start()
    collected: dict[int, Any] = {}
    try:
        for _ in procs:
            rank, status, value = results.get(timeout=timeout)
            if status != "ok":
                raise AssertionError(f"rank {rank} failed:\n{value}")
            collected[rank] = pickle.loads(value)
    except queue.Empty:
        raise AssertionError(f"2-rank run timed out after {timeout}s (ranks done: {sorted(collected)})") from None
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    return [collected[rank] for rank in range(world_size)]
