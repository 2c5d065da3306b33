"""Memory plan before launch: bytes per GPU and per phase (rollout, log-probs, update) from a model config.

Pure arithmetic over a :class:`ModelShape` (parameter counts, from the model built on the meta device:
no weights, no GPU) and a :class:`TrainingSetup` (what the run config asks for; built by
``verl/trainer/main.py`` and ``RS/train.py``). ``--plan`` on those entry points prints it
(:mod:`verl.utils.memory_plan_report`). Everything is per GPU; ``W`` = GPUs (data-parallel ranks),
``P`` = parameters, ``P_t`` = trainable parameters (LoRA adapters, or ``P``).

What the engine holds (``verl/workers/fsdp_worker.py``, ``fsdp_utils.py``) and how it is counted:

* **parameters** - the trainable model is loaded in fp32 (the master copy: there is no separate one)
  and FSDP2-sharded: ``4 P / W``. With LoRA the frozen base is in that module too, also fp32.
  ``fsdp.cpu_offload`` keeps the shards on the CPU (0 here); ``offload.offload_params`` moves them
  back for every phase (each phase uses them), so they count in every phase.
* **gathered** - FSDP2 all-gathers units in the compute dtype (bf16 with ``fsdp.mixed_precision``, else
  fp32): the root unit (embeddings, final norm, lm_head: kept for backward) + 2 decoder layers (current
  + prefetch); with ``reshard_after_forward=false`` every layer stays gathered.
* **gradients** - fp32 like the sharded parameter: ``4 P_t / W`` (update only; freed by ``zero_grad``).
* **optimizer** - AdamW ``m`` + ``v`` in fp32: ``8 P_t / W``; off the GPU with ``offload_optimizer``
  outside the update, or with ``fsdp.cpu_offload`` always. The step is torch's fused AdamW, which updates
  each tensor in place (foreach AdamW would allocate a temporary of the sharded parameters' size).
* **reference** - a frozen copy sharded in the model dtype (bf16 on GPU): ``2 P / W``; none with LoRA
  (the disabled adapter is the reference) or without KL. RS frees it after the log-prob pass.
* **rollout weights** (HF) - with ``rollout.hf_weights=shared`` (default) the actor generates itself, every
  unit gathered for the whole rollout: ``P`` x compute bytes in the rollout phase only, and no sync; with
  ``copy`` a full copy ``frozen_bytes P`` is held in every phase (below) and synced:
* **sync buffer** (rollout) - ASSUMES the streaming weight sync: one full tensor at a time is gathered
  in the master dtype and copied into the rollout dtype, so the extra memory is at most
  ``largest_param x (4 + 2)`` bytes (3x the largest parameter in bf16).
* **rollout engine** - vLLM takes ``gpu_memory_utilization x card`` while it generates (its weights,
  KV cache and activations) and ~0 while asleep (``free_cache_engine``: sleep level 1); the HF rollout
  (``copy``) keeps a full copy ``2 P`` in every phase plus its KV cache ``2 L kv_dim 2 B_r (prompt + response)``.
* **activations** (``c`` = compute-dtype bytes, ``h`` hidden, ``I`` intermediate, ``kv`` = KV heads x
  head dim, tokens = rows x sequence length). Per token per layer a Llama-style block saves about
  ``a = 12 h + 3 kv + 4 I`` elements for backward (two RMSNorms ~4h each with their fp32 upcast, q/k
  before RoPE, q/k/v/out for SDPA, o_proj's input, SiLU/gate/up/down inputs 4I); eager attention adds
  ``2 heads seq``. Update: without gradient checkpointing ``tokens L a c``; with it ``tokens L h c``
  (the layer inputs) + ``tokens a c`` (one layer recomputed). No-grad passes: ``tokens a c``.
* **logits** - ``N = rows x positions x V`` (positions: the response for PPO's ``logits_to_keep``,
  the whole sequence for RS). The lm_head output (``c`` bytes) plus the copy kept for the chunked
  log-softmax (``k`` bytes: 4, as the actor upcasts to fp32; ``c`` in RS): ``N (c + k)`` without grad;
  the update adds its gradient: ``N (c + 2k)`` (RS: ``k`` more per extra stream kept for backward).
* **runtime** - a fixed 1 GiB for the CUDA context, NCCL buffers and allocator slack.

The critic (GAE) is not counted. Estimates, not measurements: ``scripts/gpu_check.py`` checks the
measured peak against this plan times a slack factor.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

GIB = 1 << 30
RUNTIME_BYTES = GIB
MASTER_BYTES = 4  # trainable modules are loaded in fp32 (fsdp_worker._build_sharded)
SYNC_COPIES = MASTER_BYTES + 2  # bytes per element of the largest tensor while it streams (fp32 + bf16)
PHASES = ("rollout", "log-probs", "update")


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a decoder-only LM (counts are exact when built from the meta-device model)."""

    name: str
    num_params: int
    largest_param: int
    """numel of the largest single tensor (the embedding / lm_head for Llama-3)."""
    layer_params: int
    """numel of one decoder layer."""
    root_params: int
    """numel outside the decoder layers (embeddings, final norm, untied lm_head)."""
    hidden: int
    layers: int
    heads: int
    kv_dim: int
    """num_key_value_heads x head_dim."""
    intermediate: int
    vocab: int
    layer_linears: tuple[tuple[str, int, int], ...] = ()
    """(module name, in_features, out_features) of each nn.Linear inside one decoder layer."""

    def lora_params(self, rank: int, targets: tuple[str, ...] = ("all-linear",)) -> int:
        """LoRA A + B numel: ``rank (in + out)`` per adapted linear; ``all-linear`` = every linear of the
        decoder layers (peft leaves the lm_head out), else linears whose name is in ``targets``."""
        every = "all-linear" in targets
        per_layer = sum(rank * (i + o) for name, i, o in self.layer_linears if every or name in targets)
        return self.layers * per_layer


