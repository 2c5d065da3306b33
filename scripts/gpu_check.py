"""GPU check (one CUDA device, no network, no Ray needed): a few ReBO steps with FSDP2 on NCCL.

Builds a random-weight Llama from a config (no download), runs the engine in-process
(``trainer.backend=inprocess``) with the HF rollout on the GPU, and reports:

- agreement of the rollout's sampled-token log-probs with the FSDP actor's recomputed ones;
- rollout tokens/s, training tokens/s and the training MFU (6 * params * tokens / time / peak);
- the same for the vLLM rollout when ``import vllm`` works (else it says so).

Usage: ``python3 scripts/gpu_check.py [--hidden 1024 --layers 16 --steps 3 --peak-tflops 989]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_model_dir(root: Path, hidden: int, layers: int, vocab: int) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from verl.utils.models import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 128),
        num_key_value_heads=max(1, hidden // 512),
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    path = root / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def write_prompts(root: Path, count: int) -> str:
    rows = [
        {"prompt": f"Tell me about item number {i} and its history.", "solution": ["<normal>", "x"]}
        for i in range(count)
    ]
    path = root / "prompts.json"
    path.write_text(json.dumps(rows))
    return str(path)


def run_engine(model: str, prompts: str, out: Path, args, rollout: str) -> dict:
    from verl.trainer.config import PPOConfig
    from verl.trainer.main import run
    from verl.utils.config import load_config

    overrides = [
        f"data.train_files={prompts}",
        "data.max_prompt_length=64",
        f"data.max_response_length={args.response_length}",
        f"data.rollout_batch_size={args.prompts}",
        f"worker.actor.model.model_path={model}",
        f"worker.actor.global_batch_size={args.prompts}",
        "worker.actor.micro_batch_size_per_device_for_update=16",
        "worker.actor.micro_batch_size_per_device_for_experience=32",
        "worker.actor.old_log_probs=recompute",
        f"worker.rollout.name={rollout}",
        f"worker.rollout.n={args.n}",
        f"worker.rollout.micro_batch_size={args.prompts * args.n}",
        "worker.reward.reward_function=forget_two_stage_abs_target",
        f"trainer.max_steps={args.steps}",
        f"trainer.total_epochs={args.steps}",
        f"trainer.output_dir={out}",
        f"trainer.experiment_name={rollout}",
        "trainer.backend=inprocess",
        "trainer.n_gpus_per_node=1",
        "trainer.save_freq=-2",
        "trainer.export_hf=false",
        "trainer.logger=[jsonl]",
    ]
    started = time.time()
    run(load_config(PPOConfig, overrides))
    metrics = [json.loads(line) for line in (out / rollout / "metrics.jsonl").read_text().splitlines()]
    return {"wall_s": time.time() - started, "steps": metrics}


def agreement(model: str, args) -> float:
    """Max |rollout log-prob - actor log-prob| over generated tokens (bf16 on GPU)."""

    from verl.protocol import DataProto
    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.utils.config import build_dataclass, deep_post_init
    from verl.workers.config import WorkerConfig
    from verl.workers.fsdp_worker import FSDPWorker

    cfg = build_dataclass(WorkerConfig, {"actor": {"model": {"model_path": model}}, "rollout": {"n": 2}})
    deep_post_init(cfg)
    cfg.rollout.response_length, cfg.rollout.prompt_length = args.response_length, 64
    cfg.actor.optim.training_steps = 1
    group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg, "actor_rollout"))
    group.init_model()
    tokenizer = group.workers[0].tokenizer
    enc = tokenizer(["hello there"] * 8, return_tensors="pt", padding=True, padding_side="left")
    prompts = DataProto.from_dict(
        {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}, meta_info={"temperature": 1.0}
    )
    out = group.generate_sequences(prompts)
    mask = out.batch["response_mask"].bool()
    recomputed = group.compute_log_prob(out).batch["old_log_probs"]
    return float((out.batch["rollout_log_probs"][mask] - recomputed[mask]).abs().max())


def summarize(name: str, result: dict, params: int, args) -> None:
    steps = result["steps"][1:] or result["steps"]  # the first step warms up kernels
    mean = lambda key: sum(s.get(key, 0.0) for s in steps) / len(steps)  # noqa: E731
    gen_tps = mean("throughput/gen_tokens_per_s")
    tokens = args.prompts * args.n * (64 + args.response_length)
    update_s = mean("timing/update_actor")
    mfu = 6 * params * tokens / max(update_s, 1e-9) / (args.peak_tflops * 1e12)
    print(f"[{name}] step {mean('timing/step'):.2f} s | gen {mean('timing/gen'):.2f} s | update {update_s:.2f} s")
    print(
        f"[{name}] rollout {gen_tps:.0f} new tokens/s | training {tokens / max(update_s, 1e-9):.0f} tokens/s | MFU {100 * mfu:.1f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=128)
    parser.add_argument("--allow-cpu", action="store_true", help="smoke-test this script on a CPU (tiny sizes)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak of the GPU (H100 SXM: 989)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        sys.exit("gpu_check: no CUDA device visible")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    model = build_model_dir(root, args.hidden, args.layers, args.vocab)
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        params = sum(
            p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)).parameters()
        )
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device {device} | model {params / 1e6:.0f} M params | torch {torch.__version__}")
    print(f"log-prob agreement (HF rollout vs FSDP actor, bf16): max |diff| = {agreement(model, args):.4f}")
    prompts = write_prompts(root, args.prompts * args.steps)
    summarize("hf", run_engine(model, prompts, root / "runs", args, "hf"), params, args)
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("[vllm] not importable on this machine: vLLM path skipped")
        return
    summarize("vllm", run_engine(model, prompts, root / "runs", args, "vllm"), params, args)


if __name__ == "__main__":
    main()
