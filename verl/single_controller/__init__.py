"""Single controller: one driver process calls ``@register``-ed methods on a group of workers.

``import verl.single_controller`` does not import Ray; the Ray names load on first use.
"""

from verl.single_controller.base import (
    ClassWithInitArgs,
    Dispatch,
    Worker,
    WorkerGroup,
    WorkerGroupFuture,
    fuse_worker_classes,
    register,
)
from verl.single_controller.inprocess import InProcessWorkerGroup

_RAY_NAMES = ("RayResourcePool", "RayClassWithInitArgs", "RayWorkerGroup", "create_colocated_worker_cls", "init_ray")

__all__ = [
    "ClassWithInitArgs",
    "Dispatch",
    "InProcessWorkerGroup",
    "Worker",
    "WorkerGroup",
    "WorkerGroupFuture",
    "fuse_worker_classes",
    "register",
    *_RAY_NAMES,
]


def __getattr__(name: str):
    if name in _RAY_NAMES:
        from verl.single_controller import ray as ray_backend

        return getattr(ray_backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
