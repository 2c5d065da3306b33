"""The one interface every evaluator talks to: generate text, score text, score continuations, next-token logits.

Evaluators build *final* prompt strings (chat template already applied where the benchmark uses one) and
hand them to a :class:`Generator`; they never touch a model (except the weight attacks of
:mod:`verl.eval.attacks`, through :meth:`HFGenerator.editable_weights`). Two backends:

* :class:`HFGenerator` wraps a Hugging Face causal LM (tests, the standalone command, RS, baselines).
* :class:`CallableGenerator` adapts plain functions, e.g. the trainer's rollout worker group, and can borrow
  the scoring methods from another generator.

BOS handling (per model family, documented because it changes log-probs):

* ``generate``, ``score_continuations`` and ``next_token_logprobs`` encode prompts with
  ``add_special_tokens=False`` by default: a chat template already writes any BOS it wants (Llama-3's
  ``<|begin_of_text|>``), and ChatML models (Qwen2, SmolLM2, the tiny test model) use none. RWKU's own code
  encoded the templated string with ``add_special_tokens=True``, which *doubles* the BOS on Llama-3; pass
  ``add_special_tokens=True`` to :class:`HFGenerator` to reproduce that. Base-LM evaluators (MUSE) that
  need a BOS prepend ``tokenizer.bos_token`` to the prompt text themselves (see :func:`bos_text`).
* ``score(texts, add_bos=True)`` prepends ``tokenizer.bos_token_id`` when the tokenizer defines one
  (Llama: ``<s>`` / ``<|begin_of_text|>``; SmolLM2 and the tiny model: ``<|im_start|>``; Qwen2: none), so
  every text token is scored. Without a BOS token the first text token has no prediction and is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Protocol, runtime_checkable

from verl.utils.prompt_formats import encode_plain_text

if TYPE_CHECKING:
    import torch


@dataclass
class SamplingParams:
    """Decoding settings. ``temperature == 0`` means greedy; ``top_k == -1`` disables top-k.

    ``n`` samples per prompt are returned consecutively (prompt 0's n texts, then prompt 1's, ...).
    ``stop``: stop strings; generation halts once one appears and the text is cut before its first occurrence.
    """

    max_new_tokens: int = 30
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    n: int = 1
    stop: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"SamplingParams.stop must hold non-empty strings, got {self.stop!r}")


@runtime_checkable
class Generator(Protocol):
    """What evaluators need from a model. ``tokenizer`` is a Hugging Face tokenizer (chat template, ids)."""

    tokenizer: Any

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[str]:
        """``len(prompts) * sampling.n`` completions (prompt text excluded, special tokens removed, cut at stops)."""
        ...

    def score(self, texts: list[str], add_bos: bool = True, distribution_stats: bool = False) -> list[dict]:
        """Per text: ``token_ids`` (T,), ``token_logprobs`` (T-1,) = log p(token_t | tokens_<t) for t = 2..T;
        with ``distribution_stats`` also ``mu`` and ``sigma`` (T-1,): mean and std of log p under the
        next-token distribution at each of those positions (Min-K%++)."""
        ...

    def score_continuations(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Sum of the continuation's token log-probs given the prompt, per ``(prompt, continuation)`` pair."""
        ...

    def next_token_logprobs(self, prompts: list[str], candidate_token_ids: Sequence[int]) -> torch.Tensor:
        """(n_prompts, k) log-probs (full-vocabulary log-softmax) of each candidate id as the next token."""
        ...


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (excluding) the earliest occurrence of any stop string."""
    cut = len(text)
    for stop in stops:
        position = text.find(stop)
        if position != -1:
            cut = min(cut, position)
    return text[:cut]


def bos_text(tokenizer) -> str:
    """The BOS token as text ("" when the tokenizer has none): base-LM prompts start with it (MUSE)."""
    return tokenizer.bos_token or ""


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


class HFGenerator:
    """A Hugging Face causal LM behind the :class:`Generator` interface.

    Prompts are batched (``batch_size`` for generation and next-token scoring, ``score_batch_size`` for
    full-text scoring), sorted by length to limit padding and returned in input order. Generation uses left
    padding and greedy decoding when ``temperature == 0``; stop strings end a row early and are cut off.
    A missing pad token is set to the eos token on the tokenizer.
    """

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 16,
        device=None,
        score_batch_size: Optional[int] = None,
        add_special_tokens: bool = False,
        progress: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.score_batch_size = score_batch_size or batch_size
        self.device = device if device is not None else model.device
        self.add_special_tokens = add_special_tokens
        self.progress = progress
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        from verl.utils.device import flush_denormals

        flush_denormals()  # the relearning attack trains through this model

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "auto", device=None, **kwargs) -> HFGenerator:
        """Load a local folder (or ``smollm2`` / ``tiny:<dir>``, see ``verl.utils.models.resolve_model_path``).

        ``dtype="auto"`` is fp32 on CPU and bf16 on GPU (``verl.utils.device.default_dtype``).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from verl.utils.device import default_dtype, get_torch_device
        from verl.utils.models import resolve_model_path

        resolved = resolve_model_path(path)
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=default_dtype(dtype))
        model.to(device if device is not None else get_torch_device())
        return cls(model, tokenizer, device=device, **kwargs)

    @contextmanager
    def editable_weights(self) -> Iterator[Any]:
        """Yield the model for in-place weight changes (the quantization and relearning attacks); on exit,
        error or not, every parameter and buffer gets its value back (from a host-memory snapshot, so the
        accelerator holds one copy), as do ``requires_grad`` flags, gradients (cleared) and eval mode."""
        import torch

        tensors = dict(self.model.named_parameters())
        tensors.update(self.model.named_buffers())
        snapshot = {name: t.detach().to("cpu", copy=True) for name, t in tensors.items()}
        requires_grad = {name: p.requires_grad for name, p in self.model.named_parameters()}
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for name, tensor in tensors.items():
                    tensor.copy_(snapshot[name])
            for name, parameter in self.model.named_parameters():
                parameter.grad = None
                parameter.requires_grad_(requires_grad[name])
            self.model.eval()

    # ------------------------------------------------------------------ helpers
    def _batches(self, order: list[int], size: int, desc: str):
        from tqdm.auto import tqdm

        starts = range(0, len(order), size)
        for start in tqdm(starts, desc=desc, disable=not self.progress or len(starts) <= 1, leave=False):
            yield order[start : start + size]

    def _encode_left_padded(self, prompts: list[str]):
        previous = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            encoded = self.tokenizer(
                prompts, padding=True, return_tensors="pt", add_special_tokens=self.add_special_tokens
            )
        finally:
            self.tokenizer.padding_side = previous
        return encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device)

    def _eos_ids(self) -> list[int]:
        ids = set()
        for source in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, (list, tuple)):
                ids.update(int(i) for i in source)
        return sorted(ids)

    # ------------------------------------------------------------------ generation
    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[str]:
        """Decode with the engine's own sampling loop (``verl.workers.rollout.sampling``), so an evaluation
        here and the same evaluation through the rollout worker group produce the same greedy text."""
        from verl.workers.rollout.sampling import SamplingSpec, sample

        spec = SamplingSpec(
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            stop=list(sampling.stop),
            eos_token_ids=self._eos_ids(),
        )
        outputs: list[list[str]] = [[] for _ in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        for batch in self._batches(order, self.batch_size, "generate"):
            input_ids, attention_mask = self._encode_left_padded([prompts[i] for i in batch])
            if sampling.n > 1:
                input_ids = input_ids.repeat_interleave(sampling.n, dim=0)
                attention_mask = attention_mask.repeat_interleave(sampling.n, dim=0)
            out = sample(self.model, input_ids, attention_mask, spec, self.tokenizer.pad_token_id, self.tokenizer)
            for row, (ids, mask) in enumerate(zip(out.responses, out.response_mask)):
                text = self.tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
                outputs[batch[row // sampling.n]].append(cut_at_stops(text, sampling.stop))
        return [text for per_prompt in outputs for text in per_prompt]

    # ------------------------------------------------------------------ scoring
    def _token_logprobs(self, sequences: list[list[int]], distribution_stats: bool, desc: str) -> list[dict]:
        """Right-padded forward passes; per sequence the log-probs of tokens 2..T (and mu/sigma if asked).

        No attention mask: under the causal mask a real token never sees the pads after it, and without a
        padding mask attention runs as causal (the upper triangle skipped) instead of as a full square."""
        import torch

        results: list[dict] = [{} for _ in sequences]
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        pad_id = self.tokenizer.pad_token_id
        for batch in self._batches(order, self.score_batch_size, desc):
            width = max(len(sequences[i]) for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            for row, index in enumerate(batch):
                input_ids[row, : len(sequences[index])] = torch.tensor(sequences[index], dtype=torch.long)
            with torch.no_grad():
                logits = self.model(input_ids=input_ids.to(self.device), use_cache=False).logits
            for row, index in enumerate(batch):
                length = len(sequences[index])
                log_probs = torch.log_softmax(logits[row, : length - 1].float(), dim=-1)  # (T-1, V)
                targets = input_ids[row, 1:length].to(log_probs.device)
                entry = {
                    "token_ids": list(sequences[index]),
                    "token_logprobs": log_probs.gather(-1, targets[:, None]).squeeze(-1).tolist(),
                }
                if distribution_stats:
                    probs = log_probs.exp()
                    mu = (probs * log_probs).sum(-1)
                    variance = ((probs * log_probs.square()).sum(-1) - mu.square()).clamp_min(0)
                    entry["mu"] = mu.tolist()
                    entry["sigma"] = variance.sqrt().tolist()
                results[index] = entry
        return results

    def score(self, texts: list[str], add_bos: bool = True, distribution_stats: bool = False) -> list[dict]:
        if add_bos:
            sequences = [encode_plain_text(self.tokenizer, text) for text in texts]
        else:
            sequences = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        return self._token_logprobs(sequences, distribution_stats, "score")

    def score_continuations(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Tokenizes ``prompt + continuation`` as one string (as RWKU does) and sums the log-probs of the tokens
        after the longest common prefix with the tokenized prompt."""
        sequences, prefix_lengths = [], []
        for prompt, continuation in pairs:
            prompt_ids = self.tokenizer(prompt, add_special_tokens=self.add_special_tokens)["input_ids"]
            full_ids = self.tokenizer(prompt + continuation, add_special_tokens=self.add_special_tokens)["input_ids"]
            sequences.append(full_ids)
            prefix_lengths.append(max(common_prefix_length(prompt_ids, full_ids), 1))
        scored = self._token_logprobs(sequences, False, "score continuations")
        # token_logprobs[j] belongs to token j + 1, so the continuation starts at index prefix - 1.
        return [float(sum(entry["token_logprobs"][prefix - 1 :])) for entry, prefix in zip(scored, prefix_lengths)]

    def next_token_logprobs(self, prompts: list[str], candidate_token_ids: Sequence[int]) -> torch.Tensor:
        import torch

        from verl.workers.rollout.sampling import prefill

        candidates = torch.tensor(list(candidate_token_ids), dtype=torch.long)
        result = torch.zeros((len(prompts), len(candidates)), dtype=torch.float32)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        for batch in self._batches(order, self.batch_size, "next token"):
            input_ids, attention_mask = self._encode_left_padded([prompts[i] for i in batch])
            with torch.no_grad():  # the sampler's prefill: positions count real tokens, only last logits
                logits, _, _ = prefill(self.model, input_ids, attention_mask)
            log_probs = torch.log_softmax(logits, dim=-1).cpu()
            result[torch.tensor(batch)] = log_probs[:, candidates]
        return result


class CallableGenerator:
    """Adapts functions to :class:`Generator` (e.g. the trainer's rollout worker group).

    ``generate_fn(prompts, sampling) -> list[str]`` must return ``len(prompts) * sampling.n`` texts; they are
    cut at ``sampling.stop`` here in case the backend does not. Scoring methods come from the explicit
    ``score_fn`` / ``continuation_fn`` / ``next_token_fn`` or else from ``scorer`` (another Generator, e.g. an
    :class:`HFGenerator` on the actor weights); without either, calling them raises ``NotImplementedError``.
    """

    def __init__(
        self,
        tokenizer,
        generate_fn: Callable[[list[str], SamplingParams], list[str]],
        score_fn: Optional[Callable[..., list[dict]]] = None,
        continuation_fn: Optional[Callable[[list[tuple[str, str]]], list[float]]] = None,
        next_token_fn: Optional[Callable[[list[str], Sequence[int]], Any]] = None,
        scorer: Optional[Generator] = None,
    ):
        self.tokenizer = tokenizer
        self._generate_fn = generate_fn
        self._score_fn = score_fn or (scorer.score if scorer is not None else None)
        self._continuation_fn = continuation_fn or (scorer.score_continuations if scorer is not None else None)
        self._next_token_fn = next_token_fn or (scorer.next_token_logprobs if scorer is not None else None)

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[str]:
        texts = list(self._generate_fn(list(prompts), sampling))
        expected = len(prompts) * sampling.n
        if len(texts) != expected or any(not isinstance(t, str) for t in texts):
            raise ValueError(
                f"generate_fn returned {len(texts)} items for {len(prompts)} prompts x n={sampling.n}; "
                f"expected {expected} strings"
            )
        return [cut_at_stops(text, sampling.stop) for text in texts]

    def _need(self, fn, what: str):
        if fn is None:
            raise NotImplementedError(
                f"CallableGenerator has no {what}: pass {what}=... or scorer=<Generator> "
                "(needed by the mia, utility and muse_privleak suites)"
            )
        return fn

    def score(self, texts: list[str], add_bos: bool = True, distribution_stats: bool = False) -> list[dict]:
        return self._need(self._score_fn, "score_fn")(texts, add_bos=add_bos, distribution_stats=distribution_stats)

    def score_continuations(self, pairs: list[tuple[str, str]]) -> list[float]:
        return list(self._need(self._continuation_fn, "continuation_fn")(pairs))

    def next_token_logprobs(self, prompts: list[str], candidate_token_ids: Sequence[int]):
        return self._need(self._next_token_fn, "next_token_fn")(prompts, candidate_token_ids)
