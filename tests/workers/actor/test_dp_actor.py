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
