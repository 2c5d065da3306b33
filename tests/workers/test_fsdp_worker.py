"""FSDP2 worker on 2 Ray workers (gloo): sharding, gathered weights, exact data-parallel updates, learning."""

from __future__ import annotations

import pytest
import torch

from tests.engine_helpers import read_metrics, toy_overrides, write_toy_task
from verl.protocol import DataProto
from verl.utils.config import build_dataclass, deep_post_init, load_config
from verl.workers.config import WorkerConfig


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from verl.utils.models import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def worker_config(model_dir: str) -> WorkerConfig:
    cfg = build_dataclass(
        WorkerConfig,
        {
            "actor": {
                "model": {"model_path": model_dir},
                "optim": {"lr": 1e-2, "weight_decay": 0.0},
                "micro_batch_size_per_device_for_update": 2,
                "micro_batch_size_per_device_for_experience": 4,
            },
            "num_threads": 1,
        },
    )
    deep_post_init(cfg)
    cfg.actor.global_batch_size_per_device = -1  # one mini-batch per call
    cfg.actor.optim.training_steps = 10
    cfg.rollout.response_length, cfg.rollout.prompt_length = 6, 8
    return cfg


def fixed_batch(seed: int = 0, rows: int = 8, prompt: int = 5, response: int = 6) -> DataProto:
    """Random ids with uneven response lengths (so token-count-correct averaging matters)."""
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(4, 500, (rows, prompt), generator=g)
    responses = torch.randint(4, 500, (rows, response), generator=g)
    lengths = torch.tensor([1, 6, 2, 5, 3, 6, 1, 4])[:rows]
    response_mask = (torch.arange(response)[None, :] < lengths[:, None]).long()
    attention_mask = torch.cat([torch.ones(rows, prompt, dtype=torch.long), response_mask], 1)
    tensors = {
        "input_ids": torch.cat([prompts, responses], 1),
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
        "responses": responses,
        "response_mask": response_mask,
        "advantages": torch.randn(rows, 1, generator=g).expand(-1, response).contiguous(),
    }
    return DataProto.from_dict(tensors, meta_info={"temperature": 1.0})


def test_two_ray_workers_shard_gather_and_update_like_one_process(tiny_model, ray_session):
    from transformers import AutoModelForCausalLM

    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.workers.fsdp_worker import FSDPWorker

    cfg = worker_config(tiny_model)
    pool = RayResourcePool([2], use_gpu=False, num_cpus_per_worker=0.5)
    ray_group = RayWorkerGroup(pool, RayClassWithInitArgs(FSDPWorker, cfg, "actor_rollout_ref"))
    try:
        ray_group.init_model()
        # each rank really holds about half of the parameters
        (local0, full0), (local1, full1) = ray_group.param_numel()
        assert full0 == full1 and local0 + local1 == full0
        assert abs(local0 / full0 - 0.5) < 0.05 and abs(local1 / full1 - 0.5) < 0.05
        # the gathered state dict equals a single-process copy of the same weights
        reference = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).state_dict()
        gathered = ray_group.full_state_dict()[0]
        for key, value in reference.items():
            assert torch.equal(gathered[key], value), key

        single = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg, "actor"))
        single.init_model()
        batch = fixed_batch()
        for group in (ray_group, single):
            old = group.compute_log_prob(batch).batch["old_log_probs"]
            batch.batch["old_log_probs"] = old
        ref = ray_group.compute_ref_log_prob(batch).batch["ref_log_probs"]
        mask = batch.batch["response_mask"].bool()
        assert torch.allclose(ref[mask], batch.batch["old_log_probs"][mask], atol=1e-5)
        for _ in range(2):  # two optimizer steps on the same data: 2 FSDP ranks == 1 process
            ray_metrics = ray_group.update_actor(batch)
            single_metrics = single.update_actor(batch)
        assert ray_metrics[0]["actor/grad_norm"] == pytest.approx(single_metrics[0]["actor/grad_norm"], rel=1e-4)
        after_ray = ray_group.full_state_dict()[0]
        after_single = single.full_state_dict()[0]
        changed = 0
        for key, value in after_single.items():
            assert torch.allclose(after_ray[key], value, atol=1e-4), (
                key,
                (after_ray[key] - value).abs().max(),
                (value - reference[key]).abs().max(),
            )
            changed += int(not torch.equal(value, reference[key]))
        assert changed > len(after_single) // 2
    finally:
        ray_group.shutdown()
        pool.remove()


def test_grpo_on_two_ray_fsdp_workers_raises_reward(tiny_model, tmp_path, ray_session):
    from verl.trainer.config import PPOConfig
    from verl.trainer.main import run

    train, reward = write_toy_task(tmp_path / "task", rows=160)
    overrides = {
        "trainer.backend": "ray",
        "trainer.n_workers": 2,
        "trainer.cpus_per_worker": 0.5,
        "trainer.max_steps": 20,
        "trainer.save_freq": -2,
        "worker.num_threads": 1,
    }
    run(load_config(PPOConfig, toy_overrides(tiny_model, train, reward, str(tmp_path / "out"), **overrides)))
    rewards = [m["reward/overall"] for m in read_metrics(tmp_path / "out" / "rebo")]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert len(rewards) == 20 and last > 2 * first and last > 0.2, rewards