@dataclass(frozen=True)
class Pass:
    """One forward (and maybe backward) micro-batch: ``rows`` x ``seq`` tokens, ``positions`` logits each."""

    rows: int
    seq: int
    positions: int
    streams: int = 1
    """Sequences per row forwarded before one backward (RS losses with several streams)."""


@dataclass(frozen=True)
class TrainingSetup:
    """What a run config asks for, per GPU (built from PPOConfig / RSConfig by their entry points)."""

    n_gpus: int
    gpu_bytes: int
    update: Pass
    experience: Optional[Pass]
    """The log-prob pass (old / reference log-probs); None = no such phase."""
    mixed_precision: bool = True
    frozen_bytes: int = 2
    """Bytes per element of the reference and rollout copies (model.dtype: bf16 = 2, fp32 = 4)."""
    lora_rank: int = 0
    lora_targets: tuple[str, ...] = ("all-linear",)
    gradient_checkpointing: bool = False
    reshard_after_forward: bool = True
    fsdp_cpu_offload: bool = False
    offload_params: bool = False
    offload_optimizer: bool = False
    reference: bool = False
    """A separate frozen reference model (ignored with LoRA: the disabled adapter is the reference)."""
    reference_in_update: bool = True
    """The reference stays on the GPU during the update (RS frees it after its log-prob pass)."""
    rollout: str = "none"
    """none, hf or vllm."""
    hf_weights: str = "shared"
    """HF rollout: shared (the actor's module, gathered while it generates) or copy (a full copy, always held)."""
    rollout_rows: int = 0
    prompt_len: int = 0
    response_len: int = 0
    gpu_memory_utilization: float = 0.0
    free_cache_engine: bool = True
    tensor_parallel: int = 1
    eager_attention: bool = False
    kept_logit_bytes: int = 4
    """Bytes of the logits copy the log-softmax keeps (4: the actor upcasts; RS keeps the compute dtype)."""
    notes: tuple[str, ...] = ()
    """Caveats printed under the table (e.g. what the plan does not count for this config)."""
    keys: dict = field(default_factory=dict, compare=False)
    """Config key of each knob (lora, offload, cpu_offload, checkpointing, micro_batch, gpu_util, gpus)."""

    @property
    def compute_bytes(self) -> int:
        return 2 if self.mixed_precision else 4


