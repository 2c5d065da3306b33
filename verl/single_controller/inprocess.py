"""A worker group whose workers live in the driver process: no Ray, so a plain debugger steps into them."""

from __future__ import annotations

import os
from typing import Any

from verl.single_controller.base import ClassWithInitArgs, WorkerGroup, find_free_port, unwrap_worker_class


class InProcessWorkerGroup(WorkerGroup):
    """``world_size`` instances of the worker in this process, called one after another.

    Before constructing rank ``r`` it sets ``RANK=r``, ``WORLD_SIZE``, ``LOCAL_RANK=r``,
    ``MASTER_ADDR=127.0.0.1`` and a free ``MASTER_PORT`` in ``os.environ``; afterwards the environment
    is left as rank 0's, so a ``world_size=1`` worker can ``init_process_group`` at any time.
    ``world_size > 1`` only simulates ranks for the dispatch logic (each worker sees its own
    ``self.rank``); such workers must not use ``torch.distributed``, whose ranks would run sequentially.

    Accepts a ``ClassWithInitArgs`` or ``RayClassWithInitArgs`` (``ray.remote`` classes are unwrapped).
    """

    def __init__(self, cls_with_init: ClassWithInitArgs, world_size: int = 1):
        worker_cls = unwrap_worker_class(cls_with_init.cls)
        super().__init__(worker_cls, world_size)
        master_port = str(find_free_port())
        self._workers = []
        for rank in reversed(range(world_size)):  # rank 0 last, so its environment stays
            os.environ.update(
                RANK=str(rank),
                WORLD_SIZE=str(world_size),
                LOCAL_RANK=str(rank),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=master_port,
            )
            self._workers.insert(0, worker_cls(*cls_with_init.args, **cls_with_init.kwargs))

    @property
    def workers(self) -> list[Any]:
        """The worker objects, by rank (call their methods directly when debugging)."""
        return self._workers

    def _execute_all(self, method_name: str, args_per_rank: list[tuple], kwargs_per_rank: list[dict]) -> list:
        return [
            getattr(worker, method_name)(*args, **kwargs)
            for worker, args, kwargs in zip(self._workers, args_per_rank, kwargs_per_rank)
        ]

    def _execute_rank_zero(self, method_name: str, args: tuple, kwargs: dict) -> Any:
        return getattr(self._workers[0], method_name)(*args, **kwargs)
