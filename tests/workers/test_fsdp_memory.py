"""Where FSDP2 shards live: offload between phases, optimizer-state moves, on 2 gloo ranks.

CPU training never leaves the CPU, so the moves are checked on the mechanism: a move to the ``meta``
device (a real device change available without an accelerator) must carry every rank's *local shard*
and gradient over while keeping the same ``nn.Parameter`` objects. The freed accelerator memory itself
is checked by the GPU-only test at the end.
"""

from __future__ import annotations

import pytest
import torch

from tests.workers.two_ranks import run_on_ranks, run_on_two_ranks
from verl.utils.device import is_gpu_available


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from verl.utils.models import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", model_type="llama")


def sharded_tiny(model_path: str, backward: bool = True, cpu_offload: bool = False):
    """The tiny model, FSDP2-sharded over the current group, with gradients from one backward pass."""
    from verl.utils import device as dev
    from verl.workers import fsdp_utils
    from verl.workers.config import FSDPConfig, ModelConfig

    model = fsdp_utils.load_causal_lm(model_path, ModelConfig(model_path=model_path), torch.float32)
    model = fsdp_utils.fsdp_shard(model, FSDPConfig(cpu_offload=cpu_offload), mixed_precision=False)
    if backward:
        ids = torch.arange(4, 12, device=dev.get_torch_device()).reshape(2, 4)
        model(input_ids=ids, labels=ids).loss.backward()
    return model


def _move_to_meta(rank: int, model_path: str) -> dict:
    from verl.workers import fsdp_utils

    model = sharded_tiny(model_path)
    params = list(model.parameters())
    local_bytes = sum(p.to_local().numel() * p.element_size() for p in params)
    storages = [p.to_local().untyped_storage().data_ptr() for p in params]
    fsdp_utils.move_module(model, "cpu")  # already there: no copy
    same_storage = storages == [p.to_local().untyped_storage().data_ptr() for p in model.parameters()]
    fsdp_utils.move_module(model, "meta")
    moved = list(model.parameters())
    return {
        "same_objects": all(a is b for a, b in zip(params, moved)) and len(params) == len(moved),
        "same_storage_when_already_there": same_storage,
        "shards_on_meta": all(p.to_local().is_meta for p in moved),
        "grads_on_meta": all(p.grad is not None and p.grad.to_local().is_meta for p in moved),
        "local_bytes": (local_bytes, sum(p.to_local().numel() * p.element_size() for p in moved)),
    }


def test_move_module_moves_each_ranks_local_shard_and_grad(two_rank_checks):
    """Offload moves the DTensor's local shard (old code: a no-op on CPU; ``param.data =`` raises for meta)."""
    for result in (r["move"] for r in two_rank_checks):
        assert result["same_objects"], "the optimizer would lose its parameters"
        assert result["same_storage_when_already_there"], "a move to the current device must not copy"
        assert result["shards_on_meta"] and result["grads_on_meta"], result
        before, after = result["local_bytes"]
        assert before == after > 0


def _optimizer_move(rank: int, model_path: str) -> dict:
    from verl.utils import device as dev
    from verl.workers import fsdp_utils

    events: list[str] = []
    real_to, real_sync = torch.Tensor.to, dev.synchronize
    model = sharded_tiny(model_path)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer.step()
    dev.synchronize = lambda: events.append("sync")
    torch.Tensor.to = lambda self, *a, **k: (events.append("copy"), real_to(self, *a, **k))[1]
    try:
        fsdp_utils.move_optimizer(optimizer, "meta")
    finally:
        torch.Tensor.to, dev.synchronize = real_to, real_sync
    states = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return {"events": events, "all_on_meta": bool(states) and all(v.is_meta for v in states)}


def test_move_optimizer_moves_the_state_and_waits_for_the_copies(two_rank_checks):
    """Optimizer offload moves every state tensor, then synchronizes once, after the last copy."""
    for result in (r["optimizer"] for r in two_rank_checks):
        assert result["all_on_meta"]
        events = result["events"]
        assert events.count("sync") == 1 and events[-1] == "sync" and "copy" in events, events


def _offload_on_device(rank: int, model_path: str) -> dict:
    from verl.utils import device as dev
    from verl.workers import fsdp_utils

    model = sharded_tiny(model_path)
    ids = torch.arange(4, 12, device=dev.get_torch_device()).reshape(2, 4)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.cpu()
    held = sum(p.to_local().numel() * p.element_size() for p in model.parameters()) * 2  # + grads
    before = dev.memory_allocated()
    fsdp_utils.move_module(model, "cpu")
    after = dev.memory_allocated()
    on_host = all(p.to_local().device.type == "cpu" for p in model.parameters())
    fsdp_utils.move_module(model, dev.get_torch_device())
    with torch.no_grad():
        again = model(input_ids=ids).logits.cpu()
    return {"freed": before - after, "held": held, "on_host": on_host, "same_logits": torch.equal(logits, again)}


