"""FSDPWorker: trainer.seed reaches each worker's generators; ref and critic phases use the offload mechanism."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tests.engine_helpers import toy_overrides, write_toy_task
from tests.workers.test_fsdp_worker import fixed_batch
from verl.protocol import DataProto
from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
from verl.trainer.config import PPOConfig
from verl.utils.config import load_config
from verl.utils.dataset import PromptSampler
from verl.workers import fsdp_utils
from verl.workers.fsdp_worker import FSDPWorker


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from verl.utils.models import save_tiny_model_dir

    root = tmp_path_factory.mktemp("seed")
    model = save_tiny_model_dir(root / "model")
    train, reward = write_toy_task(root / "task")
    return model, train, reward, str(root / "out")


def run_config(task, *extra: str) -> PPOConfig:
    model, train, reward, out = task
    return load_config(PPOConfig, [*toy_overrides(model, train, reward, out), "worker.num_threads=1", *extra])


def first_samples(cfg: PPOConfig):
    """The first data batch, the worker's first global draws and its first sampled responses."""
    sampler = PromptSampler(32, cfg.data.rollout_batch_size, cfg.data.shuffle, cfg.data.seed)
    group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg.worker, "rollout"))
    group.init_model()
    draws = (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random())
    tokenizer = group.workers[0].tokenizer
    encoded = tokenizer(
        ["hello there", "what is two plus three?"], return_tensors="pt", padding=True, padding_side="left"
    )
    prompts = DataProto.from_dict(
        {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask},
        meta_info={"temperature": 1.0, "n": 2},
    )
    responses = group.generate_sequences(prompts).batch["responses"].tolist()
    return list(sampler.next_batch()), draws, responses


def test_same_trainer_seed_same_first_batch_and_samples_different_seed_different(task):
    a, b, c = (first_samples(run_config(task, f"trainer.seed={seed}")) for seed in (3, 3, 4))
    assert a == b
    for part in range(3):
        assert a[part] != c[part], ["batch", "worker draws", "responses"][part]


def test_ref_and_critic_phases_bring_their_offloaded_module_to_the_device_and_back(task, monkeypatch):
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(fsdp_utils, "move_module", lambda module, device: events.append(("params", str(device))))
    monkeypatch.setattr(fsdp_utils, "move_optimizer", lambda opt, device: events.append(("optimizer", str(device))))
    cfg = run_config(
        task,
        "worker.ref.offload.offload_params=true",
        "worker.critic.offload.offload_params=true",
        "worker.critic.offload.offload_optimizer=true",
    )
    cfg.worker.critic.global_batch_size_per_device = 8
    data = fixed_batch()

    ref = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg.worker, "ref"))
    ref.init_model()
    assert events == [("params", "cpu")]  # parked on the host after building
    events.clear()
    ref.compute_ref_log_prob(data)
    assert events == [("params", str(ref.workers[0].device)), ("params", "cpu")]

    critic = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg.worker, "critic"))
    events.clear()
    critic.init_model()
    assert events == [("params", "cpu")]
    device = str(critic.workers[0].device)
    events.clear()
    data.union(critic.compute_values(data))
    assert events == [("params", device), ("params", "cpu")]
    events.clear()
    data.batch["returns"] = torch.randn_like(data.batch["values"])
    critic.update_critic(data)
    assert events == [("params", device), ("optimizer", device), ("params", "cpu"), ("optimizer", "cpu")]
