"""HF rollout: generation with a KV-cached sampling loop over an HF causal LM.

Next to the actor (``worker.rollout.hf_weights=shared``, the default) the model *is* the actor's FSDP module,
which the worker keeps gathered for the whole rollout: no second copy, nothing to sync. Otherwise it is a
full copy of its own; when the actor's weights changed the worker streams them in (``load_weights``, see
``workers/weight_sync.py``): each full tensor is copied into this model's own parameter in place, so a sync
allocates no second copy of the model.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from verl.protocol import DataProto
from verl.utils.device import get_torch_device
from verl.workers.config import RolloutConfig
from verl.workers.rollout.base import BaseRollout, assemble_output, sampling_from_meta
from verl.workers.rollout.sampling import sample


class HFRollout(BaseRollout):
    name = "hf"

    def __init__(self, model: nn.Module, tokenizer, config: RolloutConfig, rank: int = 0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.device = get_torch_device()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed + 1000 * rank)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy each (name, full tensor) into the parameter or buffer of that name, in place."""
        targets = self.model.state_dict(keep_vars=True)  # tied weights appear under both names
        loaded, unexpected = set(), []
        for name, tensor in weights:  # drain the stream even past a bad name: it may be a collective
            target = targets.get(name)
            if target is None or target.shape != tensor.shape:
                unexpected.append(f"{name} {tuple(tensor.shape)}")
            else:
                target.copy_(tensor)
                loaded.add(name)
            del tensor
        missing = [k for k in targets if k not in loaded and "rotary" not in k]
        if missing or unexpected:
            raise RuntimeError(
                f"rollout weight sync mismatch: missing {missing[:5]}, unexpected or misshaped {unexpected[:5]}"
            )

    @torch.no_grad()
    def generate_sequences(self, prompts: DataProto) -> DataProto:
        """(bs, prompt_length) prompts -> (bs*n) rows in the layout of ``rollout.base``.

        ``prompts.meta_info`` may override sampling: temperature, top_p, top_k, n, stop, max_new_tokens.
        """
        self.model.eval()  # a shared actor module comes back from its update in train mode
        gen_cfg = getattr(self.model, "generation_config", None)
        spec, n = sampling_from_meta(prompts.meta_info, self.config, self.tokenizer, gen_cfg)
        device = self.device
        repeated = prompts.repeat(n, interleave=True)
        ids = repeated.batch["input_ids"].to(device)
        mask = repeated.batch["attention_mask"].to(device)
        pad = self.tokenizer.pad_token_id
        chunks = []
        size = max(1, self.config.micro_batch_size)
        for start in range(0, ids.shape[0], size):
            chunk_ids, chunk_mask = ids[start : start + size], mask[start : start + size]
            keep = int(chunk_mask.sum(0).nonzero().min()) if chunk_mask.any() else 0  # drop all-pad columns
            chunks.append(
                sample(
                    self.model, chunk_ids[:, keep:], chunk_mask[:, keep:], spec, pad, self.tokenizer, self.generator
                )
            )
        responses = torch.cat([c.responses for c in chunks]).cpu()
        response_mask = torch.cat([c.response_mask for c in chunks]).cpu()
        log_probs = torch.cat([c.log_probs for c in chunks]).cpu()
        return assemble_output(prompts, n, responses, response_mask, log_probs)
