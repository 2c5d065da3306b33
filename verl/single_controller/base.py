"""The single-controller core, independent of Ray.

A *worker* is a class whose methods carry ``@register(dispatch_mode=...)``. A *worker group* holds
``world_size`` instances of it (Ray actors, or objects in this process) and, for every registered
method, gets a driver-side method of the same name that

1. **dispatches** the driver's arguments into one argument set per rank,
2. **executes** the method on every rank (or on rank 0 only),
3. **collects** the per-rank results into one value.

Backends (``RayWorkerGroup``, ``InProcessWorkerGroup``) only implement step 2.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

REGISTER_ATTR = "_verl_register_info"


class Dispatch(Enum):
    ONE_TO_ALL = "one_to_all"
    """The same arguments on every rank; returns the list of per-rank results."""
    ALL_TO_ALL = "all_to_all"
    """Every argument is a list with one item per rank; returns the list of per-rank results."""
    RANK_ZERO = "rank_zero"
    """Runs on rank 0 only; returns its result."""
    DP_COMPUTE_PROTO = "dp_compute_proto"
    """DataProto arguments are padded to a multiple of the world size and chunked (one chunk per rank);
    other arguments are broadcast. The per-rank DataProto outputs are concatenated and unpadded."""
    DP_COMPUTE_METRIC = "dp_compute_metric"
    """DataProto arguments are chunked (their length must divide by the world size: no padding, so no
    row is trained on twice); returns the list of per-rank outputs (e.g. metric dicts)."""


@dataclass(frozen=True)
class RegisterInfo:
    dispatch_mode: Dispatch
    blocking: bool


def register(dispatch_mode: Dispatch | Callable = Dispatch.ALL_TO_ALL, blocking: bool = True):
    """Mark a worker method for the worker group: ``@register(Dispatch.DP_COMPUTE_PROTO)``.

    ``blocking=False`` makes the driver-side method return a ``WorkerGroupFuture`` (call ``.get()``).
    Bare ``@register`` means ALL_TO_ALL, blocking.
    """
    if callable(dispatch_mode) and not isinstance(dispatch_mode, Dispatch):
        return register()(dispatch_mode)
    if not isinstance(dispatch_mode, Dispatch):
        raise TypeError(f"register: dispatch_mode must be a Dispatch member, got {dispatch_mode!r}")

    def decorator(method: Callable) -> Callable:
        setattr(method, REGISTER_ATTR, RegisterInfo(dispatch_mode, bool(blocking)))
        return method

    return decorator


def registered_methods(worker_cls: type) -> dict[str, RegisterInfo]:
    """``{method name: RegisterInfo}`` for every ``@register`` method of ``worker_cls`` (and its bases)."""
    found = {}
    for name in dir(worker_cls):
        info = getattr(getattr(worker_cls, name, None), REGISTER_ATTR, None)
        if isinstance(info, RegisterInfo):
            found[name] = info
    return found


def unwrap_worker_class(cls: Any) -> type:
    """The plain Python class behind ``ray.remote(cls)`` (or ``cls`` itself)."""
    return getattr(cls, "__ray_actor_class__", cls)


def find_free_port() -> int:
    """A TCP port that is free on this machine right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def get_node_ip() -> str:
    """This node's IP as Ray sees it inside a Ray process, else ``127.0.0.1``."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.util.get_node_ip_address()
    return "127.0.0.1"


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


class Worker:
    """Base class of everything a worker group runs: knows its rank and the rendezvous address.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (defaults 0 / 1 / 0), ``MASTER_ADDR`` and
    ``MASTER_PORT`` from the environment, which the worker group sets before construction. The values
    are read in ``__new__``, so they are available even when a subclass skips ``super().__init__()``.
    It does not touch ``torch.distributed``: subclasses call ``init_process_group`` themselves.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        instance = super().__new__(cls)
        if cls.__name__.startswith("ActorClass("):  # ray.remote(cls) on the driver builds one: not a worker
            return instance
        instance._rank = _int_env("RANK", 0)
        instance._world_size = _int_env("WORLD_SIZE", 1)
        instance._local_rank = _int_env("LOCAL_RANK", 0)
        if not 0 <= instance._rank < instance._world_size:
            raise ValueError(f"environment RANK={instance._rank} is outside WORLD_SIZE={instance._world_size}")
        return instance

    def __init__(self) -> None:
        pass

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def local_rank(self) -> int:
        return self._local_rank

    def get_master_addr_port(self) -> tuple[str, int]:
        """``(MASTER_ADDR, MASTER_PORT)`` of this process's environment.

        On rank 0 missing values are chosen (this node's IP, a free port) and written to the
        environment, so a standalone worker can still ``init_process_group``.
        """
        if self._rank == 0:
            if not os.environ.get("MASTER_ADDR"):
                os.environ["MASTER_ADDR"] = get_node_ip()
            if not os.environ.get("MASTER_PORT"):
                os.environ["MASTER_PORT"] = str(find_free_port())
        if not os.environ.get("MASTER_ADDR") or not os.environ.get("MASTER_PORT"):
            raise RuntimeError(f"rank {self._rank}: MASTER_ADDR / MASTER_PORT are not set in the environment")
        return os.environ["MASTER_ADDR"], _int_env("MASTER_PORT", 0)

    def get_pid(self) -> int:
        return os.getpid()


