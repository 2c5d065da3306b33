"""The data-parallel critic: padding trimming changes nothing; the value regression moves towards the returns."""

import pytest
import torch

from verl.protocol import DataProto
from verl.utils.models import save_tiny_model_dir
from verl.workers.config import CriticConfig
from verl.workers.critic import DataParallelCritic, response_values


def value_model(tmp_path):
    """The critic's value model as the worker loads it (tiny random body, scalar head, no dropout)."""
    from verl.workers.config import ModelConfig
    from verl.workers.fsdp_utils import load_causal_lm

    folder = save_tiny_model_dir(tmp_path / "tiny")
    torch.manual_seed(0)
    return load_causal_lm(folder, ModelConfig(model_path=folder), torch.float32, value_head=True)


def padded_batch(prompt_len: int = 7, response_len: int = 6) -> DataProto:
    """Left-padded prompts, right-padded responses, with extra all-padding columns on both sides."""
    torch.manual_seed(1)
    bs, width = 3, prompt_len + response_len
    input_ids = torch.randint(5, 100, (bs, width))
    attention = torch.zeros(bs, width, dtype=torch.long)
    for row, (p, r) in enumerate([(3, 2), (4, 3), (2, 1)]):  # real prompt / response tokens per row
        attention[row, prompt_len - p : prompt_len + r] = 1
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    response_mask = attention[:, prompt_len:]
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "position_ids": position_ids,
        "responses": input_ids[:, prompt_len:],
        "response_mask": response_mask,
        "returns": torch.randn(bs, response_len) * response_mask,
    }
    return DataProto.from_dict(batch)


def test_trimmed_values_equal_the_full_width_forward(tmp_path):
    module = value_model(tmp_path)
    data = padded_batch()
    critic = DataParallelCritic(CriticConfig(micro_batch_size_per_device_for_experience=2), module, None, None)
    values = critic.compute_values(data)
    with torch.no_grad():
        full = response_values(module.eval(), dict(data.batch.items())) * data.batch["response_mask"]
    assert values.shape == full.shape == (3, 6)
    torch.testing.assert_close(values, full, atol=1e-5, rtol=1e-5)


def test_value_loss_falls_over_updates(tmp_path):
    module = value_model(tmp_path)
    data = padded_batch()
    cfg = CriticConfig(micro_batch_size_per_device_for_update=2, cliprange_value=10.0)
    cfg.global_batch_size_per_device = 3
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    critic = DataParallelCritic(cfg, module, optimizer, None)
    mask = data.batch["response_mask"].float()

    def error() -> float:
        values = critic.compute_values(data)
        return float((((values - data.batch["returns"]) ** 2) * mask).sum() / mask.sum())

    before = error()
    for _ in range(5):
        data.batch["values"] = critic.compute_values(data)
        metrics = critic.update_critic(data)
    assert error() < 0.5 * before
    assert len(metrics["critic/grad_norm"]) == 1


def test_loaded_value_model_has_no_dropout(tmp_path):
    """The critic's value head must train deterministically: no dropout anywhere (HF defaults it to 0.1)."""
    module = value_model(tmp_path).train()
    assert [m.p for m in module.modules() if isinstance(m, torch.nn.Dropout) and m.p != 0] == []
    batch = dict(padded_batch().batch.items())
    with torch.no_grad():
        first, second = response_values(module, batch), response_values(module, batch)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_vf_loss_is_logged_once_per_optimizer_step_as_the_batch_loss(tmp_path):
    """Accumulating over 3 micro-batches logs the mini-batch's value loss, not the mean of the 3 shares."""
    data = padded_batch()
    mask = data.batch["response_mask"].float()
    logged = {}
    for micro in (1, 3):
        module = value_model(tmp_path / str(micro))
        cfg = CriticConfig(micro_batch_size_per_device_for_update=micro, cliprange_value=10.0)
        cfg.global_batch_size_per_device = 3
        critic = DataParallelCritic(cfg, module, torch.optim.SGD(module.parameters(), lr=0.0), None)
        data.batch["values"] = critic.compute_values(data)
        logged[micro] = critic.update_critic(data)["critic/vf_loss"]
    # values = current predictions, so the clipped branch equals the unclipped one: 0.5 * token-mean (v - R)^2
    expected = float(0.5 * (((data.batch["values"] - data.batch["returns"]) ** 2) * mask).sum() / mask.sum())
    assert logged[1] == pytest.approx([expected], rel=1e-4)
    assert logged[3] == pytest.approx([expected], rel=1e-4)
