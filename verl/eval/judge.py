"""The ``judge`` refusal detector on an evaluation :class:`~verl.eval.generator.Generator`, and detectors by name.

The question, the yes/no parsing and the cache live in :mod:`verl.workers.reward.refusal_judge` (no model
there, so the reward layer can use a judge without importing this package). This module supplies the model:

* :func:`generator_ask` turns a generator into ``ask(user messages) -> replies``: each message through the
  generator tokenizer's chat template (one user turn, generation prompt added), greedy decoding,
  :data:`JUDGE_MAX_NEW_TOKENS` new tokens, cut at a newline.
* :func:`load_judge` loads a judge model once per (path, dtype) and keeps it (evaluating ten targets loads
  it once); :func:`build_detector` returns the detector an :class:`~verl.eval.suites.EvalOptions` asks for.

Any HF chat model works as a judge; a bigger instruct model than the evaluated one is the point (e.g. on GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from verl.eval.generator import Generator, SamplingParams
from verl.eval.prompts import chat_prompt
from verl.workers.reward.refusal import Detector, get_detector

JUDGE_MAX_NEW_TOKENS = 4
"""Enough for "Yes", "No." or "**No**"; the verdict is the first word."""
_LOADED: dict[tuple[str, str], Detector] = {}


def generator_ask(
    generator: Generator, max_new_tokens: int = JUDGE_MAX_NEW_TOKENS
) -> Callable[[list[str]], list[str]]:
    """``ask(messages) -> replies``: each message as one chat user turn of ``generator``, greedy, short."""
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=["\n"])

    def ask(messages: list[str]) -> list[str]:
        prompts = [chat_prompt(generator.tokenizer, message) for message in messages]
        return generator.generate(prompts, sampling)

    return ask


def judge_detector(generator: Generator, fallback: str = "strict") -> Detector:
    """The ``judge`` detector asking ``generator`` (see :mod:`verl.workers.reward.refusal_judge`)."""
    return get_detector("judge", ask=generator_ask(generator), fallback=fallback)


def load_judge(model: str, dtype: str = "auto", batch_size: int = 16) -> Detector:
    """The judge on the HF chat model ``model`` (folder, hub id or ``smollm2``), loaded once per process."""
    key = (model, dtype)
    if key not in _LOADED:
        from verl.eval.generator import HFGenerator

        generator = HFGenerator.from_pretrained(model, dtype=dtype, batch_size=batch_size, progress=False)
        if not getattr(generator.tokenizer, "chat_template", None):
            raise ValueError(f"judge model {model!r} has no chat template; the judge needs a chat (instruct) model")
        _LOADED[key] = judge_detector(generator)
    return _LOADED[key]


def build_detector(name: str, judge_model: Optional[str] = None) -> Detector:
    """The detector called ``name``; ``judge`` loads ``judge_model`` (:func:`load_judge`)."""
    if name == "judge":
        if not judge_model:
            raise ValueError("refusal detector 'judge' needs a judge model (--judge-model / EvalOptions.judge_model)")
        return load_judge(judge_model)
    return get_detector(name)
