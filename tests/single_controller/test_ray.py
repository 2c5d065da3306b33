"""RayWorkerGroup on a real local Ray (2 CPUs): env plumbing, dispatch modes, colocation, gloo rendezvous."""

import os

import pytest
import torch

from tests.single_controller.light_workers import CounterWorker, EchoWorker
from tests.single_controller.toy_workers import ShiftWorker, square_plus_rank_free
from verl.protocol import DataProto
from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup, WorkerGroupFuture


def make_data(n: int) -> DataProto:
    return DataProto.from_dict({"x": torch.linspace(-2, 3, n)}, {"name": [f"r{i}" for i in range(n)]})


@pytest.fixture(scope="module")
def pool(ray_session):
    """Two workers of 0.5 CPU each on the 2-CPU machine; two worker groups may share each bundle."""
    from verl.single_controller import RayResourcePool

    pool = RayResourcePool([2], use_gpu=False, num_cpus_per_worker=0.5, max_colocate_count=2)
    yield pool
    pool.remove()


@pytest.fixture(scope="module")
def toy_group(pool):
    from verl.single_controller import RayClassWithInitArgs, RayWorkerGroup

    group = RayWorkerGroup(pool, RayClassWithInitArgs(ShiftWorker, scale=2.0), name_prefix="toy")
    yield group
    group.shutdown()


@pytest.fixture(scope="module")
def fused_group(pool):
    """A second group on the same pool: two torch-free roles fused into one process per rank."""
    from verl.single_controller import RayClassWithInitArgs, RayWorkerGroup, create_colocated_worker_cls

    cls = create_colocated_worker_cls(
        {
            "counter": RayClassWithInitArgs(CounterWorker, start=5),
            "echo": RayClassWithInitArgs(EchoWorker, greeting="hi"),
        }
    )
    group = RayWorkerGroup(pool, cls)
    yield group
    group.shutdown()


def test_pool_bundles_and_shared_placement(pool, toy_group, fused_group, ray_session):
    from ray.util.placement_group import placement_group_table

    (pg,) = pool.get_placement_groups()
    assert placement_group_table(pg)["bundles"] == {0: {"CPU": 0.5}, 1: {"CPU": 0.5}}
    assert pool.actor_resources() == {"num_cpus": 0.25}
    # Both groups' four actors are alive inside the same two half-CPU bundles.
    assert toy_group.world_size == fused_group.world_size == 2
    assert len({*toy_group.execute_all("get_pid"), *fused_group.execute_all("get_pid")}) == 4


def test_one_to_all_sets_rank_env(toy_group):
    described = toy_group.describe()
    assert len(described) == 2
    for rank, info in enumerate(described):
        env = info["env"]
        assert (info["rank"], info["world_size"]) == (rank, 2)
        assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == (str(rank), "2", str(rank))
        assert env["MASTER_ADDR"] == "127.0.0.1"  # one machine, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
        assert env["MASTER_PORT"] == described[0]["env"]["MASTER_PORT"] and env["MASTER_PORT"].isdigit()
        if "OMP_NUM_THREADS" not in os.environ:
            assert env["OMP_NUM_THREADS"] == "1"
    assert described[0]["pid"] != described[1]["pid"] != os.getpid()
    addr_ports = toy_group.execute_all("get_master_addr_port")
    assert addr_ports[0] == addr_ports[1] == ("127.0.0.1", int(described[0]["env"]["MASTER_PORT"]))


def test_dp_compute_proto_with_padding(toy_group):
    data = make_data(5)
    out = toy_group.compute(data, offset=-1.0)
    reference = square_plus_rank_free(data, -1.0)
    torch.testing.assert_close(out.batch["y"], reference.batch["y"])
    assert list(out.non_tensor_batch["tag"]) == list(reference.non_tensor_batch["tag"])
    assert out.batch["done_by"].tolist() == [0, 0, 0, 1, 1]  # padded to 6 rows: 3 per rank