class ClassWithInitArgs:
    """A worker class plus its constructor arguments, instantiated later by a worker group."""

    def __init__(self, cls: type, *args: Any, **kwargs: Any):
        self.cls = cls
        self.args = args
        self.kwargs = kwargs

    def __call__(self) -> Any:
        return unwrap_worker_class(self.cls)(*self.args, **self.kwargs)


class FusedWorker(Worker):
    """Several roles' workers in one process; subclasses made by ``fuse_worker_classes`` forward
    ``<role>_<method>`` to the role's instance."""

    role_classes: dict[str, type] = {}

    def __init__(self, role_specs: dict[str, tuple[type, tuple, dict]]):
        super().__init__()
        self.role_workers = {role: cls(*args, **kwargs) for role, (cls, args, kwargs) in role_specs.items()}


def _role_forwarder(role: str, name: str, info: RegisterInfo) -> Callable:
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.role_workers[role], name)(*args, **kwargs)

    forward.__name__ = forward.__qualname__ = f"{role}_{name}"
    setattr(forward, REGISTER_ATTR, info)
    return forward


def fuse_worker_classes(class_dict: dict[str, ClassWithInitArgs]) -> ClassWithInitArgs:
    """One worker class that builds every role's worker in the same process.

    Each role's registered method ``m`` becomes ``<role>_m`` on the fused class, with the same
    dispatch mode; ``WorkerGroup.spawn`` gives per-role views that call them by their plain names.
    """
    if not class_dict:
        raise ValueError("fuse_worker_classes: class_dict is empty")
    role_classes = {role: unwrap_worker_class(spec.cls) for role, spec in class_dict.items()}
    namespace: dict[str, Any] = {"role_classes": role_classes, "__module__": __name__}
    for role, cls in role_classes.items():
        if not role.isidentifier():
            raise ValueError(f"fuse_worker_classes: role name {role!r} is not a Python identifier")
        for name, info in registered_methods(cls).items():
            fused_name = f"{role}_{name}"
            if fused_name in namespace:
                raise ValueError(f"fuse_worker_classes: method name {fused_name!r} is produced by two roles")
            namespace[fused_name] = _role_forwarder(role, name, info)
    fused_cls = type("FusedWorker_" + "_".join(role_classes), (FusedWorker,), namespace)
    role_specs = {role: (role_classes[role], spec.args, spec.kwargs) for role, spec in class_dict.items()}
    return ClassWithInitArgs(fused_cls, role_specs)


class WorkerGroupFuture:
    """The pending result of a ``blocking=False`` call; ``get()`` waits, collects and caches it."""

    _UNSET = object()

    def __init__(self, wait: Callable[[], Any], collect: Callable[[Any], Any]):
        self._wait = wait
        self._collect = collect
        self._value = self._UNSET

    def get(self) -> Any:
        if self._value is self._UNSET:
            self._value = self._collect(self._wait())
        return self._value


# ---------------------------------------------------------------- dispatch / collect


def _is_data_proto(value: Any) -> bool:
    protocol = sys.modules.get("verl.protocol")  # a DataProto can only exist if the module was imported
    return protocol is not None and isinstance(value, protocol.DataProto)


