"""vLLM rollout (GPU): one engine per worker (SPMD), weights synced from the FSDP actor, sleep between rollouts.

Same contract as ``HFRollout`` (see ``rollout/base.py``): ``generate_sequences`` returns the shared
layout, with the sampled tokens' log-probs from vLLM. vLLM is imported lazily, so CPU machines and
tests never need it. Not exercised by the CPU test suite: ``scripts/gpu_check.sh`` runs it when vLLM is
importable on a GPU machine.
"""

from __future__ import annotations

import torch

from verl.protocol import DataProto
from verl.utils import device as dev
from verl.workers.config import ModelConfig, RolloutConfig
from verl.workers.rollout.base import BaseRollout, assemble_output, sampling_from_meta
from verl.workers.rollout.sampling import SamplingSpec

_MODEL_PATHS = (  # where vLLM versions keep the driver model (in-process engine)
    ("llm_engine", "model_executor", "driver_worker", "worker", "model_runner", "model"),
    ("llm_engine", "model_executor", "driver_worker", "model_runner", "model"),
)


class VLLMRollout(BaseRollout):
    def __init__(self, model_config: ModelConfig, config: RolloutConfig, tokenizer, rank: int = 0):
        import os

        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine lives in this process
        from vllm import LLM

        from verl.utils.models import resolve_model_path

        self.config = config
        self.tokenizer = tokenizer
        self.lora = model_config.lora.rank > 0
        self.engine = LLM(
            model=resolve_model_path(model_config.model_path),
            tokenizer=resolve_model_path(model_config.tokenizer_path or model_config.model_path),
            tensor_parallel_size=config.tensor_parallel_size,
            dtype="bfloat16" if dev.get_device_name() != "cpu" else "float32",
            gpu_memory_utilization=config.gpu_memory_utilization,
            enforce_eager=config.enforce_eager,
            enable_sleep_mode=config.free_cache_engine,
            max_model_len=config.prompt_length + config.response_length,
            seed=config.seed + rank,
            trust_remote_code=model_config.trust_remote_code,
        )
        self.sleeping = False
        self.sleep()

    def _model(self):
        for path in _MODEL_PATHS:
            node = self.engine
            try:
                for attr in path:
                    node = getattr(node, attr)
                return node
            except AttributeError:
                continue
        raise RuntimeError("cannot reach the vLLM model for weight sync (set VLLM_ENABLE_V1_MULTIPROCESSING=0)")

    def sync_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the actor's full weights (LoRA already merged by the worker) into the engine."""
        self._model().load_weights(((name, tensor) for name, tensor in state_dict.items()))

    def sleep(self) -> None:
        if self.config.free_cache_engine and not self.sleeping:
            self.engine.sleep(level=1)
            self.sleeping = True

    def wake_up(self) -> None:
        if self.sleeping:
            self.engine.wake_up()
            self.sleeping = False

    def _sampling_params(self, spec: SamplingSpec, n: int):
        from vllm import SamplingParams

        greedy = spec.temperature <= 0
        return SamplingParams(
            n=n,
            temperature=0.0 if greedy else spec.temperature,
            top_p=1.0 if greedy else spec.top_p,
            top_k=-1 if greedy else spec.top_k,
            max_tokens=spec.max_new_tokens,
            stop=spec.stop or None,
            include_stop_str_in_output=True,
            logprobs=0,
        )

    @torch.no_grad()
    def generate_sequences(self, prompts: DataProto) -> DataProto:
        spec, n = sampling_from_meta(prompts.meta_info, self.config, self.tokenizer)
        ids, mask = prompts.batch["input_ids"], prompts.batch["attention_mask"]
        requests = [{"prompt_token_ids": row[m.bool()].tolist()} for row, m in zip(ids, mask)]
        outputs = self.engine.generate(requests, self._sampling_params(spec, n), use_tqdm=False)
        width = spec.max_new_tokens
        pad = self.tokenizer.pad_token_id
        responses = torch.full((len(requests) * n, width), pad, dtype=torch.long)
        response_mask = torch.zeros((len(requests) * n, width), dtype=torch.long)
        log_probs = torch.zeros((len(requests) * n, width), dtype=torch.float32)
        for i, output in enumerate(outputs):
            for j, sample in enumerate(output.outputs):
                row, tokens = i * n + j, list(sample.token_ids)[:width]
                responses[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                response_mask[row, : len(tokens)] = 1
                if sample.logprobs:
                    values = [step[token].logprob for step, token in zip(sample.logprobs, tokens)]
                    log_probs[row, : len(values)] = torch.tensor(values)
        return assemble_output(prompts, n, responses, response_mask, log_probs)
