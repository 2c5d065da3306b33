"""Ray backend of the single controller: resource pools, actor worker groups, colocation, ``init_ray``."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

RAY_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # local sockets on 127.0.0.1 (see notes/ENVIRONMENT.md)
    # Ray starts workers at nice 15; here the workers ARE the training job, so under any other load
    # (tests, a second run) they would get a few percent of a core.
    "RAY_worker_niceness": "0",
}
# Ray reads some of these when it is imported, so they are set (unless the user did) before `import ray`.
for _key, _value in RAY_ENV_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

import ray  # noqa: E402
from ray.util.placement_group import (  # noqa: E402
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy  # noqa: E402

from verl.single_controller.base import (  # noqa: E402
    ClassWithInitArgs,
    WorkerGroup,
    find_free_port,
    fuse_worker_classes,
    unwrap_worker_class,
)

NODE_ID_LABEL = "ray.io/node-id"  # a label Ray gives every node
PROPAGATED_ENV_VARS = (
    "TOKENIZERS_PARALLELISM",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HOME",
    "HF_ENDPOINT",
    "VERL_DEVICE",
    "WANDB_MODE",
    "PYTORCH_CUDA_ALLOC_CONF",
)


def init_ray(
    num_cpus: float | None = None,
    object_store_memory: int | None = 512 * 2**20,
    address: str | None = None,
    env_vars: dict[str, str] | None = None,
    **init_kwargs: Any,
) -> None:
    """Start (or join) Ray once; a no-op if Ray is already initialised.

    Joins ``address`` or ``$RAY_ADDRESS`` when given, else starts a local instance without the
    dashboard and with a capped object store. Workers get ``TOKENIZERS_PARALLELISM=false`` and the
    driver's offline / HF settings (``PROPAGATED_ENV_VARS``) plus ``env_vars``.
    """
    if ray.is_initialized():
        return
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    worker_env = {"TOKENIZERS_PARALLELISM": "false"}
    worker_env.update({key: os.environ[key] for key in PROPAGATED_ENV_VARS if key in os.environ})
    worker_env.update(env_vars or {})
    runtime_env = {"env_vars": worker_env}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env, **init_kwargs)
    else:
        init_kwargs.setdefault("include_dashboard", False)
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory, runtime_env=runtime_env, **init_kwargs)


class RayResourcePool:
    """Placement groups for the workers: one per node, one bundle per worker.

    A bundle holds ``{"CPU": num_cpus_per_worker}`` (fractions such as 0.5 are fine) plus
    ``{"GPU": 1}`` when ``use_gpu``. Up to ``max_colocate_count`` worker groups may share the pool:
    each of their actors takes ``1 / max_colocate_count`` of a bundle.
    """

    def __init__(
        self,
        process_on_nodes: list[int],
        use_gpu: bool = False,
        num_cpus_per_worker: float = 1.0,
        max_colocate_count: int = 1,
        strategy: str = "STRICT_PACK",
        ready_timeout_s: float = 60.0,
    ):
        if not process_on_nodes or any(int(n) < 1 for n in process_on_nodes):
            raise ValueError(f"process_on_nodes must be a non-empty list of positive counts, got {process_on_nodes}")
        if num_cpus_per_worker <= 0:
            raise ValueError(f"num_cpus_per_worker must be > 0, got {num_cpus_per_worker}")
        if max_colocate_count < 1:
            raise ValueError(f"max_colocate_count must be >= 1, got {max_colocate_count}")
        self.process_on_nodes = [int(n) for n in process_on_nodes]
        self.use_gpu = use_gpu
        self.num_cpus_per_worker = float(num_cpus_per_worker)
        self.max_colocate_count = max_colocate_count
        self.strategy = strategy
        self.ready_timeout_s = ready_timeout_s
        self._placement_groups: list[PlacementGroup] | None = None

    @property
    def world_size(self) -> int:
        return sum(self.process_on_nodes)

    @property
    def bundle(self) -> dict[str, float]:
        bundle = {"CPU": self.num_cpus_per_worker}
        if self.use_gpu:
            bundle["GPU"] = 1.0
        return bundle

    def actor_resources(self) -> dict[str, float]:
        """``num_cpus`` / ``num_gpus`` options of one actor placed in a bundle."""
        share = {"num_cpus": self.num_cpus_per_worker / self.max_colocate_count}
        if self.use_gpu:
            share["num_gpus"] = 1.0 / self.max_colocate_count
        return share

    def get_placement_groups(self) -> list[PlacementGroup]:
        """Create the placement groups once and wait until Ray has reserved them, each on its own node.

        Group ``i`` is created after groups ``0..i-1`` are placed, with a label selector that excludes
        their nodes (``ray.io/node-id``), so ``[1, 1]`` on two nodes gives one worker per node even when
        one node could hold both.
        """
        if self._placement_groups is None:
            groups: list[PlacementGroup] = []
            used_nodes: list[str] = []
            deadline = time.monotonic() + self.ready_timeout_s
            try:
                for count in self.process_on_nodes:
                    selector = [{NODE_ID_LABEL: f"!in({','.join(used_nodes)})"}] * count if used_nodes else None
                    pg = placement_group([self.bundle] * count, strategy=self.strategy, bundle_label_selector=selector)
                    groups.append(pg)
                    ray.get(pg.ready(), timeout=max(0.0, deadline - time.monotonic()))
                    used_nodes.append(placement_group_table(pg)["bundles_to_node_id"][0])
            except ray.exceptions.GetTimeoutError:
                for pg in groups:
                    remove_placement_group(pg)
                alive = sum(1 for node in ray.nodes() if node["Alive"])
                raise RuntimeError(
                    f"RayResourcePool: placement groups {self.process_on_nodes} x {self.bundle} (one node each) not "
                    f"ready after {self.ready_timeout_s} s; {alive} alive node(s), available resources: "
                    f"{ray.available_resources()}"
                ) from None
            self._placement_groups = groups
        return self._placement_groups

    def remove(self) -> None:
        """Release the reserved resources (kill the pool's actors first)."""
        for pg in self._placement_groups or []:
            remove_placement_group(pg)
        self._placement_groups = None


class RayClassWithInitArgs(ClassWithInitArgs):
    """A worker class (plain or ``ray.remote``) plus constructor arguments; ``options`` are extra
    ``actor.options(...)`` (e.g. ``max_concurrency``)."""

    def __init__(self, cls: type, *args: Any, **kwargs: Any):
        super().__init__(cls, *args, **kwargs)
        self.options: dict[str, Any] = {}

    def update_options(self, options: dict[str, Any]) -> None:
        self.options.update(options)


def create_colocated_worker_cls(class_dict: dict[str, RayClassWithInitArgs]) -> RayClassWithInitArgs:
    """A fused worker class running every role in one process; use ``RayWorkerGroup(...).spawn(roles)``."""
    fused = fuse_worker_classes(class_dict)
    return RayClassWithInitArgs(fused.cls, *fused.args, **fused.kwargs)


def _node_ip(node_id: str) -> str:
    for node in ray.nodes():
        if node["NodeID"] == node_id:
            return node["NodeManagerAddress"]
    raise RuntimeError(f"node {node_id} of the placement group is not in ray.nodes()")


def _free_port_on_node(node_id: str) -> int:
    if node_id == ray.get_runtime_context().get_node_id():
        return find_free_port()
    strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    return ray.get(ray.remote(find_free_port).options(num_cpus=0, scheduling_strategy=strategy).remote())


def _is_small(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _whereami(_worker: Any) -> dict[str, Any]:
    """Run in an actor by ``__ray_call__``: the node id and pid of its process."""
    return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


# Ray's message for a killed actor is several lines; the exit detail is the part worth one line.
_EXIT_DETAIL = re.compile(r"Worker exit detail: (.*?)(?:\.(?: |$)|$)", re.S)
PEER_DEATH_GRACE_S = 2.0
"""After a task error on one rank, how long to look for a dead peer (its death is then the cause)."""


class WorkerDiedError(RuntimeError):
    """A worker process of a group died (killed, out of memory, node lost); the message is one line.

    ``step`` is filled in by the trainer that was running a step when it happened.
    """

    def __init__(self, role: str, rank: int, method: str, where: dict[str, Any], reason: str):
        super().__init__(role, rank, method)
        self.role, self.rank, self.method, self.where, self.reason = role, rank, method, where, reason
        self.step: int | None = None

    def __str__(self) -> str:
        during = self.method
        if self.step is not None:
            during = f"step {self.step} ({self.method})" if self.step > 0 else f"setup, before step 1 ({self.method})"
        node = str(self.where.get("node_id", "?"))[:12]
        return (
            f"worker {self.role} rank {self.rank} (pid {self.where.get('pid', '?')}, node {node}) died during "
            f"{during}: {self.reason}"
        )


def _short_reason(error: Exception) -> str:
    text = str(error)
    match = _EXIT_DETAIL.search(text)
    line = match.group(1) if match else text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return " ".join(line.split())[:200]


class RayWorkerGroup(WorkerGroup):
    """One Ray actor per bundle of ``resource_pool``, ranks in bundle order.

    Every actor gets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``
    (rank 0's node IP) and ``MASTER_PORT`` (free on that node) in its environment before its
    constructor runs, so constructors may ``init_process_group`` right away; plus
    ``OMP_NUM_THREADS`` = its whole CPUs (at least 1) unless the driver environment sets it.
    """

    def __init__(
        self,
        resource_pool: RayResourcePool,
        ray_cls_with_init: ClassWithInitArgs,
        name_prefix: str | None = None,
    ):
        super().__init__(unwrap_worker_class(ray_cls_with_init.cls), resource_pool.world_size)
        self.name_prefix = name_prefix or f"wg_{uuid.uuid4().hex[:8]}"
        self.resource_pool = resource_pool
        remote_cls = ray_cls_with_init.cls
        if not isinstance(remote_cls, ray.actor.ActorClass):
            remote_cls = ray.remote(remote_cls)
        groups = resource_pool.get_placement_groups()
        rank0_node = placement_group_table(groups[0])["bundles_to_node_id"][0]
        master = {"MASTER_ADDR": _node_ip(rank0_node), "MASTER_PORT": str(_free_port_on_node(rank0_node))}
        resources = resource_pool.actor_resources()
        extra_options = getattr(ray_cls_with_init, "options", {})
        self._actors = []
        rank = 0
        for pg, local_world_size in zip(groups, resource_pool.process_on_nodes):
            for local_rank in range(local_world_size):
                env = {
                    "RANK": str(rank),
                    "WORLD_SIZE": str(self.world_size),
                    "LOCAL_RANK": str(local_rank),
                    "LOCAL_WORLD_SIZE": str(local_world_size),
                    **master,
                }
                if "OMP_NUM_THREADS" not in os.environ:
                    env["OMP_NUM_THREADS"] = str(max(1, int(resources["num_cpus"])))
                strategy = PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=local_rank
                )
                actor = remote_cls.options(
                    name=f"{self.name_prefix}_rank{rank}",
                    scheduling_strategy=strategy,
                    runtime_env={"env_vars": env},
                    **resources,
                    **extra_options,
                ).remote(*ray_cls_with_init.args, **ray_cls_with_init.kwargs)
                self._actors.append(actor)
                rank += 1
        self._where: list[dict[str, Any]] = [{} for _ in self._actors]
        # Constructor errors surface here (with their traceback); node and pid of every rank are kept.
        self._where = self._wait([actor.__ray_call__.remote(_whereami) for actor in self._actors], "__init__")

    @property
    def workers(self) -> list[ray.actor.ActorHandle]:
        """The actor handles, by rank."""
        return self._actors

    @property
    def worker_info(self) -> list[dict[str, Any]]:
        """``[{"rank", "node_id", "pid"}]`` by rank, as each actor reported it when it started."""
        return [{"rank": rank, **where} for rank, where in enumerate(self._where)]

    def _role_and_method(self, remote_name: str) -> tuple[str, str]:
        """``actor_rollout_ref_generate_sequences`` -> (``actor_rollout_ref``, ``generate_sequences``)."""
        roles = sorted(getattr(self._worker_cls, "role_classes", {}), key=len, reverse=True)
        role = next((r for r in roles if remote_name.startswith(f"{r}_")), None)
        if role is None:
            return self._worker_cls.__name__, remote_name
        return role, remote_name[len(role) + 1 :]

    def _died(self, rank: int, remote_name: str, error: Exception) -> WorkerDiedError:
        role, method = self._role_and_method(remote_name)
        return WorkerDiedError(role, rank, method, self._where[rank], _short_reason(error))

    def _wait(self, refs: list[ray.ObjectRef], remote_name: str) -> list:
        """``ray.get(refs)`` (``refs[i]`` from rank ``i``), but the first failure ends the wait at once.

        A dead actor raises ``WorkerDiedError`` naming its role and rank (constructor failures keep
        Ray's error and traceback). A task error on one rank is re-raised, unless a peer turns out to
        have died within ``PEER_DEATH_GRACE_S`` (then the death is the cause, e.g. a broken collective).
        """
        rank_of = {ref: rank for rank, ref in enumerate(refs)}
        values: list = [None] * len(refs)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                values[rank_of[ready[0]]] = ray.get(ready[0])
            except ray.exceptions.RayActorError as error:
                if error.actor_init_failed:
                    raise
                raise self._died(rank_of[ready[0]], remote_name, error) from None
            except ray.exceptions.RayError:
                if pending:
                    ready, _ = ray.wait(pending, num_returns=len(pending), timeout=PEER_DEATH_GRACE_S)
                    for ref in ready:
                        try:
                            ray.get(ref)
                        except ray.exceptions.RayActorError as death:
                            if not death.actor_init_failed:
                                raise self._died(rank_of[ref], remote_name, death) from None
                        except ray.exceptions.RayError:
                            pass
                raise
        return values

    def _put_shared(self, per_rank: list[tuple]) -> list[tuple]:
        """Put an argument that is the same object on every rank into the object store once."""
        if len(per_rank) < 2 or not per_rank[0]:
            return per_rank
        shared = [
            ray.put(value) if not _is_small(value) and all(args[i] is value for args in per_rank) else value
            for i, value in enumerate(per_rank[0])
        ]
        return [tuple(s if isinstance(s, ray.ObjectRef) else a for s, a in zip(shared, args)) for args in per_rank]

    def _execute_all_async(self, method_name, args_per_rank, kwargs_per_rank) -> Callable[[], list]:
        args_per_rank = self._put_shared(list(args_per_rank))
        refs = [
            getattr(actor, method_name).remote(*args, **kwargs)
            for actor, args, kwargs in zip(self._actors, args_per_rank, kwargs_per_rank)
        ]
        return lambda: self._wait(refs, method_name)

    def _execute_all(self, method_name, args_per_rank, kwargs_per_rank) -> list:
        return self._execute_all_async(method_name, args_per_rank, kwargs_per_rank)()

    def _execute_rank_zero_async(self, method_name, args, kwargs) -> Callable[[], Any]:
        ref = getattr(self._actors[0], method_name).remote(*args, **kwargs)
        return lambda: self._wait([ref], method_name)[0]

    def _execute_rank_zero(self, method_name, args, kwargs) -> Any:
        return self._execute_rank_zero_async(method_name, args, kwargs)()

    def shutdown(self) -> None:
        """Kill the actors (the resource pool keeps its reservation; call ``resource_pool.remove()``)."""
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
