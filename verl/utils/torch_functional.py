"""Small tensor helpers shared by the actor, the critic and the RL algorithms (pure torch).

Shapes: ``bs`` = batch size, ``T`` = sequence (or response) length, ``V`` = vocabulary size.
Masks hold 1 for valid positions and 0 for padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch.autograd.function import once_differentiable

# One chunk of rows holds at most this many logits in fp32 (64 Mi elements = 256 MiB).
_CHUNK_ELEMENTS = 1 << 26


def _rows_per_chunk(vocab_size: int, chunk_rows: Optional[int]) -> int:
    if chunk_rows is not None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        return chunk_rows
    return max(1, _CHUNK_ELEMENTS // max(vocab_size, 1))


class _LogProbsFromLogits(torch.autograd.Function):
    """log_softmax(logits / T)[label] row by row (and, on request, the entropy as a detached by-product);
    saves only the logits and the per-row logsumexp.

    A plain ``(logits.float() / T).log_softmax(-1)`` keeps full (rows, V) fp32 copies alive; here each
    chunk is upcast, scaled, used and dropped, in the forward and again in the backward pass, which writes
    the gradient in place when the logits are already fp32.
    """

    @staticmethod
    def forward(ctx, logits, labels, chunk_rows: int, temperature: float, with_entropy: bool):
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        log_probs = torch.empty(labels.shape, dtype=compute_dtype, device=logits.device)
        logsumexp = torch.empty_like(log_probs)
        entropy = torch.empty_like(log_probs) if with_entropy else None
        for start in range(0, logits.size(0), chunk_rows):
            rows = slice(start, start + chunk_rows)
            chunk = _scaled_chunk(logits[rows], compute_dtype, temperature)
            logsumexp[rows] = torch.logsumexp(chunk, dim=-1)
            log_probs[rows] = chunk.gather(-1, labels[rows].unsqueeze(-1)).squeeze(-1) - logsumexp[rows]
            if with_entropy:  # H = logsumexp(y) - sum_v p_v y_v; a -inf logit gives 0 * -inf = nan: skipped
                weighted = torch.sub(chunk, logsumexp[rows].unsqueeze(-1)).exp_().mul_(chunk)
                entropy[rows] = logsumexp[rows] - weighted.nansum(-1)
        ctx.save_for_backward(logits, labels, logsumexp)
        ctx.chunk_rows, ctx.temperature = chunk_rows, temperature
        if with_entropy:
            ctx.mark_non_differentiable(entropy)
            return log_probs, entropy
        return log_probs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor, *_):
        logits, labels, logsumexp = ctx.saved_tensors
        temperature = ctx.temperature
        grad_logits = torch.empty_like(logits)
        in_place = logits.dtype == logsumexp.dtype
        for start in range(0, logits.size(0), ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            grad_rows = grad_output[rows].to(logsumexp.dtype).unsqueeze(-1) / temperature
            # softmax(y / T) = exp((y - T lse) / T), written straight into the gradient's rows when no upcast
            out = grad_logits[rows] if in_place else torch.empty_like(logits[rows], dtype=logsumexp.dtype)
            torch.sub(logits[rows].to(logsumexp.dtype), logsumexp[rows].unsqueeze(-1) * temperature, out=out)
            if temperature != 1.0:
                out.div_(temperature)
            out.exp_().mul_(-grad_rows)  # d(-logsumexp)/d logits = -softmax / T
            out.scatter_add_(-1, labels[rows].unsqueeze(-1), grad_rows)  # + one-hot(label) / T
            if not in_place:
                grad_logits[rows] = out.to(logits.dtype)
        return grad_logits, None, None, None, None


def _scaled_chunk(chunk: torch.Tensor, dtype: torch.dtype, temperature: float) -> torch.Tensor:
    """One chunk of logits upcast to ``dtype`` and divided by ``temperature`` (skipped for 1)."""
    chunk = chunk.to(dtype)
    return chunk if temperature == 1.0 else chunk / temperature


def _check_temperature(temperature: float) -> float:
    """Sampling temperature of the logits; <= 0 (greedy) leaves them unscaled."""
    return float(temperature) if temperature > 0 else 1.0


def _log_probs_pass(logits, labels, chunk_rows, temperature, with_entropy: bool, caller: str):
    """Flatten (bs, T, V) logits and (bs, T) labels for ``_LogProbsFromLogits`` (shapes checked once, here)."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"{caller}: logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    vocab_size = logits.size(-1)
    rows = _rows_per_chunk(vocab_size, chunk_rows)
    flat = (logits.reshape(-1, vocab_size), labels.reshape(-1).long())
    return _LogProbsFromLogits.apply(*flat, rows, _check_temperature(temperature), with_entropy)


