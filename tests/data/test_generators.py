"""The generators behind boundary synthesis: the transformers adapter on a tiny random model."""

import pytest

from data.generators import hf_generate_fn


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from verl.utils.models import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def test_hf_adapter_lengths_seeded_sampling_and_global_rng(tiny_model):
    import torch

    prompts = ["Question: who?", "A much longer prompt about a fictitious painter and a harbor."]
    sample = hf_generate_fn(tiny_model, max_new_tokens=5, do_sample=True, batch_size=1, seed=3)
    state = torch.get_rng_state()
    first = sample(prompts)
    assert torch.equal(state, torch.get_rng_state())
    assert len(first) == 2 and all(isinstance(t, str) for t in first) and sample(prompts) == first
    greedy = hf_generate_fn(tiny_model, max_new_tokens=5, batch_size=2)
    assert greedy(prompts) == greedy(prompts[:1]) + greedy(prompts[1:])  # left padding does not change greedy output
