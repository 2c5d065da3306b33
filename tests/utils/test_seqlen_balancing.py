import random

import pytest
import torch

from verl.utils.seqlen_balancing import (
    balanced_partitions,
    dp_balance_order,
    pad_response,
    restore_order,
    token_budget_micro_batches,
    trim_padding,
)


def test_balanced_partitions_equal_sizes_and_better_than_naive():
    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(64)]
    groups = balanced_partitions(lengths, 4)
    assert sorted(i for g in groups for i in g) == list(range(64))
    assert all(len(g) == 16 for g in groups)
    sums = [sum(lengths[i] for i in g) for g in groups]
    naive = [sum(lengths[i * 16 : (i + 1) * 16]) for i in range(4)]
    assert max(sums) - min(sums) <= max(naive) - min(naive)
    assert max(sums) - min(sums) <= max(lengths)  # greedy LPT bound
    with pytest.raises(ValueError, match="equal groups"):
        balanced_partitions([1, 2, 3], 2)


def test_dp_balance_order_is_a_permutation():
    order = dp_balance_order([10, 1, 1, 10, 5, 5], 2)
    assert sorted(order) == list(range(6))
    chunks = [order[:3], order[3:]]
    sums = [sum([10, 1, 1, 10, 5, 5][i] for i in c) for c in chunks]
    assert sums[0] == sums[1]


def test_token_budget_respected_and_order_restored():
    rng = random.Random(1)
    lengths = [rng.randint(1, 100) for _ in range(50)]
    batches = token_budget_micro_batches(lengths, max_tokens=300)
    assert sorted(i for b in batches for i in b) == list(range(50))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 300 or len(batch) == 1
    forced = token_budget_micro_batches(lengths, max_tokens=10**6, min_count=5)
    assert len(forced) == 5 and sorted(i for b in forced for i in b) == list(range(50))
    values = torch.tensor(lengths, dtype=torch.float32)[:, None]
    chunks = [values[torch.tensor(b)] for b in batches]
    assert torch.equal(restore_order(chunks, batches), values)


def test_trim_padding_drops_only_padding_columns():
    prompt = torch.tensor([[0, 0, 5, 6], [0, 7, 8, 9]])
    prompt_mask = (prompt != 0).long()
    responses = torch.tensor([[1, 2, 0, 0], [3, 0, 0, 0]])
    response_mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    batch = {
        "input_ids": torch.cat([prompt, responses], 1),
        "attention_mask": torch.cat([prompt_mask, response_mask], 1),
        "responses": responses,
        "response_mask": response_mask,
    }
    trimmed, length = trim_padding(batch)
    assert length == 4
    assert trimmed["input_ids"].tolist() == [[0, 5, 6, 1, 2], [7, 8, 9, 3, 0]]
    assert trimmed["responses"].tolist() == [[1, 2], [3, 0]]
    assert pad_response(trimmed["response_mask"], 4).tolist() == response_mask.tolist()
