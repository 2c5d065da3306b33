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


def test_finished_rows_leave_the_batch_and_the_outputs_do_not_change(monkeypatch, tmp_path):
    """Dropping finished rows from the batch (and KV cache) gives the same tokens and log-probs per row
    as keeping every row to the end, and the later forward passes really run on fewer rows."""
    from verl.utils.models import save_tiny_model_dir
    from verl.workers import fsdp_utils
    from verl.workers.config import ModelConfig
    from verl.workers.rollout import sampling
    from verl.workers.rollout.sampling import SamplingSpec, sample

    path = save_tiny_model_dir(tmp_path / "tiny")
    model = fsdp_utils.load_causal_lm(path, ModelConfig(model_path=path), torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 500, (6, 5), generator=g)
    attention = torch.ones_like(ids)
    attention[:2, :2] = 0  # left padding
    free = sample(model, ids, attention, SamplingSpec(max_new_tokens=12, temperature=0.0), pad_token_id=0)
    # EOS = what rows 0-2 generate at step 2: they stop by then, the others later or never
    eos = sorted(set(free.responses[:3, 2].tolist()))
    spec = SamplingSpec(max_new_tokens=12, temperature=0.0, eos_token_ids=eos)
    rows_seen: list[int] = []
    hook = model.register_forward_hook(
        lambda _m, args, kwargs, out: rows_seen.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    compacted = sample(model, ids, attention, spec, pad_token_id=0)
    hook.remove()
    monkeypatch.setattr(sampling, "COMPACT_AT", 0.0)
    kept = sample(model, ids, attention, spec, pad_token_id=0)
    assert torch.equal(compacted.responses, kept.responses)
    assert torch.equal(compacted.response_mask, kept.response_mask)
    assert torch.allclose(compacted.log_probs, kept.log_probs, atol=1e-5)
    lengths = kept.response_mask.sum(-1)
    assert lengths.min() < lengths.max()  # rows did finish at different steps
    assert min(rows_seen) < 6 == rows_seen[0]
