"""Unlearning losses (RS / RT, GA, GD, NPO, NPO+GD, SimNPO, DPO, IdkDPO) on per-sequence log-probs.

Every loss is one function registered with ``@unlearning_loss(name, streams=..., ref_streams=...)``.
It receives, for each data *stream* it declares (``forget``, ``retain``, ``retain_refusal``, ``chosen``,
``rejected``), a ``StreamLogps`` of one micro-batch:

* ``logps``     (bs,) sum of the current model's log-probs over the row's loss tokens;
* ``ntokens``   (bs,) number of loss tokens in the row;
* ``ref_logps`` (bs,) the same sum under the frozen reference (only for ``ref_streams``).

and a ``Normalizer`` with the *global* loss-token count of each stream and the global row count of the
optimizer step, each divided by the world size. A loss returns ``(loss, metrics)`` where ``loss`` is
this micro-batch's share: sums over its rows divided by those normalizers. Summing the shares over
micro-batches (gradient accumulation) and averaging gradients over ranks (FSDP) then gives exactly the
gradient of the full-batch loss. Metrics follow the same convention (sum over micro-batches, mean over
ranks = the batch mean). Keyword-only arguments with defaults are the loss's parameters (``loss.params``).

Formulas (means over the step's rows, or tokens for "token-mean"):

=========  =====================================================================================
sft / rt   NLL of the response tokens, token-mean (rt = sft on generic refusals)
sft_retain sft + retain_weight * NLL(retain)   (RS with retain anchors: answered boundary questions)
sft_retain_ul  sft_retain + ul_weight * mean(-log(1 - p(first refusal token | retain prompt)))
ga         - NLL(forget), token-mean
gd         - NLL(forget) + retain_weight * NLL(retain)
npo        -2/beta * mean(logsigmoid(-beta * (logpi - logpi_ref)))   (per-sequence summed log-probs)
npo_gd     npo + retain_weight * NLL(retain)
simnpo     -2/beta * mean(logsigmoid(-beta * logpi / |y| - gamma))  (no reference)
dpo        -mean(logsigmoid(beta * ((logpi_c - logref_c) - (logpi_r - logref_r))))
idkdpo     dpo with chosen = a refusal
=========  =====================================================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F

from verl.utils.registry import Registry

UL_EPS = 1e-4
"""sft_retain_ul scores p(refusal start) as p * (1 - UL_EPS): at most -log(UL_EPS) = 9.2 per row."""

STREAMS = ("forget", "retain", "retain_refusal", "chosen", "rejected")


@dataclass
class StreamLogps:
    logps: torch.Tensor
    """(bs,) summed log-probs of the loss tokens under the current model (differentiable)."""
    ntokens: torch.Tensor
    """(bs,) loss tokens per row."""
    ref_logps: Optional[torch.Tensor] = None
    """(bs,) summed log-probs under the reference model (no grad), when the loss needs them."""


@dataclass
class Normalizer:
    tokens: dict[str, float] = field(default_factory=dict)
    """stream -> loss tokens of the whole optimizer step over all ranks / world size."""
    sequences: float = 1.0
    """rows of the whole optimizer step over all ranks / world size."""

    @classmethod
    def of_batch(cls, streams: dict[str, StreamLogps]) -> Normalizer:
        """The normalizer of one batch seen as a whole (single process, no accumulation)."""
        tokens = {name: max(float(s.ntokens.sum()), 1.0) for name, s in streams.items()}
        rows = max((len(s.logps) for s in streams.values()), default=1)
        return cls(tokens=tokens, sequences=float(max(rows, 1)))


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
    streams: tuple[str, ...]
    """Data streams the loss reads."""
    ref_streams: tuple[str, ...]
    """Streams that need reference log-probs (computed once before training)."""
    refusals: Optional[str]
    """Refusal mode used when the loss's responses are built from refusal templates: target, generic, or None."""
    defaults: dict[str, Any]
    """Parameters and their defaults."""

    @property
    def needs_ref(self) -> bool:
        return bool(self.ref_streams)

    def bind(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults updated by ``params``; an unknown parameter is a one-line ``ValueError`` naming it."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            allowed = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(f"unknown parameter {unknown[0]!r} for unlearning loss {self.name!r}; allowed: {allowed}")
        return {**self.defaults, **{k: float(v) for k, v in params.items()}}

    def __call__(self, streams: dict[str, StreamLogps], norm: Normalizer, **params: Any):
        missing = [s for s in self.streams if s not in streams]
        if missing:
            raise ValueError(f"unlearning loss {self.name!r} needs stream(s) {missing}; got {sorted(streams)}")
        for s in self.ref_streams:
            if streams[s].ref_logps is None:
                raise ValueError(f"unlearning loss {self.name!r} needs reference log-probs for stream {s!r}")
        return self.fn(streams, norm, **self.bind(params))


UNLEARN_LOSSES: Registry[LossSpec] = Registry("unlearning loss")


def unlearning_loss(
    name: str, streams: tuple[str, ...] = ("forget",), ref_streams: tuple[str, ...] = (), refusals: str | None = None
):
    """Register ``fn(streams, norm, *, params...)`` as ``name`` (its keyword-only defaults are the parameters)."""

    def decorator(fn: Callable) -> Callable:
        defaults = {p.name: p.default for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY}
        UNLEARN_LOSSES.register(name)(LossSpec(name, fn, tuple(streams), tuple(ref_streams), refusals, defaults))
        return fn

    return decorator


def get_loss(name: str) -> LossSpec:
    """The registered loss ``name`` (``KeyError`` listing the allowed names otherwise)."""
    return UNLEARN_LOSSES.get(name)


# ----------------------------------------------------------------------------- shared terms
def token_mean_nll(s: StreamLogps, norm: Normalizer, stream: str) -> torch.Tensor:
    """This micro-batch's share of the stream's token-mean NLL."""
    return -s.logps.sum() / norm.tokens[stream]


def _share(values: torch.Tensor, norm: Normalizer) -> torch.Tensor:
    """This micro-batch's share of a per-row mean."""
    return values.sum() / norm.sequences


def _npo_term(s: StreamLogps, norm: Normalizer, beta: float) -> tuple[torch.Tensor, dict]:
    log_ratio = s.logps - s.ref_logps
    per_row = -F.logsigmoid(-beta * log_ratio) * 2.0 / beta
    return _share(per_row, norm), {"npo/log_ratio": _share(log_ratio.detach(), norm)}


# ----------------------------------------------------------------------------- losses
@unlearning_loss("sft", refusals="target")
def sft_loss(streams: dict[str, StreamLogps], norm: Normalizer) -> tuple[torch.Tensor, dict]:
    """Rejection Steering: next-token NLL of the (refusal) response tokens."""
    nll = token_mean_nll(streams["forget"], norm, "forget")
    return nll, {"forget/nll": nll.detach()}


@unlearning_loss("sft_retain", streams=("forget", "retain"), refusals="target")
def sft_retain_loss(
    streams: dict[str, StreamLogps], norm: Normalizer, *, retain_weight: float = 1.0
) -> tuple[torch.Tensor, dict]:
    """RS with retain anchors: refusal NLL on forget questions + ``retain_weight`` x answer NLL on retain
    questions (e.g. RULE's boundary questions about similar entities). Not the paper's RS (forget data only):
    for small models whose refusals otherwise spread to every question about a person."""
    forget = token_mean_nll(streams["forget"], norm, "forget")
    retain = token_mean_nll(streams["retain"], norm, "retain")
    return forget + retain_weight * retain, {"forget/nll": forget.detach(), "retain/nll": retain.detach()}


@unlearning_loss("sft_retain_ul", streams=("forget", "retain", "retain_refusal"), refusals="target")
def sft_retain_ul_loss(
    streams: dict[str, StreamLogps], norm: Normalizer, *, retain_weight: float = 1.0, ul_weight: float = 1.0
) -> tuple[torch.Tensor, dict]:
    """sft_retain plus unlikelihood of refusing a retain question: ``retain_refusal`` holds each retain
    prompt followed by one of the forget set's refusals, scored on the refusal's first token only (the
    token that decides between refusing and answering), so its ``logps`` is ``log p(refusal starts)``.
    The term ``-log(1 - p)`` is ~0 where the model would not refuse and grows as it would."""
    loss, metrics = sft_retain_loss(streams, norm, retain_weight=retain_weight)
    start_prob = streams["retain_refusal"].logps.exp()
    # scaled below 1 so that p = 1 still gives a finite loss and a gradient (a clamp would give none)
    unlikelihood = _share(-torch.log1p(-start_prob * (1 - UL_EPS)), norm)
    metrics["retain/refusal_start_prob"] = _share(start_prob.detach(), norm)
    metrics["retain/unlikelihood"] = unlikelihood.detach()
    return loss + ul_weight * unlikelihood, metrics


@unlearning_loss("rt", refusals="generic")
def rt_loss(streams: dict[str, StreamLogps], norm: Normalizer) -> tuple[torch.Tensor, dict]:
    """RWKU's RT baseline: the SFT loss, on generic refusals by default."""
    return sft_loss(streams, norm)


@unlearning_loss("ga")
def ga_loss(streams: dict[str, StreamLogps], norm: Normalizer) -> tuple[torch.Tensor, dict]:
    """Gradient ascent: minimise the negated NLL of the forget corpus."""
    nll = token_mean_nll(streams["forget"], norm, "forget")
    return -nll, {"forget/nll": nll.detach()}


@unlearning_loss("gd", streams=("forget", "retain"))
def gd_loss(
    streams: dict[str, StreamLogps], norm: Normalizer, *, retain_weight: float = 1.0
) -> tuple[torch.Tensor, dict]:
    """Gradient difference: ascent on forget + ``retain_weight`` x descent on retain."""
    forget = token_mean_nll(streams["forget"], norm, "forget")
    retain = token_mean_nll(streams["retain"], norm, "retain")
    return -forget + retain_weight * retain, {"forget/nll": forget.detach(), "retain/nll": retain.detach()}


@unlearning_loss("npo", ref_streams=("forget",))
def npo_loss(streams: dict[str, StreamLogps], norm: Normalizer, *, beta: float = 0.1) -> tuple[torch.Tensor, dict]:
    """Negative preference optimisation on the forget corpus (reference = the initial model)."""
    loss, metrics = _npo_term(streams["forget"], norm, beta)
    metrics["forget/nll"] = token_mean_nll(streams["forget"], norm, "forget").detach()
    return loss, metrics


@unlearning_loss("npo_gd", streams=("forget", "retain"), ref_streams=("forget",))
def npo_gd_loss(
    streams: dict[str, StreamLogps], norm: Normalizer, *, beta: float = 0.1, retain_weight: float = 1.0
) -> tuple[torch.Tensor, dict]:
    """NPO on forget + ``retain_weight`` x NLL on retain."""
    loss, metrics = _npo_term(streams["forget"], norm, beta)
    retain = token_mean_nll(streams["retain"], norm, "retain")
    metrics["forget/nll"] = token_mean_nll(streams["forget"], norm, "forget").detach()
    metrics["retain/nll"] = retain.detach()
    return loss + retain_weight * retain, metrics


@unlearning_loss("simnpo")
def simnpo_loss(
    streams: dict[str, StreamLogps], norm: Normalizer, *, beta: float = 2.5, gamma: float = 0.0
) -> tuple[torch.Tensor, dict]:
    """SimNPO: NPO without a reference, on the length-normalised log-prob, with margin ``gamma``."""
    s = streams["forget"]
    mean_logp = s.logps / s.ntokens.clamp(min=1)
    per_row = -F.logsigmoid(-beta * mean_logp - gamma) * 2.0 / beta
    return _share(per_row, norm), {
        "forget/nll": token_mean_nll(s, norm, "forget").detach(),
        "simnpo/mean_logp": _share(mean_logp.detach(), norm),
    }


def _dpo(streams: dict[str, StreamLogps], norm: Normalizer, beta: float) -> tuple[torch.Tensor, dict]:
    chosen, rejected = streams["chosen"], streams["rejected"]
    chosen_reward = beta * (chosen.logps - chosen.ref_logps)
    rejected_reward = beta * (rejected.logps - rejected.ref_logps)
    margin = chosen_reward - rejected_reward
    loss = _share(-F.logsigmoid(margin), norm)
    margin = margin.detach()
    return loss, {
        "dpo/margin": _share(margin, norm),
        "dpo/accuracy": _share((margin > 0).float(), norm),
        "dpo/chosen_reward": _share(chosen_reward.detach(), norm),
        "dpo/rejected_reward": _share(rejected_reward.detach(), norm),
        "rejected/nll": token_mean_nll(rejected, norm, "rejected").detach(),
    }


@unlearning_loss("dpo", streams=("chosen", "rejected"), ref_streams=("chosen", "rejected"))
def dpo_loss(streams: dict[str, StreamLogps], norm: Normalizer, *, beta: float = 0.1) -> tuple[torch.Tensor, dict]:
    """DPO (sigmoid loss): prefer ``chosen`` (RWKU: counterfactual bio) over ``rejected`` (the factual one)."""
    return _dpo(streams, norm, beta)


@unlearning_loss("idkdpo", streams=("chosen", "rejected"), ref_streams=("chosen", "rejected"), refusals="target")
def idkdpo_loss(streams: dict[str, StreamLogps], norm: Normalizer, *, beta: float = 0.1) -> tuple[torch.Tensor, dict]:
    """IdkDPO: DPO whose chosen response is a refusal (built from the refusal templates)."""
    return _dpo(streams, norm, beta)
