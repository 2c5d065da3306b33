"""Oracle tests for verl.utils.torch_functional: each helper vs plain torch ops or Python loops."""

import math
import statistics

import pytest
import torch

from verl.utils.torch_functional import (
    entropy_from_logits,
    get_response_mask,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    pad_2d_list_to_tensor,
)


def _prefix_mask(lengths, width):
    return torch.tensor([[1 if t < n else 0 for t in range(width)] for n in lengths])


@pytest.mark.parametrize("chunk_rows", [None, 1, 4, 1000])
def test_logprobs_from_logits_matches_log_softmax_gather_and_gradient(chunk_rows):
    torch.manual_seed(0)
    logits = (3 * torch.randn(3, 5, 11)).requires_grad_()
    labels = torch.randint(0, 11, (3, 5))
    weights = torch.randn(3, 5)

    ours = logprobs_from_logits(logits, labels, chunk_rows=chunk_rows)
    (ours * weights).sum().backward()
    grad_ours = logits.grad.clone()

    logits.grad = None
    reference = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    (reference * weights).sum().backward()

    assert ours.shape == (3, 5) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_ours, logits.grad, rtol=1e-5, atol=1e-6)


def test_logprobs_from_logits_gradcheck_fp64():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 6, (2, 3))
    assert torch.autograd.gradcheck(lambda x: logprobs_from_logits(x, labels, chunk_rows=2), (logits,))


def test_logprobs_from_logits_bf16_upcasts_and_keeps_grad_dtype():
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 9).to(torch.bfloat16).requires_grad_()
    labels = torch.randint(0, 9, (2, 4))
    ours = logprobs_from_logits(logits, labels, chunk_rows=3)
    reference = torch.log_softmax(logits.detach().float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)
    ours.sum().backward()
    assert logits.grad.dtype == torch.bfloat16
    probs = torch.softmax(logits.detach().float(), -1)
    expected_grad = torch.nn.functional.one_hot(labels, 9).float() - probs
    torch.testing.assert_close(logits.grad.float(), expected_grad, rtol=2e-2, atol=1e-2)