@dataclass(frozen=True)
class PhaseEstimate:
    name: str
    parts: dict[str, int]
    """component -> bytes on one GPU."""

    @property
    def total(self) -> int:
        return sum(self.parts.values())


@dataclass(frozen=True)
class MemoryPlan:
    shape: ModelShape
    setup: TrainingSetup
    phases: tuple[PhaseEstimate, ...]

    @property
    def peak(self) -> PhaseEstimate:
        return max(self.phases, key=lambda p: p.total)

    @property
    def fits(self) -> bool:
        return self.peak.total <= self.setup.gpu_bytes

    def phase(self, name: str) -> PhaseEstimate:
        return next(p for p in self.phases if p.name == name)


def model_terms(model: Any, fsdp: Any) -> dict[str, Any]:
    """The ``TrainingSetup`` fields that come from a model config and an FSDP config (both trainers' share)."""
    return dict(
        mixed_precision=fsdp.mixed_precision,
        frozen_bytes=4 if model.dtype in ("fp32", "float32") else 2,
        lora_rank=model.lora.rank,
        lora_targets=tuple(model.lora.target_modules),
        gradient_checkpointing=model.enable_gradient_checkpointing,
        reshard_after_forward=fsdp.reshard_after_forward and fsdp.enable_full_shard,
        fsdp_cpu_offload=fsdp.cpu_offload,
        eager_attention=model.attn_implementation == "eager",
    )


def per_token_layer_elements(shape: ModelShape, seq: int, eager: bool) -> int:
    """Elements one decoder layer saves per token for backward (see the module docstring)."""
    return 12 * shape.hidden + 3 * shape.kv_dim + 4 * shape.intermediate + (2 * shape.heads * seq if eager else 0)


def activation_bytes(shape: ModelShape, setup: TrainingSetup, p: Pass, grad: bool) -> int:
    """Activations of one micro-batch: all layers (update without checkpointing), the layer inputs plus
    one recomputed layer (with checkpointing), or one layer's working set (no grad)."""
    tokens = p.rows * p.seq * p.streams
    one_layer = tokens * per_token_layer_elements(shape, p.seq, setup.eager_attention) * setup.compute_bytes
    if not grad:
        return one_layer // p.streams
    if setup.gradient_checkpointing:
        return tokens * shape.layers * shape.hidden * setup.compute_bytes + one_layer
    return shape.layers * one_layer


def logits_bytes(shape: ModelShape, setup: TrainingSetup, p: Pass, grad: bool) -> int:
    n = p.rows * p.positions * shape.vocab
    c, k = setup.compute_bytes, setup.kept_logit_bytes
    return n * (c + 2 * k + (p.streams - 1) * k) if grad else n * (c + k)


