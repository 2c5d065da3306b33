"""Dispatch / execute / collect semantics, checked without Ray on simulated ranks in this process."""

import os
import socket

import numpy as np
import pytest
import torch

from tests.single_controller.light_workers import CounterWorker
from tests.single_controller.toy_workers import ShiftWorker, ToyWorker, square_plus_rank_free
from verl.protocol import DataProto
from verl.single_controller import (
    ClassWithInitArgs,
    Dispatch,
    InProcessWorkerGroup,
    Worker,
    WorkerGroupFuture,
    fuse_worker_classes,
    register,
)
from verl.single_controller.base import REGISTER_ATTR, find_free_port, registered_methods


def make_data(n: int) -> DataProto:
    return DataProto.from_dict(
        {"x": torch.arange(n, dtype=torch.float32) * 1.5}, {"name": [f"row{i}" for i in range(n)]}
    )


def assert_same_rows(actual: DataProto, expected: DataProto, keys=("y",), non_tensor_keys=("tag",)) -> None:
    assert len(actual) == len(expected)
    for key in keys:
        torch.testing.assert_close(actual.batch[key], expected.batch[key])
    for key in non_tensor_keys:
        assert list(actual.non_tensor_batch[key]) == list(expected.non_tensor_batch[key])


@pytest.fixture
def group3(restore_dist_env):
    return InProcessWorkerGroup(ClassWithInitArgs(ShiftWorker, scale=2.0), world_size=3)


# ---------------------------------------------------------------- register / Worker


def test_register_records_mode_and_blocking():
    class W(Worker):
        @register(dispatch_mode=Dispatch.RANK_ZERO, blocking=False)
        def a(self):
            return 1

        @register
        def b(self):
            return 2

        def plain(self):
            return 3

    infos = registered_methods(W)
    assert set(infos) == {"a", "b"}
    assert (infos["a"].dispatch_mode, infos["a"].blocking) == (Dispatch.RANK_ZERO, False)
    assert (infos["b"].dispatch_mode, infos["b"].blocking) == (Dispatch.ALL_TO_ALL, True)
    assert W().a() == 1  # the decorated method still works as a plain method
    assert set(registered_methods(ShiftWorker)) >= {"compute", "shift", "describe"}  # inherited ones too
    with pytest.raises(TypeError, match="Dispatch member"):
        register("one_to_all")


def test_worker_reads_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    worker = ToyWorker()
    assert (worker.rank, worker.world_size, worker.local_rank) == (0, 1, 0)

    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")

    class NoSuperInit(Worker):
        def __init__(self):  # forgets super().__init__(): the rank is still known
            self.value = 1

    worker = NoSuperInit()
    assert (worker.rank, worker.world_size, worker.local_rank) == (2, 4, 1)

    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4 is outside WORLD_SIZE=4"):
        ToyWorker()
    monkeypatch.setenv("RANK", "zero")
    with pytest.raises(ValueError, match="RANK='zero' is not an integer"):
        ToyWorker()


