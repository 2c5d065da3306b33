"""DataParallelActor on one process: log-prob memory, loss aggregation independent of the micro-batch split,
and losses logged per optimizer step."""

from __future__ import annotations

import pytest
import torch

from tests.utils.test_torch_functional import fp32_tensor_sizes
from tests.workers.test_fsdp_worker import fixed_batch
from verl.utils import torch_functional
from verl.workers.actor import dp_actor
from verl.workers.actor.dp_actor import DataParallelActor
from verl.workers.config import ActorConfig


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from verl.utils.models import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def load(model_dir: str, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)


def actor(module, **fields) -> DataParallelActor:
    cfg = ActorConfig(**fields)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.0)  # lr 0: the weights stay put between calls
    return DataParallelActor(cfg, module, optimizer)


def test_bf16_log_probs_make_no_full_fp32_logits_tensor(model_dir, monkeypatch):
    """(bs, R, V) logits stay bf16; each chunk is upcast on its own (log-probs, entropy, backward)."""
    module = load(model_dir, torch.bfloat16)
    vocab = module.config.vocab_size
    data = fixed_batch(rows=4)
    bs, length = data.batch["responses"].shape
    monkeypatch.setattr(torch_functional, "_CHUNK_ELEMENTS", 2 * vocab)  # two rows per chunk
    worker = actor(module, micro_batch_size_per_device_for_update=4, micro_batch_size_per_device_for_experience=4)
    worker.config.entropy_coeff = 0.01
    data.meta_info["temperature"] = 0.7
    sizes = fp32_tensor_sizes(lambda: worker.compute_log_prob(data))
    sizes += fp32_tensor_sizes(lambda: worker.update_policy(data))
    assert max(sizes) < bs * length * vocab, (
        f"an fp32 tensor of {max(sizes)} elements (full logits: {bs * length * vocab})"
    )

    log_probs = worker.compute_log_prob(data)
    with torch.no_grad():
        logits = dp_actor.response_logits(module.eval(), {k: v for k, v in data.batch.items()})
        ref = torch.log_softmax(logits.float() / 0.7, -1).gather(-1, data.batch["responses"].unsqueeze(-1))
    torch.testing.assert_close(log_probs, ref.squeeze(-1), rtol=1e-6, atol=1e-6)


def on_policy_token_loss_sum(data) -> float:
    """With old log-probs = the current ones the ratio is 1, so each token's PPO loss is -A."""
    mask = data.batch["response_mask"].float()
    return float(-(data.batch["advantages"] * mask).sum())


@pytest.mark.parametrize("max_response_length", [-1, 10])
def test_seq_mean_token_sum_norm_is_independent_of_the_micro_batch_split(model_dir, monkeypatch, max_response_length):
    """Sum(m*l) / (B * L) with a constant L: micro-batches trimmed to their own width must not change it."""
    results = {}
    for micro in (1, 2, 8):
        cfg = ActorConfig(micro_batch_size_per_device_for_update=micro, loss_agg_mode="seq-mean-token-sum-norm")
        cfg.max_response_length = max_response_length
        worker = actor(load(model_dir), micro_batch_size_per_device_for_update=micro)
        worker.config = cfg
        grads: list = []
        original = dp_actor.clip_and_step

        def recording(module, optimizer, max_grad_norm, scheduler=None, _grads=grads, _original=original):
            _grads.append({n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None})
            return _original(module, optimizer, max_grad_norm, scheduler)

        monkeypatch.setattr(dp_actor, "clip_and_step", recording)
        results[micro] = (worker.update_policy(fixed_batch())["actor/pg_loss"], grads[0])
        monkeypatch.setattr(dp_actor, "clip_and_step", original)
    data = fixed_batch()
    length = max_response_length if max_response_length > 0 else data.batch["responses"].shape[1]
    expected = on_policy_token_loss_sum(data) / (len(data) * length)
    for micro, (losses, grads) in results.items():
        for name, grad in grads.items():
            torch.testing.assert_close(grad, results[8][1][name], rtol=1e-4, atol=1e-6, msg=f"{name}, micro {micro}")
        assert sum(losses) == pytest.approx(expected, rel=1e-5), micro
        assert len(losses) == 1, micro


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_pg_loss_is_logged_once_per_optimizer_step_as_the_batch_loss(model_dir, mode):
    """Gradient accumulation over 8 micro-batches logs the mini-batch's loss, not the mean of its 8 shares."""
    data = fixed_batch()
    mask = data.batch["response_mask"].float()
    if mode == "token-mean":
        expected = on_policy_token_loss_sum(data) / float(mask.sum())
    else:
        expected = float((-(data.batch["advantages"] * mask).sum(-1) / mask.sum(-1)).mean())
    for micro in (1, 3, 8):
        worker = actor(load(model_dir), micro_batch_size_per_device_for_update=micro, loss_agg_mode=mode)
        worker.config.global_batch_size_per_device = 4  # two optimizer steps (mini-batches of 4 rows)
        metrics = worker.update_policy(data)
        first, second = data.split(4)
        halves = []
        for half in (first, second):
            m = half.batch["response_mask"].float()
            adv = half.batch["advantages"]
            if mode == "token-mean":
                halves.append(float(-(adv * m).sum() / m.sum()))
            else:
                halves.append(float((-(adv * m).sum(-1) / m.sum(-1)).mean()))
        assert metrics["actor/pg_loss"] == pytest.approx(halves, rel=1e-5), micro
        assert len(metrics["actor/grad_norm"]) == 2
    worker = actor(load(model_dir), micro_batch_size_per_device_for_update=1, loss_agg_mode=mode)
    assert worker.update_policy(data)["actor/pg_loss"] == pytest.approx([expected], rel=1e-5)