def estimate(shape: ModelShape, setup: TrainingSetup) -> MemoryPlan:
    """Bytes per GPU for each phase the setup runs (see the module docstring for every term)."""
    w = setup.n_gpus
    lora = setup.lora_rank > 0
    trainable = shape.lora_params(setup.lora_rank, setup.lora_targets) if lora else shape.num_params
    on_gpu = not setup.fsdp_cpu_offload
    params = MASTER_BYTES * (shape.num_params + (trainable if lora else 0)) // w if on_gpu else 0
    grads = MASTER_BYTES * trainable // w if on_gpu else 0
    optim = 2 * MASTER_BYTES * trainable // w if on_gpu else 0
    optim_idle = 0 if setup.offload_optimizer else optim
    layers_gathered = 2 if setup.reshard_after_forward else shape.layers
    gathered = (shape.root_params + layers_gathered * shape.layer_params) * setup.compute_bytes
    ref = setup.frozen_bytes * shape.num_params // w if (setup.reference and not lora) else 0
    rollout_idle = 0
    shared = setup.rollout == "hf" and setup.hf_weights == "shared"
    if setup.rollout == "hf" and not shared:
        rollout_idle = setup.frozen_bytes * shape.num_params
    elif setup.rollout == "vllm" and not setup.free_cache_engine:
        rollout_idle = int(setup.gpu_memory_utilization * setup.gpu_bytes)
    phases = []
    if setup.rollout != "none":
        parts = {"parameters": params, "optimizer": optim_idle, "reference": ref}
        if shared:  # the actor itself generates, every unit gathered for the whole rollout
            parts["gathered"] = shape.num_params * setup.compute_bytes
        else:
            parts["sync buffer"] = shape.largest_param * SYNC_COPIES
        kv_bytes = setup.compute_bytes if shared else setup.frozen_bytes
        if setup.rollout == "vllm":
            parts["rollout engine"] = int(setup.gpu_memory_utilization * setup.gpu_bytes)
        else:
            kv = 2 * shape.layers * shape.kv_dim * kv_bytes * setup.rollout_rows
            kv *= setup.prompt_len + setup.response_len
            prefill = Pass(setup.rollout_rows, setup.prompt_len, 1)
            parts["rollout engine"] = rollout_idle + kv
            parts["activations"] = activation_bytes(shape, setup, prefill, grad=False)
            parts["logits"] = logits_bytes(shape, setup, prefill, grad=False)
        phases.append(PhaseEstimate("rollout", parts))
    if setup.experience is not None:
        parts = {"parameters": params, "gathered": gathered, "optimizer": optim_idle, "reference": ref}
        parts["rollout engine"] = rollout_idle
        parts["activations"] = activation_bytes(shape, setup, setup.experience, grad=False)
        parts["logits"] = logits_bytes(shape, setup, setup.experience, grad=False)
        phases.append(PhaseEstimate("log-probs", parts))
    parts = {"parameters": params, "gathered": gathered, "gradients": grads, "optimizer": optim}
    parts["reference"] = ref if setup.reference_in_update else 0
    parts["rollout engine"] = rollout_idle
    parts["activations"] = activation_bytes(shape, setup, setup.update, grad=True)
    parts["logits"] = logits_bytes(shape, setup, setup.update, grad=True)
    phases.append(PhaseEstimate("update", parts))
    for phase in phases:
        phase.parts["runtime"] = RUNTIME_BYTES
    return MemoryPlan(shape, setup, tuple(phases))


# ----------------------------------------------------------------------------- knobs
def _smaller_micro_batch(s: TrainingSetup) -> TrainingSetup:
    exp = dataclasses.replace(s.experience, rows=1) if s.experience is not None else None
    return dataclasses.replace(s, update=dataclasses.replace(s.update, rows=1), experience=exp)


KNOBS = {
    "lora": ("LoRA rank 8 on all linears", lambda s: s.lora_rank == 0, lambda s: dataclasses.replace(s, lora_rank=8)),
    "offload": (
        "offload params + optimizer between phases",
        lambda s: not (s.offload_params and s.offload_optimizer),
        lambda s: dataclasses.replace(s, offload_params=True, offload_optimizer=True),
    ),
    "cpu_offload": (
        "FSDP CPU offload (params, grads, optimizer on the CPU; slow)",
        lambda s: not s.fsdp_cpu_offload,
        lambda s: dataclasses.replace(s, fsdp_cpu_offload=True),
    ),
    "checkpointing": (
        "gradient checkpointing",
        lambda s: not s.gradient_checkpointing,
        lambda s: dataclasses.replace(s, gradient_checkpointing=True),
    ),
    "micro_batch": (
        "micro-batch of 1 row",
        lambda s: s.update.rows > 1 or (s.experience is not None and s.experience.rows > 1),
        _smaller_micro_batch,
    ),
}


def min_gpus(shape: ModelShape, setup: TrainingSetup, limit: int = 64) -> Optional[int]:
    """Fewest GPUs (a power of two above the setup's, up to ``limit``) at which the plan fits."""
    n = setup.n_gpus * 2
    while n <= limit:
        if estimate(shape, dataclasses.replace(setup, n_gpus=n)).fits:
            return n
        n *= 2
    return None


