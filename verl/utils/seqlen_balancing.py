"""Token-aware batching: balance data-parallel ranks, pack micro-batches under a token budget, trim padding.

Cost model: a padded micro-batch of ``b`` rows whose longest row has ``L`` real tokens costs ``b * L``
tokens of compute, so partitions are balanced on that, not on the raw token sum.
"""

from __future__ import annotations

import heapq

import torch


def balanced_partitions(lengths: list[int], k: int, equal_size: bool = True) -> list[list[int]]:
    """Split indices into ``k`` groups with near-equal token sums (longest-first greedy).

    With ``equal_size`` every group gets ``len(lengths) / k`` items (which must divide), as data-parallel
    chunks must. Each group's indices are returned sorted.
    """
    n = len(lengths)
    if k < 1:
        raise ValueError(f"need k >= 1 partitions, got {k}")
    if equal_size and n % k:
        raise ValueError(f"{n} items cannot be split into {k} equal groups")
    capacity = n // k if equal_size else n
    heap = [(0, g) for g in range(k)]
    groups: list[list[int]] = [[] for _ in range(k)]
    for index in sorted(range(n), key=lambda i: -lengths[i]):
        skipped = []
        total, g = heapq.heappop(heap)
        while len(groups[g]) >= capacity:
            skipped.append((total, g))
            total, g = heapq.heappop(heap)
        groups[g].append(index)
        heapq.heappush(heap, (total + lengths[index], g))
        for item in skipped:
            heapq.heappush(heap, item)
    return [sorted(g) for g in groups]


def dp_balance_order(lengths: list[int], world_size: int) -> list[int]:
    """A permutation so that consecutive equal chunks (one per rank) carry similar token counts."""
    return [i for group in balanced_partitions(lengths, world_size, equal_size=True) for i in group]


def token_budget_micro_batches(lengths: list[int], max_tokens: int, min_count: int = 1) -> list[list[int]]:
    """Pack indices into micro-batches whose padded cost (rows x longest row) stays within ``max_tokens``.

    Rows are taken longest first, so similar lengths share a micro-batch; at least ``min_count``
    micro-batches are returned (ranks of an FSDP group must run the same number of passes). A single row
    longer than the budget gets a micro-batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        if current and (len(current) + 1) * longest > max_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    while len(batches) < min_count:
        largest = max(range(len(batches)), key=lambda b: len(batches[b]))
        if len(batches[largest]) < 2:
            batches.append([])
            continue
        half = len(batches[largest]) // 2
        batches.append(batches[largest][half:])
        batches[largest] = batches[largest][:half]
    return batches


def restore_order(chunks: list[torch.Tensor], batches: list[list[int]]) -> torch.Tensor:
    """Concatenate per-micro-batch outputs and put row ``i`` back at position ``i``."""
    flat = [i for batch in batches for i in batch]
    stacked = torch.cat([c for c in chunks if c.shape[0]], dim=0)
    inverse = torch.empty(len(flat), dtype=torch.long)
    inverse[torch.tensor(flat, dtype=torch.long)] = torch.arange(len(flat))
    return stacked[inverse]


def trim_padding(batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Drop all-padding columns: left of the prompts and right of the responses.

    ``batch`` holds input_ids/attention_mask/position_ids (bs, P+R) and responses/response_mask (and any
    other (bs, R) tensors). Returns the trimmed dict and the original response length R, so per-token
    outputs can be padded back with ``pad_response``.
    """
    response_length = batch["responses"].shape[1]
    prompt_length = batch["input_ids"].shape[1] - response_length
    attention = batch["attention_mask"]
    valid_prompt = attention[:, :prompt_length].any(0).nonzero()
    start = int(valid_prompt.min()) if len(valid_prompt) else prompt_length
    valid_response = (
        batch["response_mask"].any(0).nonzero()
        if "response_mask" in batch
        else attention[:, prompt_length:].any(0).nonzero()
    )
    keep = int(valid_response.max()) + 1 if len(valid_response) else 1
    trimmed = {}
    for key, value in batch.items():
        if value.dim() == 2 and value.shape[1] == prompt_length + response_length:
            trimmed[key] = value[:, start : prompt_length + keep]
        elif value.dim() == 2 and value.shape[1] == response_length:
            trimmed[key] = value[:, :keep]
        else:
            trimmed[key] = value
    return trimmed, response_length


def pad_response(values: torch.Tensor, response_length: int) -> torch.Tensor:
    """(bs, r) -> (bs, response_length) with zeros on the right."""
    if values.shape[1] == response_length:
        return values
    return torch.nn.functional.pad(values, (0, response_length - values.shape[1]))
