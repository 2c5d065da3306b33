"""Start worker groups for a run: several roles colocated in one process per worker, on Ray or in-process.

Used by the RL trainer (actor_rollout_ref [+ critic]) and by the RS / baselines trainer, so both place,
size and shut down their workers the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from verl.single_controller.base import ClassWithInitArgs, WorkerGroup
from verl.single_controller.inprocess import InProcessWorkerGroup
from verl.utils.config import ConfigError, check_choice

BACKENDS = ("ray", "inprocess")


@dataclass
class WorkerResources:
    """Where a run's workers go; the ``trainer`` section of both trainers (ReBO, RS / baselines) inherits it."""

    backend: str = "ray"
    """Worker groups on ray, or inprocess (one worker, no Ray; for debugging)."""
    nnodes: int = 1
    """Nodes of the Ray cluster to use."""
    n_gpus_per_node: int = 0
    """GPUs per node (0 = CPU workers)."""
    n_workers: int = 1
    """Workers per node when n_gpus_per_node = 0 (the FSDP world size on CPU)."""
    cpus_per_worker: float = 0.0
    """Ray CPUs per worker; 0 = (node CPUs - 0.5) / workers."""

    def world_size(self) -> int:
        return (self.n_gpus_per_node or self.n_workers) * self.nnodes

    def check_resources(self, section: str = "trainer") -> None:
        check_choice(self.backend, BACKENDS, f"{section}.backend")
        if self.backend == "inprocess" and self.world_size() != 1:
            raise ConfigError(f"{section}.backend=inprocess runs one worker; got a world size of {self.world_size()}")


def default_cpus_per_worker(workers_per_node: int) -> float:
    """Leave half a core to the driver and split the rest (at least half a core each)."""
    return max(0.5, ((os.cpu_count() or 2) - 0.5) / workers_per_node)


def launch_worker_groups(
    classes: dict[str, ClassWithInitArgs], resources: WorkerResources
) -> tuple[dict[str, WorkerGroup], Callable[[], None]]:
    """``({role: worker group}, shutdown)`` for the roles in ``classes``, placed as ``resources`` says.

    ``inprocess``: one worker per role in this process (no Ray). ``ray``: ``nnodes`` x (``n_gpus_per_node``
    or, on CPU, ``n_workers``) workers, each running every role in one process (colocated), joined to
    ``$RAY_ADDRESS`` when set or to a local Ray started here.
    """
    resources.check_resources()
    if resources.backend == "inprocess":
        return {role: InProcessWorkerGroup(cls) for role, cls in classes.items()}, lambda: None
    from verl.single_controller.ray import (
        RayClassWithInitArgs,
        RayResourcePool,
        RayWorkerGroup,
        create_colocated_worker_cls,
        init_ray,
    )

    per_node = resources.n_gpus_per_node or resources.n_workers
    init_ray(num_cpus=None if os.environ.get("RAY_ADDRESS") else os.cpu_count())
    pool = RayResourcePool(
        [per_node] * resources.nnodes,
        use_gpu=resources.n_gpus_per_node > 0,
        num_cpus_per_worker=resources.cpus_per_worker or default_cpus_per_worker(per_node),
    )
    ray_classes = {role: RayClassWithInitArgs(c.cls, *c.args, **c.kwargs) for role, c in classes.items()}
    group = RayWorkerGroup(pool, create_colocated_worker_cls(ray_classes))

    def shutdown() -> None:
        group.shutdown()
        pool.remove()

    return group.spawn(set(classes)), shutdown


def launch_initialised_worker_groups(
    classes: dict[str, ClassWithInitArgs], resources: WorkerResources
) -> tuple[dict[str, WorkerGroup], Callable[[], None]]:
    """:func:`launch_worker_groups`, then ``init_model`` on every group; shut down again if that fails."""
    groups, shutdown = launch_worker_groups(classes, resources)
    try:
        for group in groups.values():
            group.init_model()
    except BaseException:
        shutdown()
        raise
    return groups, shutdown
