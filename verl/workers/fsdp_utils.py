"""Building, sharding (torch FSDP2), gathering and offloading models inside a worker."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from verl.utils import device as dev
from verl.workers.config import FSDPConfig, LoraConfig, ModelConfig


def resolve_model_path(path: str) -> str:
    """'smollm2' / 'embedded:smollm2' / 'tiny:DIR' / a folder / a hub id -> what transformers loads."""
    from verl.utils.models import resolve_model_path as resolve

    return resolve(path)


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    model_path: str, config: ModelConfig, dtype: torch.dtype, value_head: bool = False, empty: bool = False
) -> nn.Module:
    """Load an HF causal LM (or a 1-label token classifier when ``value_head``) on the CPU in ``dtype``.

    ``empty=True`` builds the same module from ``config.json`` on the meta device instead: no weight
    file is read and no memory is taken; :func:`broadcast_from_rank0` fills it after sharding.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification

    path = resolve_model_path(model_path)
    if not path:
        raise ValueError("model path is empty: set worker.actor.model.model_path")
    auto = AutoModelForTokenClassification if value_head else AutoModelForCausalLM
    extra: dict[str, Any] = {"num_labels": 1} if value_head else {}
    kwargs: dict[str, Any] = dict(dtype=dtype, attn_implementation=config.attn_implementation)
    try:
        if empty:
            hf_config = AutoConfig.from_pretrained(path, trust_remote_code=config.trust_remote_code, **extra)
            with torch.device("meta"):
                model = auto.from_config(hf_config, trust_remote_code=config.trust_remote_code, **kwargs)
        else:
            model = auto.from_pretrained(path, trust_remote_code=config.trust_remote_code, **extra, **kwargs)
    except OSError as e:
        raise ValueError(f"cannot load model {model_path!r} (resolved to {path!r}): {e}") from e
    model.config.use_cache = False
    if value_head:
        disable_dropout(model)
    return model


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout to p=0 (HF token-classification heads default to 0.1: a noisy value regression)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    model.config.classifier_dropout = 0.0


def broadcast_from_rank0(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Fill an FSDP2-sharded ``model`` on every rank from rank 0's full ``state`` (other ranks pass ``{}``).

    Ranks other than 0 built ``model`` with ``load_causal_lm(empty=True)``: ``to_empty`` gives their
    shards storage on the device while keeping each ``nn.Parameter`` object, so tied weights
    (``lm_head`` = ``embed_tokens``) stay one parameter. ``set_model_state_dict`` then broadcasts one
    full tensor at a time and each rank keeps its own slice (extra memory: one full tensor). Buffers
    that no state dict holds (rotary ``inv_freq``) are broadcast from rank 0 as well. Collective.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if dist.get_rank() != 0:
        model.to_empty(device=dev.get_torch_device())  # with CPUOffloadPolicy FSDP re-homes shards to the host
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, state if dist.get_rank() == 0 else {}, options=options)
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def apply_lora(model: nn.Module, lora: LoraConfig) -> nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    targets = lora.target_modules
    target_modules: Any = "all-linear" if targets == ["all-linear"] else list(targets)
    peft_config = PeftLoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=target_modules,
        bias="none",
    )
    return get_peft_model(model, peft_config)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks (each becomes one FSDP unit)."""
    classes = set(getattr(model, "_no_split_modules", None) or [])
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    classes |= set(getattr(base, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in classes]
    if not layers:
        raise ValueError(f"cannot find the decoder layers of {type(base).__name__} (no _no_split_modules)")
    return layers


def fsdp_shard(model: nn.Module, fsdp: FSDPConfig, mixed_precision: bool) -> nn.Module:
    """FSDP2: ``fully_shard`` every decoder layer, then the root, over a 1-D mesh of all ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(dev.get_device_name(), (dist.get_world_size(),))
    kwargs: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": fsdp.reshard_after_forward}
    if mixed_precision:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if fsdp.cpu_offload and dev.get_device_name() != "cpu":
        kwargs["offload_policy"] = CPUOffloadPolicy()
    if not fsdp.enable_full_shard:
        kwargs["reshard_after_forward"] = False
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


@contextmanager
def gathered(model: nn.Module, fsdp: FSDPConfig):
    """Keep every FSDP2 unit of ``model`` gathered across many forward calls (a sampling loop calls forward
    once per token), then reshard: each unit is all-gathered once instead of once per call.

    Afterwards the reshard-after-forward settings are those ``fsdp_shard`` gave (the root keeps its
    parameters after forward, as FSDP2 sets it). Collective when sharded: every rank must enter.
    Extra memory while inside: one full copy of the model in the compute dtype."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield
        return
    model.set_reshard_after_forward(False)
    try:
        yield
    finally:
        model.set_reshard_after_forward(fsdp.enable_full_shard and fsdp.reshard_after_forward)
        model.set_reshard_after_forward(False, recurse=False)
        for unit in model.modules():
            if isinstance(unit, FSDPModule):
                unit.reshard()


def local_numel(model: nn.Module) -> tuple[int, int]:
    """(parameters this rank really holds, parameters of the full model)."""
    from torch.distributed.tensor import DTensor

    local = full = 0
    for p in model.parameters():
        full += p.numel()
        local += p.to_local().numel() if isinstance(p, DTensor) else p.numel()
    return local, full


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Gather the full (unsharded) state dict on every rank; collective: all ranks must call it.

    Holds the whole model at once: for inspection and export. The rollout sync streams instead
    (``weight_sync.iter_full_weights``)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))


def sharded_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """This rank's shards of the model and optimizer state (DTensors), for per-rank checkpoints."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    state = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    return state


def load_sharded_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer | None, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, state["model"])
    if optimizer is not None and "optimizer" in state:
        set_optimizer_state_dict(model, optimizer, state["optimizer"])


def move_module(model: nn.Module, device: torch.device | str) -> None:
    """Manual offload: move the parameters, gradients and buffers of ``model`` to ``device``.

    On an FSDP2 module this is ``model.to(device)``: FSDP's ``_apply`` reshards, swaps each DTensor
    parameter's *local shard* into the new storage (the same ``nn.Parameter`` objects, so the optimizer
    keeps its references) and re-points FSDP's all-gather source at it, so the old storage has no owner
    left and is freed. Assigning ``param.data`` instead changes only the DTensor wrapper and leaves the
    shard (and the memory) where it was. Moving to where the module already is copies nothing.
    """
    model.to(device)
    dev.empty_cache()


def move_optimizer(optimizer: torch.optim.Optimizer, device: torch.device | str) -> None:
    """Move the optimizer state (AdamW moments and step counters) to ``device``, then wait for the copies.

    The copies are issued with ``non_blocking=True`` so they overlap; a device-to-host copy can return
    before its data has landed, so this ends with ``dev.synchronize()`` (a no-op on CPU): whatever reads
    the state next (``torch.save`` of a checkpoint, the next step) sees complete tensors.
    """
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                state[key] = value.to(device, non_blocking=True)
    dev.synchronize()


def init_distributed() -> None:
    """Join the process group set up by the worker group (RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""
    if dist.is_initialized():
        return
    dev.set_device()
    dist.init_process_group(
        backend=dev.get_dist_backend(),
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
    )


def merged_lora_state_dict(peft_model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full PEFT state dict -> base-model state dict with every LoRA update merged (W + s * B @ A).

    The merge itself is ``weight_sync.merged_lora_items`` (which the streaming rollout sync uses too)."""
    from verl.workers.weight_sync import lora_scaling, merged_lora_items

    return dict(merged_lora_items(state, lora_scaling(peft_model)))