def test_logprobs_from_logits_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels"):
        logprobs_from_logits(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_entropy_from_logits_matches_definition(chunk_rows):
    torch.manual_seed(3)
    logits = (2 * torch.randn(4, 3, 7)).requires_grad_()
    ours = entropy_from_logits(logits, chunk_rows=chunk_rows)
    probs = torch.softmax(logits, -1)
    reference = -(probs * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    grad_ours = torch.autograd.grad(ours.sum(), logits)[0]
    grad_ref = torch.autograd.grad(reference.sum(), logits)[0]
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-4, atol=1e-6)


def test_entropy_from_logits_ignores_minus_inf_entries():
    logits = torch.tensor([[[0.0, 1.0, float("-inf"), 2.0]]], requires_grad=True)
    finite = [0.0, 1.0, 2.0]
    z = sum(math.exp(v) for v in finite)
    expected = -sum(math.exp(v) / z * (v - math.log(z)) for v in finite)
    ours = entropy_from_logits(logits)
    assert ours.item() == pytest.approx(expected, rel=1e-6)
    ours.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_temperature_is_applied_inside_the_chunks_values_and_gradients(temperature):
    torch.manual_seed(4)
    logits = (2 * torch.randn(3, 4, 9, dtype=torch.float64)).requires_grad_()
    labels = torch.randint(0, 9, (3, 4))
    scaled = logits / temperature
    ref_lp = torch.log_softmax(scaled, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    ref_entropy = -(torch.softmax(scaled, -1) * torch.log_softmax(scaled, -1)).sum(-1)
    ours_lp = logprobs_from_logits(logits, labels, chunk_rows=5, temperature=temperature)
    ours_entropy = entropy_from_logits(logits, chunk_rows=5, temperature=temperature)
    torch.testing.assert_close(ours_lp, ref_lp)
    torch.testing.assert_close(ours_entropy, ref_entropy)
    assert torch.autograd.gradcheck(lambda x: logprobs_from_logits(x, labels, 5, temperature), (logits,))
    assert torch.autograd.gradcheck(lambda x: entropy_from_logits(x, 5, temperature), (logits,))
    greedy = logprobs_from_logits(logits, labels, temperature=0.0)  # greedy sampling: logits unscaled
    torch.testing.assert_close(greedy, torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1))


def fp32_tensor_sizes(fn) -> list[int]:
    """Run ``fn()`` and return the element count of every fp32 tensor an op produced (forward and backward)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    sizes: list[int] = []

    class Tally(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for item in tree_flatten(out)[0]:
                if isinstance(item, torch.Tensor) and item.dtype == torch.float32:
                    sizes.append(item.numel())
            return out

    with Tally():
        fn()
    return sizes


def test_bf16_logits_are_upcast_one_chunk_at_a_time():
    """Values and gradients equal the fp32 reference, but no fp32 tensor larger than one chunk is made."""
    torch.manual_seed(5)
    bs, length, vocab, chunk = 4, 6, 50, 3
    logits = torch.randn(bs, length, vocab).to(torch.bfloat16).requires_grad_()
    labels = torch.randint(0, vocab, (bs, length))
    weights = torch.randn(bs, length)

    def run():
        lp = logprobs_from_logits(logits, labels, chunk_rows=chunk, temperature=0.8)
        entropy = entropy_from_logits(logits, chunk_rows=chunk, temperature=0.8)
        ((lp + 0.1 * entropy) * weights).sum().backward()
        return lp, entropy

    sizes = fp32_tensor_sizes(run)
    assert max(sizes) <= chunk * vocab < bs * length * vocab
    reference = logits.detach().float().requires_grad_()
    scaled = reference / 0.8
    ref_lp = torch.log_softmax(scaled, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    ref_entropy = -(torch.softmax(scaled, -1) * torch.log_softmax(scaled, -1)).sum(-1)
    ((ref_lp + 0.1 * ref_entropy) * weights).sum().backward()
    logits.grad = None
    lp, entropy = run()
    torch.testing.assert_close(lp, ref_lp, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(entropy, ref_entropy, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits.grad.float(), reference.grad, rtol=2e-2, atol=1e-2)


def _random_masked(seed):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(5, 6, generator=generator)
    mask = _prefix_mask([1, 6, 3, 2, 5], 6)
    return values, mask


def test_masked_sum_and_mean_match_loops():
    values, mask = _random_masked(4)
    values[0, 3] = float("nan")  # masked-out garbage must not leak
    rows = [[v for v, m in zip(vr, mr) if m] for vr, mr in zip(values.tolist(), mask.tolist())]
    flat = [v for row in rows for v in row]
    assert masked_sum(values, mask).item() == pytest.approx(sum(flat), rel=1e-5)
    assert masked_mean(values, mask).item() == pytest.approx(sum(flat) / len(flat), rel=1e-5)
    torch.testing.assert_close(masked_sum(values, mask, dim=-1), torch.tensor([sum(r) for r in rows]))
    torch.testing.assert_close(masked_mean(values, mask, dim=-1), torch.tensor([sum(r) / len(r) for r in rows]))
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0


def test_masked_var_and_whiten_match_statistics_module():
    values, mask = _random_masked(5)
    flat = [v for vr, mr in zip(values.tolist(), mask.tolist()) for v, m in zip(vr, mr) if m]
    assert masked_var(values, mask).item() == pytest.approx(statistics.variance(flat), rel=1e-5)
    assert masked_var(values, mask, unbiased=False).item() == pytest.approx(statistics.pvariance(flat), rel=1e-5)

    mean, std = statistics.mean(flat), math.sqrt(statistics.variance(flat) + 1e-8)
    whitened = masked_whiten(values, mask)
    unshifted = masked_whiten(values, mask, shift_mean=False)
    for i in range(values.size(0)):
        for t in range(values.size(1)):
            expected = (values[i, t].item() - mean) / std
            assert whitened[i, t].item() == pytest.approx(expected, rel=1e-4, abs=1e-5)
            assert unshifted[i, t].item() == pytest.approx(expected + mean, rel=1e-4, abs=1e-5)


def test_masked_var_rejects_too_few_valid_positions():
    values = torch.randn(2, 3)
    with pytest.raises(ValueError, match="no valid position"):
        masked_var(values, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="two valid positions"):
        masked_var(values, torch.tensor([[1, 0, 0], [0, 0, 0]]))


def _reference_response_mask(ids, eos_ids):
    out = []
    for row in ids:
        mask_row, seen = [], False
        for token in row:
            mask_row.append(0 if seen else 1)
            seen = seen or token in eos_ids
        out.append(mask_row)
    return out


@pytest.mark.parametrize("eos", [2, [2, 7]])
def test_get_response_mask_matches_loop(eos):
    torch.manual_seed(6)
    ids = torch.randint(0, 9, (8, 10))
    ids[0, 0] = 2  # EOS first: exactly one valid token
    ids[1] = torch.tensor([3, 4, 5, 6, 3, 4, 5, 6, 3, 4])  # no EOS at all
    mask = get_response_mask(ids, eos, dtype=torch.float32)
    eos_ids = {eos} if isinstance(eos, int) else set(eos)
    assert mask.dtype == torch.float32
    assert mask.tolist() == _reference_response_mask(ids.tolist(), eos_ids)
    assert mask[0].sum().item() == 1 and mask[1].sum().item() == 10


def test_pad_2d_list_to_tensor_right_left_and_errors():
    rows = [[1, 2, 3], [4], []]
    right = pad_2d_list_to_tensor(rows, pad_value=0)
    left = pad_2d_list_to_tensor(rows, pad_value=-1, left_pad=True, max_length=4)
    assert right.tolist() == [[1, 2, 3], [4, 0, 0], [0, 0, 0]]
    assert left.tolist() == [[-1, 1, 2, 3], [-1, -1, -1, 4], [-1, -1, -1, -1]]
    with pytest.raises(ValueError, match="row 0"):
        pad_2d_list_to_tensor(rows, pad_value=0, max_length=2)
