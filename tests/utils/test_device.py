"""RNG state helpers: a restored state gives the same next samples (torch, numpy, python; accelerator on GPU)."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from verl.utils import device as dev


def draw() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_restored_rng_state_gives_the_same_next_samples():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = pickle.loads(pickle.dumps(dev.get_rng_state()))  # survives a checkpoint round trip
    first = draw()
    assert draw() != first  # the generators moved on
    dev.set_rng_state(state)
    assert draw() == first
    if not dev.is_gpu_available():
        assert state["accelerator"] is None  # nothing to save, and restoring it is a no-op


@pytest.mark.gpu
@pytest.mark.skipif(not dev.is_gpu_available(), reason="only a GPU has an accelerator RNG to save and restore")
def test_restored_accelerator_rng_state_gives_the_same_next_sample():
    """Only a GPU has an accelerator generator (dropout and sampling on the device draw from it)."""
    device = dev.get_torch_device()
    state = dev.get_rng_state()
    assert state["accelerator"] is not None
    first = torch.rand(4, device=device)
    dev.set_rng_state(state)
    torch.testing.assert_close(torch.rand(4, device=device), first, rtol=0, atol=0)


def test_flush_denormals_zeroes_subnormal_results_only():
    import torch

    from verl.utils.device import flush_denormals

    tiny = torch.tensor([1e-30], dtype=torch.float32)
    torch.set_flush_denormal(False)
    assert (tiny * 1e-10).item() > 0  # without it a subnormal result is kept (and slow on x86)
    flush_denormals()
    assert (tiny * 1e-10).item() == 0.0 and (tiny * 1e-5).item() == pytest.approx(1e-35, rel=1e-3)