def logprobs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, chunk_rows: Optional[int] = None, temperature: float = 1.0
) -> torch.Tensor:
    """Log-probability of each label under the softmax of ``logits / temperature``.

    Args:
        logits: (bs, T, V) (any leading shape), any float dtype; kept in that dtype (e.g. bf16).
        labels: (bs, T) token ids in [0, V).
        chunk_rows: rows (positions) upcast to fp32 at once; default keeps a chunk near 256 MiB.
        temperature: divides the logits chunk by chunk, in fp32; <= 0 means 1 (greedy sampling).

    Returns:
        (bs, T) log-probs in fp32 (fp64 for fp64 logits). Differentiable w.r.t. ``logits``; no full
        (bs, T, V) fp32 tensor is ever made.
    """
    log_probs = _log_probs_pass(logits, labels, chunk_rows, temperature, False, "logprobs_from_logits")
    return log_probs.view(labels.shape)


def logprobs_and_entropy(
    logits: torch.Tensor, labels: torch.Tensor, chunk_rows: Optional[int] = None, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``logprobs_from_logits`` and, from the same pass over each chunk, the entropy of softmax(logits / T)
    (both (bs, T) fp32). Only the log-probs carry a gradient: the entropy is a metric here (an entropy bonus
    needs :func:`entropy_from_logits`). Saves the separate pass (and its copy of the logits) of computing both."""
    log_probs, entropy = _log_probs_pass(logits, labels, chunk_rows, temperature, True, "logprobs_and_entropy")
    return log_probs.view(labels.shape), entropy.view(labels.shape)


class _EntropyFromLogits(torch.autograd.Function):
    """Entropy of softmax(logits / T) row by row; saves only the logits (each chunk recomputed in backward)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, chunk_rows: int, temperature: float) -> torch.Tensor:
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        entropy = torch.empty(logits.shape[:-1], dtype=compute_dtype, device=logits.device)
        for start in range(0, logits.size(0), chunk_rows):
            rows = slice(start, start + chunk_rows)
            chunk = _scaled_chunk(logits[rows], compute_dtype, temperature)
            probs = torch.softmax(chunk, dim=-1)
            finite_chunk = chunk.masked_fill(chunk == float("-inf"), 0.0)
            entropy[rows] = torch.logsumexp(chunk, dim=-1) - (probs * finite_chunk).sum(-1)
        ctx.save_for_backward(logits)
        ctx.chunk_rows, ctx.temperature, ctx.compute_dtype = chunk_rows, temperature, compute_dtype
        return entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        (logits,) = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        for start in range(0, logits.size(0), ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            chunk = _scaled_chunk(logits[rows], ctx.compute_dtype, ctx.temperature)
            probs = torch.softmax(chunk, dim=-1)
            finite_chunk = chunk.masked_fill(chunk == float("-inf"), 0.0)
            centered = finite_chunk - (probs * finite_chunk).sum(-1, keepdim=True)
            grad_rows = grad_output[rows].to(ctx.compute_dtype).unsqueeze(-1) / ctx.temperature
            grad_logits[rows] = (-probs * centered * grad_rows).to(logits.dtype)  # dH/dy = -p (y - E_p[y])
        return grad_logits, None, None


def entropy_from_logits(
    logits: torch.Tensor, chunk_rows: Optional[int] = None, temperature: float = 1.0
) -> torch.Tensor:
    """Entropy -sum_v p log p of softmax(logits / temperature) over the last dim; (bs, T, V) -> (bs, T) fp32.

    Computed as logsumexp(y) - sum_v softmax(y)_v y_v chunk by chunk (each chunk upcast on its own);
    ``-inf`` logits (masked vocabulary entries) contribute 0. Differentiable w.r.t. ``logits``.
    """
    vocab_size = logits.size(-1)
    flat_logits = logits.reshape(-1, vocab_size)
    rows = _rows_per_chunk(vocab_size, chunk_rows)
    entropy = _EntropyFromLogits.apply(flat_logits, rows, _check_temperature(temperature))
    return entropy.view(logits.shape[:-1])


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Sum of ``values * mask`` over ``dim`` (all elements if None); NaN/inf at masked-out places are ignored."""
    masked = torch.where(mask != 0, values * mask, torch.zeros_like(values))
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(
    values: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None, eps: float = 1e-8
) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is set; 0 where the mask is all zero.

    The denominator is ``max(mask.sum(dim), eps)``, exact whenever at least one position is valid.
    """
    total = masked_sum(values, mask, dim)
    denominator = mask.sum() if dim is None else mask.sum(dim)
    return total / denominator.to(total.dtype).clamp(min=eps)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` over all valid positions (a scalar); Bessel-corrected when ``unbiased``."""
    mask_sum = mask.sum()
    if mask_sum == 0:
        raise ValueError("masked_var: the mask has no valid position")
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        if mask_sum == 1:
            raise ValueError("masked_var: unbiased variance needs at least two valid positions, the mask has one")
        variance = variance * mask_sum / (mask_sum - 1)
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(values - mean) / sqrt(var + eps) with mean and unbiased var over the valid positions.

    With ``shift_mean=False`` the mean is added back (only the scale changes). Masked-out positions
    are transformed too; multiply by the mask afterwards if they must be zero.
    """
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    return whitened if shift_mean else whitened + mean


def get_response_mask(
    response_ids: torch.Tensor, eos_token_id: Union[int, Sequence[int]], dtype: torch.dtype = torch.long
) -> torch.Tensor:
    """(bs, R) mask: 1 up to and including the first EOS token of each row, 0 after it.

    A row without any EOS is valid to its end. ``eos_token_id`` may be one id or a list of ids.
    """
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not eos_ids:
        raise ValueError("get_response_mask: eos_token_id is an empty list")
    is_eos = torch.isin(response_ids, torch.tensor(eos_ids, device=response_ids.device)).long()
    eos_before = torch.cumsum(is_eos, dim=-1) - is_eos  # EOS tokens strictly before each position
    return (eos_before == 0).to(dtype)


def pad_2d_list_to_tensor(
    rows: Sequence[Sequence[Union[int, float]]],
    pad_value: Union[int, float],
    left_pad: bool = False,
    max_length: Optional[int] = None,
    dtype: torch.dtype = torch.long,
) -> torch.Tensor:
    """Pad ragged rows to one (len(rows), max_length) tensor, on the right (default) or the left.

    ``max_length`` defaults to the longest row; a row longer than ``max_length`` raises ValueError.
    """
    longest = max((len(row) for row in rows), default=0)
    width = longest if max_length is None else max_length
    out = torch.full((len(rows), width), pad_value, dtype=dtype)
    for index, row in enumerate(rows):
        if len(row) > width:
            raise ValueError(f"pad_2d_list_to_tensor: row {index} has {len(row)} items > max_length {width}")
        if len(row) == 0:
            continue
        values = torch.as_tensor(list(row), dtype=dtype)
        if left_pad:
            out[index, width - len(row) :] = values
        else:
            out[index, : len(row)] = values
    return out
