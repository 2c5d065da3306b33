"""The rollout's sampling helpers against direct computations."""

import torch

from verl.workers.rollout.sampling import filter_logits, sample_categorical


def test_inverse_cdf_sampling_matches_the_distribution_and_skips_zero_probabilities():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3], [0.0, 0.0, 0.0, 1.0]]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    draws = sample_categorical(probs, g).view(20000, 2)
    freq = torch.bincount(draws[:, 0], minlength=4).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.1, 0.0, 0.6, 0.3]), atol=0.015)
    assert (draws[:, 0] != 1).all() and (draws[:, 1] == 3).all()


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    assert torch.isinf(filter_logits(logits, 2, 1.0)[0, 2:]).all()
    kept = ~torch.isinf(filter_logits(logits, -1, 0.7))  # 0.5 < 0.7 -> keep the next one too, drop the rest
    assert kept.tolist() == [[True, True, False, False]]
