"""Start worker groups for a run: several roles colocated in one process per worker, on Ray or in-process.

Used by the RL trainer (actor_rollout_ref [+ critic]) and by the RS / baselines trainer, so both place,
size and shut down their workers the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from verl.single_controller.base import ClassWithInitArgs, WorkerGroup
from verl.single_controller.inprocess import InProcessWorkerGroup


def default_cpus_per_worker(workers_per_node: int) -> float:
    """Leave half a core to the driver and split the rest (at least half a core each)."""
    return max(0.5, ((os.cpu_count() or 2) - 0.5) / workers_per_node)


def launch_worker_groups(
    classes: dict[str, ClassWithInitArgs],
    backend: str = "ray",
    nnodes: int = 1,
    n_gpus_per_node: int = 0,
    n_workers: int = 1,
    cpus_per_worker: float = 0.0,
) -> tuple[dict[str, WorkerGroup], Callable[[], None]]:
    """``({role: worker group}, shutdown)`` for the roles in ``classes``.

    ``inprocess``: one worker per role in this process (no Ray). ``ray``: ``nnodes`` x (``n_gpus_per_node``
    or, on CPU, ``n_workers``) workers, each running every role in one process (colocated), joined to
    ``$RAY_ADDRESS`` when set or to a local Ray started here.
    """
    if backend == "inprocess":
        return {role: InProcessWorkerGroup(cls) for role, cls in classes.items()}, lambda: None
    if backend != "ray":
        raise ValueError(f"unknown worker backend {backend!r}; choose one of: ray, inprocess")
    from verl.single_controller.ray import (
        RayClassWithInitArgs,
        RayResourcePool,
        RayWorkerGroup,
        create_colocated_worker_cls,
        init_ray,
    )

    per_node = n_gpus_per_node or n_workers
    init_ray(num_cpus=None if os.environ.get("RAY_ADDRESS") else os.cpu_count())
    pool = RayResourcePool(
        [per_node] * nnodes,
        use_gpu=n_gpus_per_node > 0,
        num_cpus_per_worker=cpus_per_worker or default_cpus_per_worker(per_node),
    )
    ray_classes = {role: RayClassWithInitArgs(c.cls, *c.args, **c.kwargs) for role, c in classes.items()}
    group = RayWorkerGroup(pool, create_colocated_worker_cls(ray_classes))

    def shutdown() -> None:
        group.shutdown()
        pool.remove()

    return group.spawn(set(classes)), shutdown