def test_get_master_addr_port(monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="rank 1: MASTER_ADDR / MASTER_PORT are not set"):
        ToyWorker().get_master_addr_port()

    monkeypatch.setenv("RANK", "0")
    addr, port = ToyWorker().get_master_addr_port()  # rank 0 chooses and records them
    assert addr == "127.0.0.1" and (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == (addr, str(port))
    monkeypatch.setenv("MASTER_PORT", "12345")
    assert ToyWorker().get_master_addr_port() == ("127.0.0.1", 12345)


def test_find_free_port_is_bindable():
    port = find_free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


# ---------------------------------------------------------------- dispatch modes


def test_one_to_all_and_rank_zero(group3):
    described = group3.describe()
    assert [d["rank"] for d in described] == [0, 1, 2]
    assert all(d["world_size"] == 3 and d["scale"] == 2.0 for d in described)
    assert group3.whoami() == 0


def test_all_to_all_splits_lists(group3):
    assert group3.add_to_rank([1, 2, 3], extra=[10, 20, 30]) == [0 + 1 + 10, 100 + 2 + 20, 200 + 3 + 30]
    with pytest.raises(ValueError, match="add_to_rank \\(ALL_TO_ALL\\): argument 0 must be a list of 3 items"):
        group3.add_to_rank([1, 2])
    with pytest.raises(ValueError, match="extra must be a list of 3 items"):
        group3.add_to_rank([1, 2, 3], extra=5)


@pytest.mark.parametrize("n", [7, 6, 1])
def test_dp_compute_proto_pads_chunks_and_unpads(group3, n):
    data = make_data(n)
    out = group3.compute(data, offset=0.5)
    assert_same_rows(out, square_plus_rank_free(data, 0.5))
    # Rows are padded to a multiple of 3 and split into consecutive equal chunks, one per rank.
    chunk = -(-n // 3)
    assert out.batch["done_by"].tolist() == [i // chunk for i in range(n)]
    assert len(data) == n  # the caller's DataProto is not modified


def test_dp_compute_proto_keyword_argument_and_several_rows_per_input(group3):
    data = make_data(5)
    assert_same_rows(group3.compute(data=data, offset=1.0), square_plus_rank_free(data, 1.0))
    expanded = group3.expand(data, n=2)
    reference = data.repeat(2, interleave=True)
    assert_same_rows(expanded, reference, keys=("x",), non_tensor_keys=("name",))


def test_dp_compute_proto_errors(group3):
    with pytest.raises(TypeError, match="bad_output: rank 0 returned dict"):
        group3.bad_output(make_data(3))
    with pytest.raises(ValueError, match="different lengths \\[3, 4\\]"):
        group3.compute(make_data(3), offset=make_data(4))


def test_dp_compute_metric_returns_per_rank_outputs(group3):
    data = make_data(6)
    metrics = group3.metrics(data)
    x = data.batch["x"]
    expected = [
        {"rank": r, "rows": 2, "sum": float(x[2 * r : 2 * r + 2].sum()), "names": [f"row{2 * r}", f"row{2 * r + 1}"]}
        for r in range(3)
    ]
    assert metrics == expected
    with pytest.raises(ValueError, match="metrics: DataProto of 7 rows does not divide into 3 ranks"):
        group3.metrics(make_data(7))


def test_non_blocking_future_and_future_as_argument(group3):
    future = group3.slow_scaled_sum([1.0, 2.0])
    assert isinstance(future, WorkerGroupFuture)
    assert future.get() == [2.0 * 3.0 + rank for rank in range(3)]

    data = make_data(5)
    shifted = group3.shift(data, by=10.0)
    assert isinstance(shifted, WorkerGroupFuture)
    expected_input = DataProto.from_dict({"x": data.batch["x"] + 10.0}, {"name": data.non_tensor_batch["name"]})
    assert_same_rows(group3.compute(shifted, offset=0.0), square_plus_rank_free(expected_input, 0.0))


def test_name_clash_with_group_attribute_is_rejected(restore_dist_env):
    class Clashing(Worker):
        @register(Dispatch.ONE_TO_ALL)
        def spawn(self):
            return 0

    with pytest.raises(ValueError, match="Clashing.spawn clashes"):
        InProcessWorkerGroup(ClassWithInitArgs(Clashing))


# ---------------------------------------------------------------- colocation (fused classes)


def test_fused_worker_class_exposes_role_methods(restore_dist_env):
    fused = fuse_worker_classes(
        {"toy": ClassWithInitArgs(ToyWorker, scale=3.0), "counter": ClassWithInitArgs(CounterWorker, start=5)}
    )
    for role, cls in (("toy", ToyWorker), ("counter", CounterWorker)):
        for name, info in registered_methods(cls).items():
            assert getattr(getattr(fused.cls, f"{role}_{name}"), REGISTER_ATTR) == info

    group = InProcessWorkerGroup(fused, world_size=2)
    views = group.spawn({"toy", "counter"})
    assert [d["scale"] for d in views["toy"].describe()] == [3.0, 3.0]
    assert views["counter"].increment([1, 2]) == [6, 7]
    assert group.counter_increment([10, 10]) == [16, 17]  # the fused group calls <role>_<method> directly
    data = make_data(3)
    assert_same_rows(views["toy"].compute(data, offset=0.0), square_plus_rank_free(data, 0.0))

    with pytest.raises(KeyError, match="unknown roles \\['critic'\\]"):
        group.spawn({"critic"})
    with pytest.raises(TypeError, match="not a fused worker class"):
        InProcessWorkerGroup(ClassWithInitArgs(CounterWorker)).spawn({"counter"})


def test_fuse_rejects_bad_role_names():
    with pytest.raises(ValueError, match="role name 'actor-rollout' is not a Python identifier"):
        fuse_worker_classes({"actor-rollout": ClassWithInitArgs(ToyWorker)})

    class A(Worker):
        @register(Dispatch.ONE_TO_ALL)
        def rollout_step(self):
            return 0

    class B(Worker):
        @register(Dispatch.ONE_TO_ALL)
        def step(self):
            return 0

    with pytest.raises(ValueError, match="'actor_rollout_step' is produced by two roles"):
        fuse_worker_classes({"actor": ClassWithInitArgs(A), "actor_rollout": ClassWithInitArgs(B)})


def test_results_do_not_depend_on_world_size(restore_dist_env):
    """The same batch through 1, 2 and 3 simulated ranks gives the same concatenated output."""
    data = make_data(7)
    outputs = [
        InProcessWorkerGroup(ClassWithInitArgs(ToyWorker), world_size=ws).compute(data, offset=2.0) for ws in (1, 2, 3)
    ]
    for out in outputs[1:]:
        assert_same_rows(out, outputs[0])
    np.testing.assert_array_equal(outputs[0].non_tensor_batch["tag"], [f"row{i}!" for i in range(7)])
