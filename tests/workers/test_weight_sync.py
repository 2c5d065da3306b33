"""Streaming actor -> rollout weight sync: bounded memory, reaches the rollout, LoRA merged, no idle resync.

The sync (``verl/workers/weight_sync.py``) gathers one full tensor at a time. ``SyncTally`` counts the
bytes of the handed-over tensors that are still alive; the bound checked here is
``SYNC_BOUND x`` the largest parameter (the tensor being loaded plus the one the consumer still holds;
the tiny model's whole state is ~4x its largest tensor, so the old full-state-dict path exceeds it).
"""

from __future__ import annotations

import pytest
import torch

from tests.workers.test_fsdp_worker import fixed_batch
from tests.workers.test_fsdp_worker import worker_config as shared_worker_config
from verl.protocol import DataProto

SYNC_BOUND = 2  # peak alive bytes during a sync <= SYNC_BOUND x the largest tensor's bytes


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from verl.utils.models import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def worker_config(model_dir: str):
    """The streaming sync only runs for a rollout with weights of its own (``rollout.hf_weights=copy``)."""
    cfg = shared_worker_config(model_dir)
    cfg.rollout.hf_weights = "copy"
    return cfg


def prompts(tokenizer, **meta) -> DataProto:
    encoded = tokenizer(
        ["hello there", "what is two plus three?"], return_tensors="pt", padding=True, padding_side="left"
    )
    ids, mask = encoded.input_ids, encoded.attention_mask
    return DataProto.from_dict({"input_ids": ids, "attention_mask": mask}, {"uid": ["a", "b"]}, meta)


def perturb(group) -> None:
    """One actor update with random advantages (bumps the weights version)."""
    group.update_actor(fixed_batch(seed=3))


def peft_merged(model_dir: str, lora, peft_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Oracle: load the actor's full PEFT state into a plain PEFT model and let peft merge it."""
    from transformers import AutoModelForCausalLM

    from verl.workers.fsdp_utils import apply_lora

    model = apply_lora(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), lora)
    model.load_state_dict(peft_state)
    return model.merge_and_unload().state_dict()


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert sorted(k for k in got if "rotary" not in k) == sorted(k for k in want if "rotary" not in k)
    for key, value in want.items():
        if "rotary" not in key:
            assert torch.allclose(got[key], value, rtol=0, atol=atol), (key, (got[key] - value).abs().max())


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_two_rank_sync_streams_reaches_both_rollouts_and_skips_unchanged_weights(
    tiny_model, tmp_path, ray_session, lora_rank
):
    """2 Ray workers (gloo FSDP2 ranks), HF rollout: perturb -> sync -> generate reaches both ranks'
    rollouts (equal to the gathered actor, LoRA merged), with the memory bound; repeated generation
    (validation) and unchanged weights do not resync; update_actor and load_checkpoint do."""
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.workers.fsdp_worker import FSDPWorker

    cfg = worker_config(tiny_model)
    cfg.actor.model.lora.rank, cfg.actor.model.lora.alpha = lora_rank, 8
    cfg.actor.optim.lr = 5e-2
    pool = RayResourcePool([2], use_gpu=False, num_cpus_per_worker=0.5)
    group = RayWorkerGroup(pool, RayClassWithInitArgs(FSDPWorker, cfg, "actor_rollout"))
    try:
        group.init_model()
        from verl.workers.fsdp_utils import load_tokenizer

        tokenizer = load_tokenizer(tiny_model)
        group.generate_sequences(prompts(tokenizer, temperature=0.0))
        assert [s["syncs"] for s in group.weight_sync_stats()] == [1, 1]
        for _ in range(2):  # validation-style calls: the actor did not change
            group.generate_sequences(prompts(tokenizer, temperature=0.0))
        assert [s["syncs"] for s in group.weight_sync_stats()] == [1, 1]

        perturb(group)
        stale = group.rollout_state_dict()[0]
        actor_state = group.full_state_dict()[0]
        want = peft_merged(tiny_model, cfg.actor.model.lora, actor_state) if lora_rank else actor_state
        assert max((stale[k] - want[k]).abs().max() for k in want if "rotary" not in k) > 1e-4  # it moved
        out = group.generate_sequences(prompts(tokenizer, temperature=1.0, n=2))
        stats = group.weight_sync_stats()
        assert [s["syncs"] for s in stats] == [2, 2]
        for held in group.rollout_state_dict():  # both ranks
            assert_same_weights(held, want, atol=1e-6 if lora_rank else 0.0)
        # the rollout samples from the new weights: its log-probs are the updated actor's
        mask = out.batch["response_mask"].bool()
        recomputed = group.compute_log_prob(out).batch["old_log_probs"]
        assert torch.allclose(out.batch["rollout_log_probs"][mask], recomputed[mask], atol=1e-4)

        full_bytes = sum(v.numel() * v.element_size() for k, v in want.items() if "rotary" not in k)
        for s in stats:
            assert s["total_bytes"] >= full_bytes  # every weight went through the stream ...
            assert s["peak_bytes"] <= SYNC_BOUND * s["largest_bytes"] < full_bytes / 2, s  # ... a few at a time

        group.save_checkpoint(str(tmp_path / "ckpt"))
        group.generate_sequences(prompts(tokenizer, temperature=0.0))
        assert [s["syncs"] for s in group.weight_sync_stats()] == [2, 2]
        group.load_checkpoint(str(tmp_path / "ckpt"))
        group.generate_sequences(prompts(tokenizer, temperature=0.0))
        assert [s["syncs"] for s in group.weight_sync_stats()] == [3, 3]
    finally:
        group.shutdown()
        pool.remove()