def _split_data_protos(args: tuple, kwargs: dict, world_size: int, method: str, pad: bool):
    """One (args, kwargs) per rank: DataProtos chunked (padded first if ``pad``), the rest broadcast."""
    values = list(args) + list(kwargs.values())
    lengths = sorted({len(v) for v in values if _is_data_proto(v)})
    if len(lengths) > 1:
        raise ValueError(f"{method}: DataProto arguments have different lengths {lengths}")
    pad_size = 0
    if lengths and lengths[0] % world_size:
        if not pad:
            raise ValueError(
                f"{method}: DataProto of {lengths[0]} rows does not divide into {world_size} ranks "
                "(DP_COMPUTE_METRIC does not pad; make the batch size a multiple of the world size)"
            )
        from verl.protocol import pad_dataproto_to_divisor

        pad_size = world_size - lengths[0] % world_size
        values = [pad_dataproto_to_divisor(v, world_size)[0] if _is_data_proto(v) else v for v in values]
    split = [v.chunk(world_size) if _is_data_proto(v) else [v] * world_size for v in values]
    n_args = len(args)
    args_per_rank = [tuple(s[rank] for s in split[:n_args]) for rank in range(world_size)]
    keys = list(kwargs)
    kwargs_per_rank = [{k: s[rank] for k, s in zip(keys, split[n_args:])} for rank in range(world_size)]
    return args_per_rank, kwargs_per_rank, pad_size, (lengths[0] + pad_size if lengths else 0)


