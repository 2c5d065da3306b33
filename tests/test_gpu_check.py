"""scripts/gpu_check.py asserts: its checks fire on a NaN loss, a log-prob mismatch and a memory overrun,
and the whole script passes on the CPU (--cpu-selftest, tiny fp32 model) through scripts/gpu_check.sh."""

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOOD_STEP = {"actor/pg_loss": 0.1, "actor/kl_loss": 0.0, "actor/entropy": 3.2, "actor/grad_norm": 0.5}


def test_check_losses_fires_on_nan_inf_missing_and_skipped_steps(gpu_check):
    assert gpu_check.check_losses([GOOD_STEP, GOOD_STEP]) == []
    assert gpu_check.check_losses([]) == ["no training step finished"]
    bad = gpu_check.check_losses([GOOD_STEP, dict(GOOD_STEP, **{"actor/pg_loss": math.nan})])
    assert bad == ["step 2: actor/pg_loss=nan"]
    assert gpu_check.check_losses([dict(GOOD_STEP, **{"actor/grad_norm": math.inf})]) == [
        "step 1: actor/grad_norm=inf"
    ]
    missing = {k: v for k, v in GOOD_STEP.items() if k != "actor/kl_loss"}
    assert gpu_check.check_losses([missing]) == ["step 1: actor/kl_loss missing"]
    skipped = gpu_check.check_losses([dict(GOOD_STEP, **{"actor/skipped_nonfinite_steps": 1.0})])
    assert skipped == ["step 1: optimizer step skipped (non-finite grad norm)"]


def test_check_logprobs_bounds(gpu_check):
    ok = torch.full((1000,), 0.01)
    ok[0] = 0.3
    assert gpu_check.check_logprobs(ok, "bf16") == []
    assert gpu_check.check_logprobs(ok, "fp32") != []  # fp32 bounds are 50x tighter
    spike = ok.clone()
    spike[1] = 0.6
    assert gpu_check.check_logprobs(spike, "bf16") == ["log-prob max |diff| 0.6000 >= 0.5 (bf16)"]
    drift = torch.full((1000,), 0.06)
    assert gpu_check.check_logprobs(drift, "bf16") == ["log-prob mean |diff| 0.0600 >= 0.05 (bf16)"]
    assert gpu_check.check_logprobs(torch.tensor([0.0, math.nan]), "bf16") == [
        "log-prob agreement: non-finite log-probs"
    ]
    assert gpu_check.check_logprobs(torch.zeros(0), "bf16") != []


def test_check_memory_and_peak_flops_table(gpu_check):
    gib = 2**30
    assert gpu_check.check_memory(12 * gib, 10 * gib, 1.25) == []
    assert gpu_check.check_memory(13 * gib, 10 * gib, 1.25) == ["peak memory 13.00 GiB > plan 10.00 GiB x 1.25"]
    table = {
        "NVIDIA H200": 989.4,
        "NVIDIA H100 80GB HBM3": 989.4,
        "NVIDIA H100 PCIe": 756.5,
        "NVIDIA A100-SXM4-80GB": 312.0,
        "NVIDIA A100 80GB PCIe": 312.0,
        "NVIDIA L40S": 362.0,
        "NVIDIA L4": 121.0,
        "NVIDIA H20": 148.0,
        "NVIDIA B200": 2250.0,
    }
    for name, tflops in table.items():
        assert gpu_check.peak_tflops(name) == tflops, name
    assert gpu_check.peak_tflops("Some Future GPU") is None


def run_selftest(gpu_check, monkeypatch, capsys, *flags):
    monkeypatch.setenv("VERL_DEVICE", "cpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--cpu-selftest", *flags])
    return str(e.value.code), capsys.readouterr().out


def test_diverging_training_makes_the_script_exit_nonzero(gpu_check, monkeypatch, capsys):
    """lr=1e30 blows the weights up after step 1, so step 2's gradient norm is NaN."""
    message, out = run_selftest(gpu_check, monkeypatch, capsys, "--override", "worker.actor.optim.lr=1e30")
    assert message.startswith("gpu_check FAILED: [hf] step 2: actor/grad_norm=nan")
    assert "\n" not in message and "log-prob" not in message


def test_a_rollout_off_the_actor_makes_the_log_prob_check_fail(gpu_check, monkeypatch, capsys):
    """The rollout samples from other weights than the actor's (a broken sync, or a shared module changed
    while generating): its log-probs no longer match the actor's."""
    from verl.workers.rollout.hf_rollout import HFRollout

    original = HFRollout.generate_sequences

    def corrupted(self, prompts):
        weight = self.model.get_output_embeddings().weight
        with torch.no_grad():
            weight.mul_(3.0)
        try:
            return original(self, prompts)
        finally:
            with torch.no_grad():
                weight.div_(3.0)

    monkeypatch.setattr(HFRollout, "generate_sequences", corrupted)
    message, out = run_selftest(gpu_check, monkeypatch, capsys, "--steps", "1")
    assert message.startswith("gpu_check FAILED: log-prob mean |diff|")
    assert "(fp32)" in message


def test_shell_entry_passes_the_cpu_selftest():
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", GPU_CHECK_TIMEOUT="300")
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu-selftest"],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "gpu_check PASSED" in out.stdout
    assert "log-prob agreement (fp32" in out.stdout and "tokens/s" in out.stdout and "MFU" in out.stdout


def test_shell_entry_names_missing_packages_in_one_line(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')  # -S: no site-packages, so no torch
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), PYTHONNOUSERSITE="1")
    out = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("gpu_check FAILED: missing Python packages: torch")
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_crash_ends_in_one_failure_line(gpu_check, monkeypatch, capsys):
    def crash():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(gpu_check, "main", crash)
    with pytest.raises(SystemExit) as e:
        gpu_check.cli()
    assert e.value.code == "gpu_check FAILED: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert "Traceback" in capsys.readouterr().err