def test_full_state_dict_path_breaks_the_bound_and_the_stream_loads_in_place(tiny_model):
    """The tally catches the old path (whole gathered state dict alive while loading), the stream stays
    under the bound, and the HF rollout's parameters keep their storage (copy_, no new allocation)."""
    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.workers import fsdp_utils
    from verl.workers.fsdp_worker import FSDPWorker
    from verl.workers.weight_sync import SyncTally

    group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, worker_config(tiny_model), "actor_rollout"))
    group.init_model()
    worker = group.workers[0]
    rollout = worker.rollout
    pointers = {k: v.data_ptr() for k, v in rollout.model.state_dict().items()}

    old = SyncTally()  # the old path: gather everything, then load
    state = fsdp_utils.full_state_dict(worker.actor_module)
    rollout.load_weights(old.wrap(state.items()))
    del state
    assert old.peak_bytes >= 0.99 * old.total_bytes > SYNC_BOUND * old.largest_bytes

    group.update_actor(fixed_batch(seed=4))
    group.generate_sequences(prompts(worker.tokenizer, temperature=0.0))
    stats = worker.weight_sync_stats()
    assert stats["syncs"] == 1 and stats["total_bytes"] == old.total_bytes
    assert stats["peak_bytes"] <= SYNC_BOUND * stats["largest_bytes"]
    assert {k: v.data_ptr() for k, v in rollout.model.state_dict().items()} == pointers
    assert_same_weights(worker.rollout_state_dict(), worker.full_state_dict())


def test_stream_casts_to_the_rollout_dtype_and_rejects_unknown_names(tiny_model):
    """The stream hands over tensors in the rollout's dtype; a name the rollout lacks is a one-line error
    after the stream was drained (other ranks may be waiting in its collectives)."""
    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.workers.fsdp_worker import FSDPWorker

    group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, worker_config(tiny_model), "actor_rollout"))
    group.init_model()
    worker = group.workers[0]
    dtypes = {t.dtype for _, t in worker._rollout_weights(torch.bfloat16) if t.is_floating_point()}
    assert dtypes == {torch.bfloat16}
    drained = []

    def renamed():
        for name, tensor in worker._rollout_weights():
            drained.append(name)
            yield ("bogus." + name if name.endswith("q_proj.weight") else name), tensor

    with pytest.raises(RuntimeError, match="rollout weight sync mismatch.*bogus"):
        worker.rollout.load_weights(renamed())
    assert len(drained) == len(worker.actor_module.state_dict())


def test_lora_stream_equals_the_full_state_dict_merge_and_peft(tiny_model):
    """LoRA actor after an update (B != 0): the per-module streamed merge == merging the gathered full
    state dict (``fsdp_utils.merged_lora_state_dict``, the export path) == peft's ``merge_and_unload``."""
    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.workers import fsdp_utils
    from verl.workers.fsdp_worker import FSDPWorker

    cfg = worker_config(tiny_model)
    cfg.actor.model.lora.rank, cfg.actor.model.lora.alpha = 4, 8
    cfg.actor.optim.lr = 5e-2
    group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg, "actor_rollout"))
    group.init_model()
    group.update_actor(fixed_batch(seed=6))
    worker = group.workers[0]
    streamed = {k: v.clone() for k, v in worker._rollout_weights()}
    full = fsdp_utils.full_state_dict(worker.actor_module)
    assert_same_weights(streamed, fsdp_utils.merged_lora_state_dict(worker.actor_module, full))
    oracle = peft_merged(tiny_model, cfg.actor.model.lora, {k: v.detach().clone() for k, v in full.items()})
    assert_same_weights(streamed, oracle, atol=1e-6)
    base = fsdp_utils.load_causal_lm(tiny_model, cfg.actor.model, torch.float32).state_dict()
    assert max(float((streamed[k] - base[k]).abs().max()) for k in base if "rotary" not in k) > 1e-4  # merged B@A