def _clip(rank: int, model_path: str, cpu_offload: bool) -> dict:
    import torch.distributed as dist

    from verl.utils import device as dev
    from verl.workers.actor.dp_actor import clip_and_step

    model = sharded_tiny(model_path, cpu_offload=cpu_offload)
    params = list(model.parameters())
    grads = [p.grad.full_tensor().cpu() for p in params]
    weights = [p.full_tensor().cpu() for p in params]
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    calls, real_all_reduce = [], dist.all_reduce

    def spy(tensor, *args, **kwargs):
        calls.append((str(tensor.device), tensor.numel()))
        return real_all_reduce(tensor, *args, **kwargs)

    grads_on = {str(p.grad.to_local().device) for p in params}
    dist.all_reduce = spy
    try:
        returned, finite = clip_and_step(model, torch.optim.SGD(params, lr=1.0), max_grad_norm=norm / 4)
    finally:
        dist.all_reduce = real_all_reduce
    steps = [w - p.full_tensor().cpu() for w, p in zip(weights, model.parameters())]  # lr 1: the clipped grads
    scaled = all(torch.allclose(s, g / 4, rtol=1e-4, atol=1e-7) for s, g in zip(steps, grads))
    return dict(
        norm=norm,
        returned=returned,
        finite=finite,
        scaled=scaled,
        calls=calls,
        grads_on=grads_on,
        device=str(dev.get_torch_device()),
    )


def test_grad_clip_is_one_scalar_all_reduce_on_the_backends_device(two_rank_checks):
    """Clipping all-reduces one scalar (the squared local-shard norm) on the rank's device: NCCL can't take host
    tensors, and with fsdp.cpu_offload the grads live on the host. Old code: per-DTensor reductions instead."""
    for result in (r["clip"] for r in two_rank_checks):
        assert result["finite"] and result["returned"] == pytest.approx(result["norm"], rel=1e-5), result
        assert result["scaled"], "the applied update must be the gradient scaled to max_grad_norm"
        assert result["calls"] == [(result["device"], 1)], result["calls"]


def _cpu_checks(rank: int, model_path: str) -> dict:
    """Every CPU check of this file in one 2-rank run (each process start costs ~15 s)."""
    return {
        "move": _move_to_meta(rank, model_path),
        "optimizer": _optimizer_move(rank, model_path),
        "clip": _clip(rank, model_path, cpu_offload=False),
    }


@pytest.fixture(scope="module")
def two_rank_checks(tiny_llama) -> list[dict]:
    return run_on_two_ranks(_cpu_checks, tiny_llama)


@pytest.mark.gpu
@pytest.mark.skipif(not is_gpu_available(), reason="only a GPU run has host-resident grads under an NCCL backend")
def test_grad_clip_with_cpu_offloaded_grads(tiny_llama):
    """GPU only: with fsdp.cpu_offload the grads sit on the host while the backend is NCCL."""
    from verl.utils import device as dev

    world = min(2, dev.device_count())
    for result in run_on_ranks(_clip, tiny_llama, True, world_size=world, device="accelerator"):
        assert result["grads_on"] == {"cpu"}, result
        assert result["finite"] and result["returned"] == pytest.approx(result["norm"], rel=1e-5), result
        assert result["scaled"] and result["calls"] == [(result["device"], 1)] * (world > 1), result


@pytest.mark.gpu
@pytest.mark.skipif(not is_gpu_available(), reason="only a GPU shows offload freeing device memory")
def test_offload_frees_accelerator_memory_and_reload_restores_the_model(tiny_llama):
    """GPU only: only there does an offload free device memory (CPU training never leaves the host)."""
    (result,) = run_on_ranks(_offload_on_device, tiny_llama, world_size=1, device="accelerator")
    assert result["on_host"] and result["same_logits"], result
    assert result["freed"] >= 0.9 * result["held"], result


def test_offloaded_actor_trains_like_a_resident_one(tiny_llama):
    """offload_params + offload_optimizer route every phase through move_module/move_optimizer; same numbers."""
    from tests.workers.test_fsdp_worker import fixed_batch, worker_config
    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.workers.fsdp_worker import FSDPWorker

    states = []
    for offload in (False, True):
        cfg = worker_config(tiny_llama)
        cfg.actor.offload.offload_params = cfg.actor.offload.offload_optimizer = offload
        group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg, "actor"))
        group.init_model()
        batch = fixed_batch(seed=11)
        batch.batch["old_log_probs"] = group.compute_log_prob(batch).batch["old_log_probs"]
        for _ in range(2):
            group.update_actor(batch)
        states.append(group.full_state_dict()[0])
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key


def test_grad_clip_on_one_rank_is_bit_identical_to_torch(tiny_llama):
    """On one rank the clipping follows torch.nn.utils.clip_grad_norm_ exactly (training curves don't move)."""
    from tests.workers.test_fsdp_worker import worker_config
    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.workers.actor.dp_actor import clip_grad_norm
    from verl.workers.fsdp_worker import FSDPWorker

    group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, worker_config(tiny_llama), "actor"))
    group.init_model()
    model = group.workers[0].actor_module
    ids = torch.arange(4, 40).reshape(4, 9)
    model(input_ids=ids, labels=ids).loss.backward()
    params = list(model.parameters())
    grads = [p.grad.to_local().clone() for p in params]
    expected = torch.nn.utils.clip_grad_norm_(params, max_norm=0.5).full_tensor()
    clipped = [p.grad.to_local().clone() for p in params]
    for param, grad in zip(params, grads):
        param.grad.to_local().copy_(grad)
    assert clip_grad_norm(params, max_norm=0.5) == float(expected) > 0.5
    assert all(torch.equal(p.grad.to_local(), c) for p, c in zip(params, clipped))