def max_gpu_utilization(shape: ModelShape, setup: TrainingSetup) -> Optional[float]:
    """Largest vLLM ``gpu_memory_utilization`` (0.05 steps, below the current) at which the plan fits and
    vLLM still holds its weights + 1 GiB of KV cache; None if none does."""
    if setup.rollout != "vllm":
        return None
    floor = (2 * shape.num_params / setup.tensor_parallel + GIB) / setup.gpu_bytes
    util = round(setup.gpu_memory_utilization - 0.05, 2)
    while util >= max(floor, 0.05):
        if estimate(shape, dataclasses.replace(setup, gpu_memory_utilization=util)).fits:
            return util
        util = round(util - 0.05, 2)
    return None


COMBINE_ORDER = ("checkpointing", "micro_batch", "offload", "lora", "cpu_offload")
"""Cheapest first: knobs that cost little speed or change nothing in the result come before the others."""


@dataclass(frozen=True)
class Suggestion:
    knob: str
    text: str
    key: str
    fits: bool
    peak: int
    gpus_needed: Optional[int]
    """With this knob, the fewest GPUs that fit (when it does not fit on the current count)."""


def suggestions(shape: ModelShape, setup: TrainingSetup) -> list[Suggestion]:
    """Each applicable knob alone that lowers the peak: its peak per GPU, whether it fits, else how many
    GPUs it needs; then a cumulative combination when no knob fits alone, and the fewest GPUs that fit."""
    out, peak = [], estimate(shape, setup).peak.total
    for knob, (text, applies, apply) in KNOBS.items():
        if not applies(setup) or setup.keys.get(knob) is None:
            continue
        changed = apply(setup)
        plan = estimate(shape, changed)
        if plan.peak.total >= peak:  # e.g. offload between phases when the update itself is the peak
            continue
        needed = None if plan.fits else min_gpus(shape, changed)
        out.append(Suggestion(knob, text, setup.keys[knob], plan.fits, plan.peak.total, needed))
    util = max_gpu_utilization(shape, setup)
    if util is not None and setup.keys.get("gpu_util"):
        plan = estimate(shape, dataclasses.replace(setup, gpu_memory_utilization=util))
        out.append(Suggestion("gpu_util", f"vLLM gpu_memory_utilization={util}", setup.keys["gpu_util"], True,
                              plan.peak.total, None))  # fmt: skip
    if not any(o.fits for o in out):
        combined = combination(shape, setup)
        if combined is not None:
            out.append(combined)
    gpus = min_gpus(shape, setup)
    if gpus is not None and setup.keys.get("gpus"):
        plan = estimate(shape, dataclasses.replace(setup, n_gpus=gpus))
        out.append(Suggestion("gpus", f"{gpus} GPUs", setup.keys["gpus"], True, plan.peak.total, gpus))
    return out


def combination(shape: ModelShape, setup: TrainingSetup) -> Optional[Suggestion]:
    """Knobs applied one after another (``COMBINE_ORDER``) until the plan fits on the current GPUs, then
    each dropped again where the rest still fits (a minimal set); None if even all of them do not fit."""

    def apply_all(knobs: list[str]) -> MemoryPlan:
        current = setup
        for knob in knobs:
            current = KNOBS[knob][2](current)
        return estimate(shape, current)

    used, plan = [], None
    for knob in COMBINE_ORDER:
        if KNOBS[knob][1](setup) and setup.keys.get(knob) is not None:
            used.append(knob)
            plan = apply_all(used)
            if plan.fits:
                break
    if plan is None or not plan.fits:
        return None
    for knob in list(used):
        rest = [k for k in used if k != knob]
        if rest and apply_all(rest).fits:
            used = rest
    plan = apply_all(used)
    texts, keys = " + ".join(KNOBS[k][0] for k in used), ", ".join(setup.keys[k] for k in used)
    return Suggestion("+".join(used), texts, keys, True, plan.peak.total, None)
