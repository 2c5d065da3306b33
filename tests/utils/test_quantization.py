"""RTN quantization against hand computations, and the in-place model pass."""

from __future__ import annotations

import pytest
import torch

from verl.utils.quantization import quantize_linear_weights_, rtn_quantize

# One row: a full group of 4 and a remainder group of 2 (group_size=4).
ROW = [[-0.9, -0.2, 0.35, 2.0, 0.4, -0.5]]


def test_asymmetric_rtn_matches_a_hand_computation():
    # group 1: min -0.9, max 2.0 -> scale 2.9/3, zero = -round(-0.9 / scale) = -round(-0.931) = 1;
    #   q = round(w / scale) + 1 = [0, 1, 1, 3] -> (q - 1) * scale = [-scale, 0, 0, 2 scale]
    # group 2 (the remainder): min -0.5, max 0.4 -> scale 0.3, zero = -round(-1.667) = 2;
    #   q = round([1.333, -1.667]) + 2 = [3, 0] -> [0.3, -0.6]
    scale = 2.9 / 3
    expected = torch.tensor([[-scale, 0.0, 0.0, 2 * scale, 0.3, -0.6]])
    result = rtn_quantize(torch.tensor(ROW), bits=2, group_size=4)
    torch.testing.assert_close(result, expected)


def test_symmetric_rtn_matches_a_hand_computation():
    # group 1: absmax 2.0, 3 bits -> levels -4..3, scale 2/3; w / scale = [-1.35, -0.3, 0.525, 3] -> [-1, 0, 1, 3]
    # group 2: absmax 0.5 -> scale 0.5/3; w / scale = [2.4, -3] -> [2, -3]
    expected = torch.tensor([[-2 / 3, 0.0, 2 / 3, 2.0, 2 * 0.5 / 3, -0.5]])
    result = rtn_quantize(torch.tensor(ROW), bits=3, group_size=4, symmetric=True)
    torch.testing.assert_close(result, expected)


def test_groups_hold_at_most_two_to_the_bits_values_and_errors_stay_within_half_a_step():
    weight = torch.randn(8, 300, generator=torch.Generator().manual_seed(0))
    for bits in (4, 8):
        result = rtn_quantize(weight, bits=bits, group_size=128)
        assert result.shape == weight.shape and result.dtype == weight.dtype
        for start in (0, 128, 256):  # groups of 128, 128 and the remainder 44
            group, rounded = weight[:, start : start + 128], result[:, start : start + 128]
            step = (group.amax(1) - group.amin(1)) / (2**bits - 1)
            assert all(len(torch.unique(r)) <= 2**bits for r in rounded)
            assert ((rounded - group).abs() <= step[:, None] / 2 + 1e-6).all()
    assert not torch.equal(rtn_quantize(weight, 4), weight)
    torch.testing.assert_close(rtn_quantize(weight, 8, group_size=-1), rtn_quantize(weight, 8, group_size=300))


def test_one_signed_and_constant_groups_keep_their_values():
    # the range is widened to include 0: [0.45, 0.6] -> range [0, 0.6], scale 0.6/15 = 0.04, q = [11.25 -> 11, 15]
    torch.testing.assert_close(rtn_quantize(torch.tensor([[0.45, 0.6]]), bits=4), torch.tensor([[0.44, 0.6]]))
    for symmetric in (False, True):
        constant = torch.full((2, 4), 0.25, dtype=torch.bfloat16)
        result = rtn_quantize(constant, bits=4, group_size=2, symmetric=symmetric)
        assert result.dtype == torch.bfloat16 and torch.equal(result, constant)
        assert torch.equal(rtn_quantize(torch.zeros(1, 4), bits=4, symmetric=symmetric), torch.zeros(1, 4))


@pytest.mark.parametrize(
    "kwargs, message", [({"bits": 1}, "bits"), ({"bits": 4, "group_size": 0}, "group_size"), ({"bits": 4.0}, "bits")]
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rtn_quantize(torch.ones(2, 4), **kwargs)


def test_quantize_linear_weights_skips_the_head_and_embeddings():
    from verl.utils.models import build_tiny_model, build_tiny_tokenizer

    model = build_tiny_model(build_tiny_tokenizer(), seed=1)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    names = quantize_linear_weights_(model, bits=4, group_size=32)
    assert names and all(not n.endswith("lm_head") for n in names)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {f"{n}.weight" for n in names}  # biases, norms, embeddings and the head untouched
    layer = dict(model.named_modules())[names[0]]
    torch.testing.assert_close(layer.weight, rtn_quantize(before[f"{names[0]}.weight"], 4, 32))