def test_metric_rank_zero_and_all_to_all(toy_group):
    data = make_data(4)
    metrics = toy_group.metrics(data)
    assert [m["rows"] for m in metrics] == [2, 2] and [m["rank"] for m in metrics] == [0, 1]
    assert metrics[0]["sum"] == pytest.approx(float(data.batch["x"][:2].sum()))
    assert metrics[1]["names"] == ["r2", "r3"]
    assert toy_group.whoami() == 0
    assert toy_group.add_to_rank([5, 6], extra=[1, 1]) == [6, 107]


def test_non_blocking_calls_overlap(toy_group):
    first = toy_group.slow_scaled_sum([1.0, 1.0])
    shifted = toy_group.shift(make_data(3), by=1.0)  # submitted before the first result is fetched
    assert isinstance(first, WorkerGroupFuture) and isinstance(shifted, WorkerGroupFuture)
    assert first.get() == [4.0, 5.0]
    out = toy_group.compute(shifted)  # a future is accepted as an argument
    torch.testing.assert_close(out.batch["y"], (make_data(3).batch["x"] + 1.0) ** 2)


def test_same_results_as_in_process_group(toy_group, restore_dist_env):
    local = InProcessWorkerGroup(ClassWithInitArgs(ShiftWorker, scale=2.0), world_size=2)
    data = make_data(7)
    for name, args, kwargs in [
        ("compute", (data,), {"offset": 0.25}),
        ("expand", (data,), {"n": 3}),
    ]:
        ray_out, local_out = getattr(toy_group, name)(*args, **kwargs), getattr(local, name)(*args, **kwargs)
        assert ray_out.batch.keys() == local_out.batch.keys()
        for key in ray_out.batch.keys():
            torch.testing.assert_close(ray_out.batch[key], local_out.batch[key])
        assert {k: list(v) for k, v in ray_out.non_tensor_batch.items()} == {
            k: list(v) for k, v in local_out.non_tensor_batch.items()
        }
    assert toy_group.metrics(make_data(6)) == local.metrics(make_data(6))
    assert toy_group.slow_scaled_sum([3.0]).get() == local.slow_scaled_sum([3.0]).get()
    assert toy_group.add_to_rank([1, 2]) == local.add_to_rank([1, 2])


def test_gloo_rendezvous_from_group_env(toy_group):
    assert toy_group.gloo_all_reduce_rank() == [1.0, 1.0]  # 0 + 1 summed over the two ranks


def test_colocated_roles_share_a_process(fused_group):
    views = fused_group.spawn({"counter", "echo"})
    counter_info, echo_info = views["counter"].describe(), views["echo"].describe()
    for rank in range(2):
        assert counter_info[rank]["pid"] == echo_info[rank]["pid"]
        assert counter_info[rank]["rank"] == echo_info[rank]["rank"] == rank
    assert counter_info[0]["pid"] != counter_info[1]["pid"]
    assert [info["count"] for info in counter_info] == [5, 5]
    assert [info["greeting"] for info in echo_info] == ["hi", "hi"]
    # Each role keeps its dispatch mode: ALL_TO_ALL, RANK_ZERO, non-blocking ONE_TO_ALL.
    assert views["counter"].increment([1, 2]) == [6, 7]
    assert fused_group.counter_increment([1, 1]) == [7, 8]
    assert views["echo"].whoami() == 0
    greeting = views["echo"].greet("bob")
    assert isinstance(greeting, WorkerGroupFuture)
    assert greeting.get() == ["hi bob from rank 0", "hi bob from rank 1"]


def test_pool_that_cannot_fit_fails_clearly(ray_session):
    from verl.single_controller import RayResourcePool

    with pytest.raises(RuntimeError, match="not ready after 1.0 s"):
        RayResourcePool([3], num_cpus_per_worker=1.0, ready_timeout_s=1.0).get_placement_groups()


def test_ray_remote_of_a_worker_ignores_the_driver_environment(ray_session, monkeypatch):
    import ray

    monkeypatch.setenv("RANK", "5")  # would be invalid for a worker (WORLD_SIZE=1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert ray.remote(ShiftWorker) is not None
