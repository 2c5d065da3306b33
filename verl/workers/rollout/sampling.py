"""A KV-cached sampling loop over any HF causal LM (the CPU rollout backend's core).

Unlike ``model.generate`` it returns, per sequence, exactly which tokens were generated (stop
strings and EOS handled per row) and the log-probability of each sampled token under the
temperature-scaled distribution, which is what the actor recomputes and what vLLM returns.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from torch import nn

from verl.workers.rollout.kv_cache import reserved_kv_cache


@dataclass
class SamplingSpec:
    max_new_tokens: int = 64
    temperature: float = 1.0
    """0 = greedy."""
    top_p: float = 1.0
    top_k: int = -1
    stop: list[str] = field(default_factory=list)
    eos_token_ids: list[int] = field(default_factory=list)


@dataclass
class SampleOutput:
    responses: torch.Tensor
    """(bs, max_new_tokens) generated ids, right-padded with ``pad_token_id``."""
    response_mask: torch.Tensor
    """(bs, max_new_tokens) 1 for generated tokens (up to and including EOS / the stop string)."""
    log_probs: torch.Tensor
    """(bs, max_new_tokens) log-prob of each generated token at temperature T (0 where masked)."""


COMPACT_AT = 0.75
"""Finished rows leave the batch (and the KV cache) once at most this share of it is still generating: each
step's cost grows with the rows in it, and re-indexing the cache costs about one step's cache append."""


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(bs, seq_len) 0/1 mask -> positions counting only real tokens (left padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (bs, V) logits outside the top-k / nucleus (top-p) set with -inf."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        remove = cumulative - sorted_logits.softmax(-1) > top_p  # keep the first token past top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row of (bs, V) probabilities by inverse CDF (``torch.multinomial`` is ~40x slower on CPU).

    Zero-probability tokens are never drawn: ``searchsorted(..., right=True)`` lands past flat CDF runs.
    """
    cdf = probs.cumsum(-1)
    u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp(max=probs.shape[-1] - 1).squeeze(-1)


def _hit_stop(tokenizer, generated: torch.Tensor, stop: list[str]) -> bool:
    text = tokenizer.decode(generated[-16:], skip_special_tokens=False)
    return any(s in text for s in stop)


