"""HF export: weights in the model's dtype, the source's generation_config.json kept, no fp32 copy of the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.workers.live_bytes import LiveBytes
from tests.workers.test_fsdp_worker import fixed_batch, worker_config

GENERATION = {"bos_token_id": 1, "eos_token_id": [2, 7], "do_sample": True, "temperature": 0.6, "top_p": 0.9}


@pytest.fixture(scope="module")
def llama_with_eos_list(tmp_path_factory):
    """A tiny Llama (4 layers, so no single tensor dominates) whose generation_config has Llama-3's eos list."""
    from verl.utils.models import save_tiny_model_dir

    path = save_tiny_model_dir(
        tmp_path_factory.mktemp("tiny") / "model", model_type="llama", num_layers=4, intermediate_size=256
    )
    (Path(path) / "generation_config.json").write_text(json.dumps(GENERATION, indent=1))
    return path


def trained_actor(model_path: str, dtype: str, lora_rank: int = 0):
    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.workers.fsdp_worker import FSDPWorker

    cfg = worker_config(model_path)
    cfg.actor.model.dtype = dtype
    cfg.actor.model.lora.rank, cfg.actor.model.lora.alpha = lora_rank, 2 * lora_rank
    cfg.actor.optim.lr = 5e-2
    group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg, "actor"))
    group.init_model()
    group.update_actor(fixed_batch(seed=2))
    return group


def test_bf16_export_writes_bf16_weights_and_copies_generation_config(llama_with_eos_list, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, GenerationConfig

    group = trained_actor(llama_with_eos_list, "bf16")
    trained = group.full_state_dict()[0]  # fp32 master weights
    group.export_hf(str(tmp_path / "hf"))
    out = tmp_path / "hf"
    written = {}
    for file in out.glob("*.safetensors"):
        written.update(load_file(file))
    assert written and {v.dtype for v in written.values()} == {torch.bfloat16}
    for key, value in written.items():
        assert torch.equal(value, trained[key].to(torch.bfloat16)), key
    assert "lm_head.weight" not in written  # tied: stored once, as embed_tokens
    source = Path(llama_with_eos_list) / "generation_config.json"
    assert (out / "generation_config.json").read_bytes() == source.read_bytes()
    assert GenerationConfig.from_pretrained(out).eos_token_id == [2, 7]
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert reloaded.dtype == torch.bfloat16 and reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    assert (out / "tokenizer_config.json").is_file()


def test_export_never_holds_a_full_precision_copy_of_the_model(llama_with_eos_list, tmp_path):
    """Live fp32 bytes stay within two full tensors; bf16 within the bf16 model plus one tensor."""
    group = trained_actor(llama_with_eos_list, "bf16")
    params = list(group.workers[0].actor_module.parameters())
    largest = max(p.numel() for p in params)
    total = sum(p.numel() for p in {id(p): p for p in params}.values())
    with LiveBytes() as tally:
        group.export_hf(str(tmp_path / "hf"))
    assert tally.peak[torch.float32] <= 2 * 4 * largest < 4 * total / 2, (dict(tally.peak), largest, total)
    assert tally.peak[torch.bfloat16] <= 2 * (total + largest), (dict(tally.peak), largest, total)


def test_lora_export_merges_the_adapters_in_full_precision(llama_with_eos_list, tmp_path):
    """The exported (merged, fp32 here) model reproduces the LoRA actor's log-probs."""
    from transformers import AutoModelForCausalLM

    from verl.utils.torch_functional import logprobs_from_logits
    from verl.workers.actor.dp_actor import response_logits

    group = trained_actor(llama_with_eos_list, "fp32", lora_rank=4)
    batch = fixed_batch(seed=2)
    actor = group.compute_log_prob(batch).batch["old_log_probs"]
    group.export_hf(str(tmp_path / "hf"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    with torch.no_grad():
        exported = logprobs_from_logits(response_logits(merged, batch.batch.to_dict()), batch.batch["responses"])
    mask = batch.batch["response_mask"].bool()
    base = AutoModelForCausalLM.from_pretrained(llama_with_eos_list, dtype=torch.float32).eval()
    with torch.no_grad():
        base_lp = logprobs_from_logits(response_logits(base, batch.batch.to_dict()), batch.batch["responses"])
    assert (actor[mask] - base_lp[mask]).abs().max() > 1e-3  # the adapter changed the policy
    assert torch.allclose(exported[mask], actor[mask], atol=1e-4)