def _collect_data_protos(outputs: list, method: str, pad_size: int, padded_length: int) -> Any:
    if all(output is None for output in outputs):
        return None
    for rank, output in enumerate(outputs):
        if not _is_data_proto(output):
            raise TypeError(
                f"{method}: rank {rank} returned {type(output).__name__}; "
                "DP_COMPUTE_PROTO methods must return a DataProto (or None on every rank)"
            )
    from verl.protocol import DataProto, unpad_dataproto

    merged = DataProto.concat(outputs)
    if pad_size:
        # A rank may return several rows per input row (e.g. n samples, interleaved): scale the padding.
        if len(merged) % padded_length:
            raise ValueError(
                f"{method}: {len(merged)} output rows are not a multiple of the {padded_length} padded "
                "input rows, so the padding cannot be removed"
            )
        merged = unpad_dataproto(merged, pad_size * (len(merged) // padded_length))
    return merged


def _all_to_all_split(args: tuple, kwargs: dict, world_size: int, method: str):
    for where, value in [*((f"argument {i}", v) for i, v in enumerate(args)), *kwargs.items()]:
        if not isinstance(value, (list, tuple)) or len(value) != world_size:
            raise ValueError(f"{method} (ALL_TO_ALL): {where} must be a list of {world_size} items, one per rank")
    args_per_rank = [tuple(a[rank] for a in args) for rank in range(world_size)]
    kwargs_per_rank = [{k: v[rank] for k, v in kwargs.items()} for rank in range(world_size)]
    return args_per_rank, kwargs_per_rank


def _resolve_futures(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    def resolve(value: Any) -> Any:
        return value.get() if isinstance(value, WorkerGroupFuture) else value

    return tuple(resolve(a) for a in args), {k: resolve(v) for k, v in kwargs.items()}


class WorkerGroup:
    """``world_size`` workers of one class behind driver-side methods (see the module docstring).

    Backends implement ``_execute_all`` / ``_execute_rank_zero``; they may override the ``*_async``
    variants (default: run eagerly) so that ``blocking=False`` calls overlap with driver work.
    """

    def __init__(self, worker_cls: type, world_size: int):
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        self._worker_cls = unwrap_worker_class(worker_cls)
        self._world_size = world_size
        self._bind_worker_methods(self._worker_cls)

    @property
    def world_size(self) -> int:
        return self._world_size

    # ------------------------------------------------------------ backend interface
    def _execute_all(self, method_name: str, args_per_rank: list[tuple], kwargs_per_rank: list[dict]) -> list:
        raise NotImplementedError

    def _execute_rank_zero(self, method_name: str, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError

    def _execute_all_async(self, method_name: str, args_per_rank: list, kwargs_per_rank: list) -> Callable[[], list]:
        results = self._execute_all(method_name, args_per_rank, kwargs_per_rank)
        return lambda: results

    def _execute_rank_zero_async(self, method_name: str, args: tuple, kwargs: dict) -> Callable[[], Any]:
        result = self._execute_rank_zero(method_name, args, kwargs)
        return lambda: result

    # ------------------------------------------------------------ generic calls
    def execute_all(self, method_name: str, *args: Any, **kwargs: Any) -> list:
        """Call any worker method on every rank with the same arguments (ONE_TO_ALL)."""
        return self._execute_all(method_name, [args] * self.world_size, [kwargs] * self.world_size)

    def execute_rank_zero(self, method_name: str, *args: Any, **kwargs: Any) -> Any:
        return self._execute_rank_zero(method_name, args, kwargs)

    def _call(self, method_name: str, info: RegisterInfo, args: tuple, kwargs: dict) -> Any:
        """Dispatch -> execute ``method_name`` on the workers -> collect (a future if not blocking)."""
        args, kwargs = _resolve_futures(args, kwargs)
        mode, world_size = info.dispatch_mode, self.world_size
        collect: Callable[[Any], Any] = _identity
        if mode is Dispatch.RANK_ZERO:
            if info.blocking:
                return self._execute_rank_zero(method_name, args, kwargs)
            return WorkerGroupFuture(self._execute_rank_zero_async(method_name, args, kwargs), collect)
        if mode is Dispatch.ONE_TO_ALL:
            args_per_rank, kwargs_per_rank = [args] * world_size, [kwargs] * world_size
        elif mode is Dispatch.ALL_TO_ALL:
            args_per_rank, kwargs_per_rank = _all_to_all_split(args, kwargs, world_size, method_name)
        elif mode in (Dispatch.DP_COMPUTE_PROTO, Dispatch.DP_COMPUTE_METRIC):
            is_proto = mode is Dispatch.DP_COMPUTE_PROTO
            args_per_rank, kwargs_per_rank, pad_size, padded = _split_data_protos(
                args, kwargs, world_size, method_name, pad=is_proto
            )
            if is_proto:
                collect = lambda outputs: _collect_data_protos(outputs, method_name, pad_size, padded)  # noqa: E731
        else:
            raise NotImplementedError(f"{method_name}: dispatch mode {mode} is not implemented")
        if info.blocking:
            return collect(self._execute_all(method_name, args_per_rank, kwargs_per_rank))
        return WorkerGroupFuture(self._execute_all_async(method_name, args_per_rank, kwargs_per_rank), collect)

    # ------------------------------------------------------------ method binding and colocation
    def _bind_worker_methods(self, worker_cls: type, remote_prefix: str = "") -> None:
        for name, info in registered_methods(worker_cls).items():
            if hasattr(self, name):
                raise ValueError(f"{worker_cls.__name__}.{name} clashes with an attribute of {type(self).__name__}")
            setattr(self, name, self._make_driver_method(name, remote_prefix + name, info))

    def _make_driver_method(self, name: str, remote_name: str, info: RegisterInfo) -> Callable:
        def driver_method(*args: Any, **kwargs: Any) -> Any:
            return self._call(remote_name, info, args, kwargs)

        driver_method.__name__ = name
        driver_method.__doc__ = f"{remote_name} on the workers ({info.dispatch_mode.name}, blocking={info.blocking})"
        return driver_method

    def spawn(self, prefix_set: set[str] | list[str]) -> dict[str, WorkerGroup]:
        """Per-role views of a fused worker group (see ``fuse_worker_classes``): ``{role: view}``.

        ``view.m(...)`` calls ``<role>_m`` on this group's workers (same processes).
        """
        role_classes = getattr(self._worker_cls, "role_classes", None)
        if not role_classes:
            raise TypeError(f"spawn: {self._worker_cls.__name__} is not a fused worker class")
        unknown = sorted(set(prefix_set) - set(role_classes))
        if unknown:
            raise KeyError(f"spawn: unknown roles {unknown}; the fused class has {sorted(role_classes)}")
        return {role: _RoleView(self, role, role_classes[role]) for role in prefix_set}


def _identity(value: Any) -> Any:
    return value


class _RoleView(WorkerGroup):
    """One role of a fused worker group; executes on the parent's workers."""

    def __init__(self, parent: WorkerGroup, role: str, role_cls: type):
        self._worker_cls = role_cls
        self._world_size = parent.world_size
        self.role = role
        # Execution is the parent's; only the method names differ (``<role>_<method>``, bound below).
        self._execute_all, self._execute_all_async = parent._execute_all, parent._execute_all_async
        self._execute_rank_zero, self._execute_rank_zero_async = (
            parent._execute_rank_zero,
            parent._execute_rank_zero_async,
        )
        self._bind_worker_methods(role_cls, remote_prefix=f"{role}_")
