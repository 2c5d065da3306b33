"""The --plan memory estimate: exact parameter counts from a config, per-phase bytes against a hand
computation for Llama-3-8B, the verdict and the knobs, and the CLI flags (no Ray, no weights)."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from verl.utils.memory_plan import GIB, Pass, TrainingSetup, estimate, suggestions
from verl.utils.memory_plan_report import find_model_config, model_shape, split_plan_flags

REPO = Path(__file__).resolve().parents[2]
LLAMA3_CONFIG = Path(__file__).with_name("llama3_8b_instruct_config.json")

# Llama-3-8B by hand from its config fields: h 4096, L 32, KV heads 8 x head_dim 128, INTER 14336, V 128256.
H, L, KV, INTER, V = 4096, 32, 8 * 128, 14336, 128256
LAYER = 2 * H * H + 2 * H * KV + 3 * H * INTER + 2 * H  # q, o; k, v; gate, up, down; two RMSNorm weights
ROOT = 2 * V * H + H  # embed_tokens + untied lm_head + final norm
P = L * LAYER + ROOT


@pytest.fixture(scope="module")
def llama3():
    return model_shape(json.loads(LLAMA3_CONFIG.read_text()))


def rebo_llama3_setup(gpus: int = 4, gib: float = 80) -> TrainingSetup:
    """examples/rebo_llama3.yaml as plan_setup builds it (checked against the CLI below)."""
    from verl.trainer.config import PPOConfig
    from verl.trainer.main import plan_setup
    from verl.utils.config import load_config

    cfg = load_config(PPOConfig, [f"config={REPO / 'examples/rebo_llama3.yaml'}", f"trainer.n_gpus_per_node={gpus}"])
    return plan_setup(cfg, gib * GIB)


def test_parameter_count_is_exact_from_the_config_fields(llama3):
    assert P == 8_030_261_248
    assert llama3.num_params == P
    assert llama3.layer_params == LAYER
    assert llama3.root_params == ROOT
    assert llama3.largest_param == V * H
    assert (llama3.layers, llama3.kv_dim, llama3.intermediate, llama3.vocab) == (L, KV, INTER, V)


def test_lora_count_matches_peft_on_a_tiny_llama(tmp_path):
    from verl.utils.models import build_tiny_model, build_tiny_tokenizer
    from verl.workers.config import LoraConfig
    from verl.workers.fsdp_utils import apply_lora

    model = build_tiny_model(build_tiny_tokenizer(), hidden_size=64, num_kv_heads=2, model_type="llama")
    shape = model_shape(model.config.to_dict())
    for targets in (["all-linear"], ["q_proj", "v_proj"]):
        peft_model = apply_lora(
            build_tiny_model(build_tiny_tokenizer(), model_type="llama"), LoraConfig(8, 16, 0.0, targets)
        )
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert shape.lora_params(8, tuple(targets)) == trainable, targets
    assert shape.num_params == sum(p.numel() for p in model.parameters())


def test_rebo_llama3_on_4x80_matches_hand_computation(llama3):
    setup = rebo_llama3_setup()
    plan = estimate(llama3, setup)
    w, mb_update, mb_exp, seq, pos = 4, 8, 16, 512 + 1024, 1024  # logits at the response positions
    per_token_layer = 12 * H + 3 * KV + 4 * INTER  # elements saved per token per layer (module docstring)
    gathered = (ROOT + 2 * LAYER) * 2  # bf16 root unit + 2 decoder layers
    expected = {
        "rollout": {
            "parameters": 4 * P // w,  # fp32 shards, on the GPU while the sync streams (offload_params)
            "reference": 2 * P // w,  # bf16 shards
            "sync buffer": V * H * (4 + 2),  # the largest tensor (embeddings) in fp32 + bf16
            "rollout engine": int(0.6 * 80 * GIB),  # vLLM gpu_memory_utilization x card
            "runtime": GIB,
        },
        "log-probs": {
            "parameters": 4 * P // w,
            "gathered": gathered,
            "reference": 2 * P // w,
            "activations": mb_exp * seq * per_token_layer * 2,
            "logits": mb_exp * pos * V * (2 + 4),  # bf16 lm_head output + fp32 copy
            "runtime": GIB,
        },
        "update": {
            "parameters": 4 * P // w,
            "gathered": gathered,
            "gradients": 4 * P // w,
            "optimizer": 8 * P // w,  # AdamW m + v, fp32
            "reference": 2 * P // w,
            "activations": mb_update * seq * (L * H + per_token_layer) * 2,  # checkpointing on
            "logits": mb_update * pos * V * (2 + 4 + 4),  # + the fp32 gradient
            "runtime": GIB,
        },
    }
    for phase in plan.phases:
        nonzero = {k: v for k, v in phase.parts.items() if v}
        assert nonzero == expected[phase.name], phase.name
    assert plan.fits and plan.peak.name == "rollout"
    assert 60 * GIB < plan.peak.total < 66 * GIB  # 63.2 GiB: 48 of it vLLM's share


def test_knobs_change_the_phases_they_should(llama3):
    base = rebo_llama3_setup()
    plan = estimate(llama3, base)
    kept = estimate(llama3, dataclasses.replace(base, offload_optimizer=False))
    assert kept.phase("rollout").parts["optimizer"] == 8 * P // 4 and plan.phase("rollout").parts["optimizer"] == 0
    assert kept.phase("update").total == plan.phase("update").total  # the update needs it either way
    lora = estimate(llama3, dataclasses.replace(base, lora_rank=8))
    assert lora.phase("update").parts["reference"] == 0  # the disabled adapter is the reference
    assert lora.phase("update").parts["optimizer"] == 8 * llama3.lora_params(8) // 4
    no_ckpt = estimate(llama3, dataclasses.replace(base, gradient_checkpointing=False))
    assert no_ckpt.phase("update").parts["activations"] > 10 * plan.phase("update").parts["activations"]
    copy = estimate(llama3, dataclasses.replace(base, rollout="hf", rollout_rows=64, hf_weights="copy"))
    assert all(p.parts["rollout engine"] >= 2 * P for p in copy.phases)  # a full bf16 copy in every phase
    shared = estimate(llama3, dataclasses.replace(base, rollout="hf", rollout_rows=64))  # the actor generates
    assert shared.phase("rollout").parts["gathered"] == 2 * P and "sync buffer" not in shared.phase("rollout").parts
    assert all(p.parts["rollout engine"] < 2 * P for p in shared.phases)  # only the rollout's KV cache
    assert shared.phase("update").total == copy.phase("update").total - 2 * P
    offloaded = estimate(llama3, dataclasses.replace(base, fsdp_cpu_offload=True))
    assert offloaded.phase("update").parts["parameters"] == offloaded.phase("update").parts["optimizer"] == 0


def test_8b_full_parameters_on_1x24_does_not_fit_and_names_what_would(llama3):
    setup = dataclasses.replace(rebo_llama3_setup(gpus=1, gib=24), offload_params=False, offload_optimizer=False)
    plan = estimate(llama3, setup)
    assert not plan.fits
    options = {o.knob: o for o in suggestions(llama3, setup)}
    assert {"lora", "cpu_offload", "gpus"} <= set(options)
    assert "offload" not in options  # offload between phases: the update brings everything back
    assert options["gpus"].fits and options["gpus"].gpus_needed >= 8  # 16 bytes/param of state alone: 128 GB
    assert all(o.peak < plan.peak.total for o in options.values())
    # Neither LoRA (drops the reference, but keeps the fp32 base) nor CPU offload (drops the 16 bytes of
    # state per parameter, but keeps the bf16 reference) fits alone; together they do, and both are needed.
    assert not options["lora"].fits and not options["cpu_offload"].fits
    assert options["lora+cpu_offload"].fits and options["lora+cpu_offload"].peak <= 24 * GIB


def test_cli_plan_rebo_llama3_prints_phases_and_verdict_without_ray():
    code = (
        "import resource, sys\n"
        "from verl.trainer.main import main\n"
        "try:\n"
        f"    main(['config=examples/rebo_llama3.yaml', '--plan', '--gpu-mem-gb', '80', '--model-config', '{LLAMA3_CONFIG}'])\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, 'ray' in sys.modules, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "rollout" in out.stdout and "log-probs" in out.stdout and "update" in out.stdout
    assert "verdict: FITS" in out.stdout
    code, ray_imported, max_rss_kib = out.stdout.split()[-3:]
    assert (code, ray_imported) == ("0", "False")
    assert int(max_rss_kib) < 2 * 2**20  # < 2 GiB: no 8B weights (16 GB in bf16) were ever materialised


def test_cli_plan_one_gpu_24gb_exits_1_naming_lora_cpu_offload_and_gpus(capsys):
    from verl.trainer.main import main

    argv = [f"config={REPO / 'examples/rebo_llama3.yaml'}", "trainer.n_gpus_per_node=1", "--plan", "--gpu-mem-gb=24"]
    argv += ["worker.actor.offload.offload_params=false", "worker.actor.offload.offload_optimizer=false"]
    with pytest.raises(SystemExit) as e:
        main(argv + ["--model-config", str(LLAMA3_CONFIG)])
    assert e.value.code == 1
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out
    for key in ("worker.actor.model.lora.rank", "worker.actor.fsdp.cpu_offload"):
        assert key in out
    assert "GPUs [trainer.n_gpus_per_node" in out


def test_rs_plan_has_update_and_reference_pass_only_when_the_loss_needs_it(capsys, llama3):
    from RS.config import RSConfig
    from RS.train import plan_setup
    from verl.utils.config import load_config

    base = [f"config={REPO / 'examples/rs_llama3.yaml'}"]
    sft = estimate(llama3, plan_setup(load_config(RSConfig, base), 80 * GIB))
    npo = estimate(llama3, plan_setup(load_config(RSConfig, base + ["loss.name=npo"]), 80 * GIB))
    assert [p.name for p in sft.phases] == ["update"] and sft.fits
    assert [p.name for p in npo.phases] == ["log-probs", "update"]
    assert npo.phase("log-probs").parts["reference"] == 2 * P // 4
    assert npo.phase("update").parts["reference"] == 0  # released after the reference pass


def test_flags_and_one_line_errors(tmp_path):
    assert split_plan_flags(["a=1"]) == (["a=1"], None)
    rest, flags = split_plan_flags(["a=1", "--plan", "--gpu-mem-gb", "24", "--model-config=x.json"])
    assert rest == ["a=1"] and flags.gpu_mem_gb == 24 and flags.model_config == "x.json"
    for argv, message in (
        (["--gpu-mem-gb", "24"], "only work together with --plan"),
        (["--plan", "--gpu-mem-gb", "lots"], "must be a number"),
        (["--plan", "--gpu-mem-gb"], "needs a value"),
    ):
        with pytest.raises(SystemExit, match=message):
            split_plan_flags(argv)
    missing = str(tmp_path / "nowhere" / "model")
    with pytest.raises(FileNotFoundError, match="--model-config") as e:
        find_model_config(missing)
    assert missing in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        find_model_config("x", override=str(tmp_path))
    (tmp_path / "config.json").write_text(LLAMA3_CONFIG.read_text())
    assert find_model_config(str(tmp_path))["hidden_size"] == H  # a local folder needs no override


def test_micro_batch_pass_fields_are_what_plan_setup_reads():
    setup = rebo_llama3_setup()
    assert setup.update == Pass(8, 1536, 1024) and setup.experience == Pass(16, 1536, 1024)
    assert (setup.rollout, setup.gpu_memory_utilization, setup.n_gpus) == ("vllm", 0.6, 4)


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
def test_activation_formula_bounds_the_tensors_a_real_llama_saves(bf16, checkpointing):
    """Tally the activations autograd saves in one forward of a small Llama (weights excluded) and compare
    with the module's formula: a close upper bound without checkpointing; with it, between the layer
    inputs alone and the estimate (which adds the one layer recomputed during backward)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from verl.utils.memory_plan import activation_bytes

    config = LlamaConfig(
        vocab_size=1000, hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16 if bf16 else torch.float32)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    rows, seq = 2, 128
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model(input_ids=torch.randint(0, 1000, (rows, seq)))
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    measured = sum(n for ptr, n in saved.items() if ptr not in weights)
    shape = model_shape(config.to_dict())
    setup = TrainingSetup(
        1, 80 * GIB, Pass(rows, seq, seq), None, mixed_precision=bf16, gradient_checkpointing=checkpointing
    )
    estimated = activation_bytes(shape, setup, setup.update, grad=True)
    if checkpointing:
        layer_inputs = shape.layers * rows * seq * shape.hidden * setup.compute_bytes
        assert layer_inputs <= measured <= estimated
    else:
        assert 0.75 * estimated <= measured <= estimated  # measured: 0.84 (fp32), 0.93 (bf16)