def test_on_policy_update_without_old_log_probs_equals_recomputed(tiny_model):
    """Skipping the old-log-prob pass (ratio of the update's own detached log-probs) changes nothing."""
    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.workers.fsdp_worker import FSDPWorker

    cfg = worker_config(tiny_model)
    results = []
    for recompute in (True, False):
        group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg, "actor"))
        group.init_model()
        batch = fixed_batch(seed=3)
        if recompute:
            batch.batch["old_log_probs"] = group.compute_log_prob(batch).batch["old_log_probs"]
        metrics = group.update_actor(batch)[0]
        results.append((group.full_state_dict()[0], metrics["actor/pg_loss"]))
    (recomputed, loss_a), (on_policy, loss_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for key, value in recomputed.items():
        assert torch.allclose(value, on_policy[key], atol=1e-6), key


def test_lora_reference_is_the_base_model_with_adapter_disabled(tiny_model):
    """LoRA actor: ref log-probs (adapter off) == the base model's, the actor moves, export merges."""
    from transformers import AutoModelForCausalLM

    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.utils.torch_functional import logprobs_from_logits
    from verl.workers.actor.dp_actor import response_logits
    from verl.workers.fsdp_worker import FSDPWorker

    cfg = worker_config(tiny_model)
    cfg.actor.model.lora.rank, cfg.actor.model.lora.alpha = 4, 8
    cfg.actor.optim.lr = 5e-2
    group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg, "actor_rollout_ref"))
    group.init_model()
    batch = fixed_batch(seed=5)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        base_lp = logprobs_from_logits(response_logits(base, batch.batch.to_dict()), batch.batch["responses"])
    for _ in range(3):
        group.update_actor(batch)
    mask = batch.batch["response_mask"].bool()
    ref = group.compute_ref_log_prob(batch).batch["ref_log_probs"]
    actor = group.compute_log_prob(batch).batch["old_log_probs"]
    assert torch.allclose(ref[mask], base_lp[mask], atol=1e-5)
    assert (actor[mask] - base_lp[mask]).abs().max() > 1e-3  # the adapter really changed the policy
    worker = group.workers[0]
    assert sum(p.numel() for p in worker.actor_module.parameters() if p.requires_grad) < 0.2 * sum(
        p.numel() for p in worker.actor_module.parameters()
    )
    # the merged weights reproduce the adapted policy in a plain model (what the rollout and the export use)
    merged = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    merged.load_state_dict(worker._rollout_state_dict())
    with torch.no_grad():
        merged_lp = logprobs_from_logits(response_logits(merged, batch.batch.to_dict()), batch.batch["responses"])
    assert torch.allclose(merged_lp[mask], actor[mask], atol=1e-4)


def test_dynamic_batching_gives_the_same_log_probs_and_update(tiny_model):
    """Token-budget micro-batches (and padding trimming) change the schedule, not the numbers."""
    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.workers.fsdp_worker import FSDPWorker

    outputs = []
    for dynamic in (False, True):
        cfg = worker_config(tiny_model)
        cfg.actor.use_dynamic_bsz, cfg.actor.max_token_len_per_device = dynamic, 24
        group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg, "actor"))
        group.init_model()
        batch = fixed_batch(seed=7)
        log_probs = group.compute_log_prob(batch).batch["old_log_probs"]
        batch.batch["old_log_probs"] = log_probs
        group.update_actor(batch)
        outputs.append((log_probs, group.full_state_dict()[0]))
    (lp_fixed, sd_fixed), (lp_dynamic, sd_dynamic) = outputs
    mask = fixed_batch(seed=7).batch["response_mask"].bool()  # values past a row's end are not defined
    assert torch.allclose(lp_fixed[mask], lp_dynamic[mask], atol=1e-5)
    for key, value in sd_fixed.items():
        assert torch.allclose(value, sd_dynamic[key], atol=1e-5), key


@pytest.mark.parametrize("hf_weights", ["shared", "copy"])
def test_rollout_log_probs_agree_with_actor_and_follow_weight_sync(tiny_model, hf_weights):
    """HF rollout: sampled tokens' log-probs == the FSDP actor's recomputed ones, before and after an update;
    a shared rollout is the actor's module (never synced) and leaves it sharded after generating."""
    from torch.distributed.tensor import DTensor

    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.workers.fsdp_worker import FSDPWorker

    cfg = worker_config(tiny_model)
    cfg.rollout.hf_weights = hf_weights
    group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg, "actor_rollout"))
    group.init_model()
    tokenizer = group.workers[0].tokenizer
    encoded = tokenizer(
        ["hello there", "what is two plus three?"], return_tensors="pt", padding=True, padding_side="left"
    )
    prompts = DataProto.from_dict(
        {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask},
        {"uid": ["a", "b"]},
        {"temperature": 1.0, "n": 3},
    )
    for _ in range(2):
        out = group.generate_sequences(prompts)
        assert len(out) == 6 and list(out.non_tensor_batch["uid"]) == ["a"] * 3 + ["b"] * 3
        mask = out.batch["response_mask"].bool()
        recomputed = group.compute_log_prob(out).batch["old_log_probs"]
        assert torch.allclose(out.batch["rollout_log_probs"][mask], recomputed[mask], atol=1e-4)
        out.batch["advantages"] = torch.randn(len(out), 1).expand_as(recomputed).contiguous()
        group.update_actor(out)  # the next rollout must sample from the updated weights
    worker = group.workers[0]
    assert (worker.rollout.model is worker.actor_module) == (hf_weights == "shared")
    assert worker.weight_sync_stats()["syncs"] == (0 if hf_weights == "shared" else 2)
    assert all(isinstance(p, DTensor) for p in worker.actor_module.parameters())  # resharded after generating
