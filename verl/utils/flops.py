"""The arithmetic a decoder-only LM's pass needs at least: the compute floor of a training step.

For a batch of real sequence lengths ``L_i`` (prompt + response, padding excluded) of which ``R``
positions need logits, one forward pass costs at least

    F = 2 * P_layers * sum_i L_i                                  (every linear of every decoder layer)
      + 2 * 2 * layers * q_dim * sum_i L_i (L_i + 1) / 2            (causal attention: Q K^T and A V)
      + 2 * hidden * vocab * R                                    (the LM head, only where logits are used)

multiply-adds counted as 2 FLOPs. ``P_layers`` is the number of weights in the decoder layers' linears
(norms and embeddings' lookups are not matmuls), ``q_dim`` = attention heads x head dim. A backward pass
costs twice its forward (gradients of the activations and of the weights), so a training micro-batch is
``3 F``. Elementwise work (norms, RoPE, SiLU, softmax) is left out: the floor is a lower bound.
Divided by a measured matmul peak (FLOP/s) it gives the time no implementation can beat on that machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FlopShape:
    """What the FLOP count needs of a model (see :func:`flop_shape`)."""

    layer_linear_params: int
    """Weights of all linears in one decoder layer (q, k, v, o, gate, up, down for Llama)."""
    layers: int
    q_dim: int
    """Attention heads x head dim (the width of Q K^T and A V)."""
    hidden: int
    vocab: int


def flop_shape(config_fields: dict) -> FlopShape:
    """A :class:`FlopShape` from an HF ``config.json`` dict (the model is built on the meta device)."""
    from verl.utils.memory_plan_report import model_shape

    shape = model_shape(config_fields)
    q_dim = next((o for name, _, o in shape.layer_linears if name == "q_proj"), shape.hidden)
    return FlopShape(
        layer_linear_params=sum(i * o for _, i, o in shape.layer_linears),
        layers=shape.layers,
        q_dim=q_dim,
        hidden=shape.hidden,
        vocab=shape.vocab,
    )


def forward_flops(shape: FlopShape, seq_lens: Sequence[int], logit_positions: int) -> float:
    """FLOPs of one forward pass over sequences of ``seq_lens`` real tokens with ``logit_positions`` logits."""
    tokens = sum(int(n) for n in seq_lens)
    pairs = sum(int(n) * (int(n) + 1) // 2 for n in seq_lens)
    linears = 2.0 * shape.layers * shape.layer_linear_params * tokens
    attention = 4.0 * shape.layers * shape.q_dim * pairs
    head = 2.0 * shape.hidden * shape.vocab * int(logit_positions)
    return linears + attention + head


PHASE_PASSES = {"gen": 1.0, "old_log_prob": 1.0, "ref": 1.0, "update_actor": 3.0}
"""Forward-pass equivalents of each ReBO phase: generation, the no-grad log-prob passes, and the update
(forward + backward). ``update_actor`` is per PPO epoch."""


def phase_floor_seconds(forward: float, peak_flops: float, ppo_epochs: int = 1, ran: Sequence[str] = ()) -> dict:
    """Seconds per phase at ``peak_flops`` for a step whose forward pass costs ``forward`` FLOPs.

    ``ran``: the phases that ran (a phase that did not run, e.g. old_log_prob when on-policy, has floor 0)."""
    floors = {}
    for phase, passes in PHASE_PASSES.items():
        factor = passes * (ppo_epochs if phase == "update_actor" else 1)
        floors[phase] = factor * forward / peak_flops if (not ran or phase in ran) else 0.0
    floors["step"] = sum(floors.values())
    return floors


def measure_matmul_peak(threads: int, size: int = 2048, repeats: int = 8) -> float:
    """fp32 FLOP/s of the best of ``repeats`` (size x size) @ (size x size) matmuls on ``threads`` threads."""
    import time

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b  # warm-up: thread pool, MKL's buffers
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 2.0 * size**3 / best
