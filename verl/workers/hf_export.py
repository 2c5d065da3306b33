"""Export an FSDP2-sharded model as a plain Hugging Face folder, in the model's dtype, without a full fp32 copy."""

from __future__ import annotations

import os
import shutil
import tempfile

import torch
import torch.distributed as dist
from torch import nn

from verl.workers.config import ModelConfig
from verl.workers.fsdp_utils import resolve_model_path
from verl.workers.weight_sync import PEFT_PREFIX, iter_full_weights


def tied_aliases(model: nn.Module) -> set[str]:
    """Names under which an already-named parameter appears again (``lm_head.weight`` when tied)."""
    seen: set[int] = set()
    aliases: set[str] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            aliases.add(name)
        seen.add(id(param))
    return aliases


def gather_full_state(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Rank 0: the full weights of ``model`` on the host in ``dtype`` (LoRA merged); other ranks: ``{}``.

    Streams through ``weight_sync.iter_full_weights`` (the rollout sync's gather): one tensor is
    gathered (``DTensor.full_tensor``), merged with its LoRA adapters and cast before the next, so no
    full-precision copy of the whole model exists anywhere. Peak memory: the model in ``dtype`` on
    rank 0's host (16 GB for an 8B model in bf16) plus one full fp32 tensor on each device. Tied
    aliases are left out. Collective.
    """
    is_lora = hasattr(model, "peft_config")
    aliases = {name.removeprefix(PEFT_PREFIX) for name in tied_aliases(model)}
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    out: dict[str, torch.Tensor] = {}
    for name, tensor in iter_full_weights(model, dtype, merge_lora=is_lora):
        if rank0 and name not in aliases:
            out[name] = tensor.cpu()
        del tensor
    return out


def save_hf_folder(
    model_cfg: ModelConfig, state: dict[str, torch.Tensor], tokenizer, path: str, dtype: torch.dtype
) -> None:
    """Write ``state`` as a plain HF model folder at ``path``, atomically (a crash leaves the old folder).

    Weights go to (sharded) safetensors in ``dtype`` as given; ``config.json`` is the source model's
    with ``dtype`` set; the source's ``generation_config.json`` is copied unchanged (Llama-3 keeps its
    ``eos_token_id`` list). The key set is checked against the architecture built on the meta device,
    so no second copy of the model is made: peak host memory is ``state`` itself.
    """
    from huggingface_hub import save_torch_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    source = resolve_model_path(model_cfg.model_path)
    config = AutoConfig.from_pretrained(source, trust_remote_code=model_cfg.trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=model_cfg.trust_remote_code)
    expected = {k: v.shape for k, v in skeleton.state_dict().items() if k not in tied_aliases(skeleton)}
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys() if state[k].shape != expected[k])
    if missing or unexpected or wrong:
        raise RuntimeError(
            f"export to {path}: weights do not fit {type(skeleton).__name__} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})"
        )
    target = os.path.abspath(path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=os.path.dirname(target))
    try:
        save_torch_state_dict({k: v.to(dtype) for k, v in state.items()}, tmp, max_shard_size="5GB")
        config.dtype = dtype
        config.save_pretrained(tmp)
        source_generation = os.path.join(source, "generation_config.json")
        if os.path.isfile(source_generation):
            shutil.copyfile(source_generation, os.path.join(tmp, "generation_config.json"))
        else:  # a hub id or a folder without one: what transformers derives from the config
            GenerationConfig.from_model_config(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        old = f"{tmp}.old"
        if os.path.exists(target):
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