def forward_options(model: nn.Module) -> tuple[str, bool]:
    """(the cache keyword: ``cache`` in transformers >= 5.x else ``past_key_values``, whether the forward takes
    ``logits_to_keep``); PEFT models pass keyword arguments through to their base model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def prefill(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache=None):
    """Run left-padded prompts (bs, L) through ``model`` *right*-padded and without a mask.

    Right padding leaves every real token attending only to earlier real tokens under the plain causal mask,
    so attention runs as causal (kernels skip the upper triangle; a padding mask forces the full square, half
    of a long prompt's prefill time). With a ``cache``, the pads' entries sit between each prompt and its
    answer, hidden by the returned mask. Returns the (bs, V) fp32 next-token logits at each prompt's last
    token, the (bs, L) 0/1 mask of the cached prompt tokens and the (bs, 1) position of that last token.
    """
    bs, width = input_ids.shape
    columns = torch.arange(width, device=input_ids.device)
    lengths = attention_mask.long().sum(-1)
    if not torch.equal(attention_mask.long(), (columns[None] >= (width - lengths)[:, None]).long()):
        raise ValueError("prefill() takes left-padded prompts: each attention_mask row must be 0s then 1s")
    if bool((lengths == 0).any()):
        raise ValueError("prefill() got an empty prompt (an attention_mask row of zeros)")
    shifted = input_ids.gather(1, (columns[None] + (width - lengths)[:, None]) % width)  # right-padded
    last = lengths - 1
    cache_key, keeps_logits = forward_options(model)
    kept = torch.unique(last) if keeps_logits else None  # sorted last positions: the only logits needed
    out = model(
        input_ids=shifted,
        position_ids=columns[None].expand(bs, width),
        **({"use_cache": True, cache_key: cache} if cache is not None else {"use_cache": False}),
        **({"logits_to_keep": kept} if keeps_logits else {}),
    )
    column = torch.searchsorted(kept, last) if keeps_logits else last
    logits = out.logits[torch.arange(bs, device=input_ids.device), column].float()
    return logits, (columns[None] < lengths[:, None]).long(), last[:, None]


@torch.no_grad()
def sample(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    spec: SamplingSpec,
    pad_token_id: int,
    tokenizer=None,
    generator: torch.Generator | None = None,
) -> SampleOutput:
    """Generate up to ``spec.max_new_tokens`` tokens for left-padded prompts.

    Args:
        input_ids: (bs, prompt_len) left-padded prompt ids.
        attention_mask: (bs, prompt_len) 1 for real prompt tokens.
        tokenizer: needed only when ``spec.stop`` is not empty.
    """
    if spec.stop and tokenizer is None:
        raise ValueError("stop strings need a tokenizer")
    bs, device = input_ids.shape[0], input_ids.device
    eos = torch.tensor(spec.eos_token_ids or [-1], device=device)
    responses = torch.full((bs, spec.max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    mask = torch.zeros((bs, spec.max_new_tokens), dtype=torch.long, device=device)
    log_probs = torch.zeros((bs, spec.max_new_tokens), dtype=torch.float32, device=device)
    finished = torch.zeros(bs, dtype=torch.bool, device=device)
    live = torch.arange(bs, device=device)  # the original row of each row still in the batch

    cache = reserved_kv_cache(input_ids.shape[1] + spec.max_new_tokens)  # appends in place, no torch.cat
    cache_key, keeps_logits = forward_options(model)
    logits, attn, positions = prefill(model, input_ids, attention_mask, cache)
    extra = {"logits_to_keep": 1} if keeps_logits else {}
    step_ids = None  # (live rows, 1): the token each row sampled last step
    for t in range(spec.max_new_tokens):
        if t > 0:
            out = model(
                input_ids=step_ids,
                attention_mask=attn,
                position_ids=positions,
                use_cache=True,
                **{cache_key: cache},
                **extra,
            )
            cache = getattr(out, cache_key)
            logits = out.logits[:, -1, :].float()
        if spec.temperature > 0:
            scaled = logits / spec.temperature if spec.temperature != 1.0 else logits
            probs = filter_logits(scaled, spec.top_k, spec.top_p).softmax(-1)
            token = sample_categorical(probs, generator)
        else:
            scaled = logits
            token = logits.argmax(-1)
        token_logp = scaled.log_softmax(-1).gather(-1, token[:, None]).squeeze(-1)
        # every row still in the batch is active: a finished row is dropped below, or masked until then
        active = ~finished[live]
        token = torch.where(active, token, torch.full_like(token, pad_token_id))
        responses[live, t] = token
        mask[live, t] = active.long()
        log_probs[live, t] = torch.where(active, token_logp, torch.zeros_like(token_logp))
        finished[live] = finished[live] | (active & torch.isin(token, eos))
        if spec.stop:
            for i in live[active & ~finished[live]].tolist():
                if _hit_stop(tokenizer, responses[i, : t + 1], spec.stop):
                    finished[i] = True
        if bool(finished.all()):
            break
        keep = ~finished[live]
        if int(keep.sum()) <= COMPACT_AT * len(live):  # drop the finished rows: later steps cost less
            rows = keep.nonzero().squeeze(-1)
            cache.reorder_cache(rows)
            live, token, attn, positions = live[rows], token[rows], attn[rows], positions[rows]
        step_ids = token[:, None]
        attn = torch.cat([attn, torch.ones((len(live), 1), dtype=attn.dtype, device=device)], dim=1)
        positions = positions[:, -1:] + 1
    return SampleOutput(responses=responses, response_mask=mask, log_probs=log_probs)
