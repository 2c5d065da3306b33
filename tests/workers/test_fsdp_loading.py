"""Building the sharded models: rank 0 alone reads the weight files, the other ranks get them by broadcast."""

from __future__ import annotations

import pytest
import torch

from tests.workers.two_ranks import run_on_two_ranks


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from verl.utils.models import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", model_type="llama")


IDS = torch.tensor([[5, 9, 17, 33, 65, 129], [7, 11, 13, 19, 23, 29]])


def _build_actor(rank: int, model_path: str, lora_rank: int) -> dict:
    """Build an FSDP actor worker (plain, then with LoRA) and report what this rank read and holds."""
    import transformers.modeling_utils as modeling_utils

    from tests.workers.test_fsdp_worker import worker_config
    from verl.workers import fsdp_utils
    from verl.workers.fsdp_worker import FSDPWorker

    opened: list[str] = []
    real_safe_open = modeling_utils.safe_open

    def counting_safe_open(filename, *args, **kwargs):
        opened.append(str(filename))
        return real_safe_open(filename, *args, **kwargs)

    modeling_utils.safe_open = counting_safe_open
    cfg = worker_config(model_path)
    cfg.actor.model.lora.rank, cfg.actor.model.lora.alpha = lora_rank, 2 * lora_rank
    worker = FSDPWorker(cfg, "actor")
    worker.init_model()
    module = worker.actor_module
    base = module.get_base_model() if lora_rank else module
    with torch.no_grad():
        logits = module(input_ids=IDS).logits
    critic_state = {}
    if lora_rank == 0:  # the critic's value model (a token classifier with a fresh score head) loads the same way
        cfg.critic.model.model_path = model_path
        critic = FSDPWorker(cfg, "critic")
        critic.init_model()
        critic_state = {k: v.detach().clone() for k, v in fsdp_utils.full_state_dict(critic.critic.module).items()}
    return {
        "critic": critic_state,
        "opened": opened,
        "tied": base.lm_head.weight is base.model.embed_tokens.weight,
        "state": {k: v.detach().clone() for k, v in fsdp_utils.full_state_dict(module).items()},
        "buffers": {k: v.clone() for k, v in module.named_buffers()},
        "logits": logits.clone(),
    }


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_only_rank0_reads_the_weights_and_both_ranks_end_equal(tiny_llama, lora_rank):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    rank0, rank1 = run_on_two_ranks(_build_actor, tiny_llama, lora_rank)
    assert rank0["opened"] and not rank1["opened"], (rank0["opened"], rank1["opened"])
    assert rank0["tied"] and rank1["tied"], "lm_head must stay tied to embed_tokens on every rank"
    files = load_file(f"{tiny_llama}/model.safetensors")
    state = rank0["state"]
    assert state.keys() == rank1["state"].keys()
    for key, value in state.items():
        assert torch.equal(value, rank1["state"][key]), key
        plain = key.replace("base_model.model.", "").replace(".base_layer.", ".")
        if plain in files:
            assert torch.equal(value, files[plain]), key
    assert lora_rank == 0 or any(".lora_A." in key for key in state)
    assert rank0["critic"].keys() == rank1["critic"].keys() and (lora_rank > 0 or "score.weight" in rank0["critic"])
    for key, value in rank0["critic"].items():  # including the score head rank 0 initialised
        assert torch.equal(value, rank1["critic"][key]), key
        assert key not in files or torch.equal(value, files[key]), key  # the adapter init reached rank 1 too
    for name, buffer in rank0["buffers"].items():  # rotary inv_freq is in no state dict
        assert torch.equal(buffer, rank1["buffers"][name]), name
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = reference(input_ids=IDS).logits
    for result in (rank0, rank1):  # LoRA starts as a no-op (B = 0), so the logits are the base model's
        assert torch.allclose(result["logits"], expected, atol=1e-5)
