"""The generators behind boundary synthesis (:mod:`data.synthesis`): the ``generate_fn`` contract, priming, adapters.

Contract: ``generate_fn(prompts, prefixes=None, stop=None) -> list[str]``, one reply per prompt, same order.

* ``prompts`` are *user-message contents*: the generator applies the chat template (one user turn, the
  generation prompt added).
* ``prefixes`` (optional, one per prompt): text the assistant turn starts with (e.g. ``"Entity:"``); the
  generator continues it and returns the continuation only, without the prefix.
* ``stop`` (optional): strings generation may stop at (the reply may hold the stop string and anything after
  it: callers cut there themselves).

A plain ``generate_fn(prompts)`` still works: it is only ever called with ``prefixes`` when priming is on,
and with ``stop`` when it accepts that argument.

Priming (:data:`PRIMING_MODES`) makes small generators fill the ``Label: value`` fields the templates ask for
instead of answering the question: ``none`` (the reply as generated), ``first`` (the assistant turn starts
with the first label, e.g. ``Entity:``, which is put back in front of the reply before parsing), ``fields``
(one generation per field: ``Entity:`` up to the end of the line, then ``\\nQuestion:`` after it, and so on).

:func:`hf_generate_fn` is a minimal transformers adapter (``python -m data.synthesis``); the runner's ``synth``
stage (:mod:`RS.synth`) generates through the engine's rollout worker group (``verl.workers.rollout.texts``)
with :func:`chat_texts`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Optional

from verl.trainer.config import PRIMING_MODES

GenerateFn = Callable[..., list[str]]
FIELD_STOP = ["\n"]


def check_priming(priming: str, where: str = "priming") -> None:
    if priming not in PRIMING_MODES:
        raise ValueError(f"{where}={priming!r} is not a priming mode; choose one of: {', '.join(PRIMING_MODES)}")


def accepts(fn: Callable, name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (by name or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume the plain contract
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def check_outputs(
    generate_fn: GenerateFn,
    prompts: list[str],
    what: str,
    prefixes: Optional[list[str]] = None,
    stop: Optional[list[str]] = None,
) -> list[str]:
    """``generate_fn(prompts[, prefixes=, stop=])``, checked: one ``str`` per prompt (``ValueError`` naming ``what``).

    ``prefixes`` needs a generator that accepts them; ``stop`` is passed only to one that accepts it."""
    if not prompts:
        return []
    kwargs: dict = {}
    if prefixes is not None:
        if not accepts(generate_fn, "prefixes"):
            raise ValueError(
                f"generate_fn {getattr(generate_fn, '__name__', generate_fn)!r} takes no prefixes= argument, which "
                f"priming needs ({what} prompts): give it one (see data/generators.py) or use priming=none"
            )
        kwargs["prefixes"] = prefixes
    if stop and accepts(generate_fn, "stop"):
        kwargs["stop"] = stop
    outputs = generate_fn(prompts, **kwargs)
    if not isinstance(outputs, (list, tuple)) or len(outputs) != len(prompts):
        got = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
        raise ValueError(f"generate_fn returned {got} outputs for {len(prompts)} {what} prompts")
    for i, output in enumerate(outputs):
        if not isinstance(output, str):
            raise ValueError(f"generate_fn output {i} for the {what} prompts is a {type(output).__name__}, not a str")
    return list(outputs)


def attach_label(label: str, continuation: str) -> str:
    """``Label:`` + the continuation of a reply primed with it; a continuation that writes the label again
    itself (``"Entity: X"``, ``"**Entity:** X"``) keeps one copy."""
    repeated = re.match(rf"\s*\**\s*{re.escape(label)}\s*\**\s*:", continuation, re.IGNORECASE)
    return f"{label}:" + (continuation[repeated.end() :] if repeated else continuation)


def generate_labelled(
    generate_fn: GenerateFn, prompts: list[str], labels: Sequence[Sequence[str]], priming: str, what: str
) -> list[str]:
    """Replies to ``prompts``, prompt ``i`` asking for ``Label: value`` lines of ``labels[i]`` in that order.

    ``none``: one call, the replies as generated. ``first``: one call, each assistant turn primed with its
    first label, put back in front of the reply. ``fields``: one call per field position, each primed with the
    lines so far plus the next label and cut at the end of its line; a prompt whose field came back empty
    gets no further calls. Every reply comes back as text for :func:`data.synthesis.parse_labelled`."""
    check_priming(priming)
    if len(labels) != len(prompts):
        raise ValueError(f"{what}: {len(labels)} label lists for {len(prompts)} prompts")
    if priming == "none":
        return check_outputs(generate_fn, prompts, what)
    if priming == "first":
        prefixes = [f"{fields[0]}:" for fields in labels]
        outputs = check_outputs(generate_fn, prompts, what, prefixes)
        return [attach_label(fields[0], output) for fields, output in zip(labels, outputs)]
    texts = [""] * len(prompts)
    active = list(range(len(prompts)))
    for depth in range(max((len(fields) for fields in labels), default=0)):
        active = [i for i in active if depth < len(labels[i])]
        if not active:
            break
        prefixes = [texts[i] + ("\n" if depth else "") for i in active]
        field_labels = [labels[i][depth] for i in active]
        primed = [prefix + f"{label}:" for prefix, label in zip(prefixes, field_labels)]
        outputs = check_outputs(
            generate_fn, [prompts[i] for i in active], f"{what} (field {depth + 1})", primed, FIELD_STOP
        )
        still = []
        for i, prefix, label, output in zip(active, prefixes, field_labels, outputs):
            line = attach_label(label, output).split("\n", 1)[0].rstrip()
            texts[i] = prefix + line
            if line[len(label) + 1 :].strip():
                still.append(i)
        active = still
    return texts


def chat_texts(tokenizer, prompts: Sequence[str], prefixes: Optional[Sequence[str]] = None) -> list[str]:
    """Each prompt as one user turn of the tokenizer's chat template with the generation prompt (the plain
    prompt when it has none; a prefix then follows on a new line), then the prompt's assistant-turn prefix."""
    if prefixes is not None and len(prefixes) != len(prompts):
        raise ValueError(f"{len(prefixes)} prefixes for {len(prompts)} prompts")
    texts = []
    for i, prompt in enumerate(prompts):
        prefix = prefixes[i] if prefixes is not None else ""
        if tokenizer.chat_template:
            messages = [{"role": "user", "content": prompt}]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix
        else:
            text = prompt + ("\n" + prefix if prefix else "")
        texts.append(text)
    return texts


def hf_generate_fn(
    model: str,
    *,
    max_new_tokens: int = 96,
    do_sample: bool = False,
    temperature: float = 0.7,
    top_p: float = 0.9,
    batch_size: int = 8,
    seed: int = 0,
) -> GenerateFn:
    """A minimal transformers generator for small runs: :func:`chat_texts`, left padding, greedy or sampling,
    returns the decoded new tokens (stopping at ``stop`` strings when given). ``model``: folder, hub id,
    ``smollm2`` or ``tiny:DIR``. For large runs use the engine's rollout worker group (vLLM) instead."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl.utils.device import get_torch_device
    from verl.utils.models import resolve_model_path

    path = resolve_model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = get_torch_device()
    lm = AutoModelForCausalLM.from_pretrained(path).to(device).eval()

    def generate(prompts: list[str], prefixes: Optional[list[str]] = None, stop: Optional[list[str]] = None):
        texts = chat_texts(tokenizer, prompts, prefixes)
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
        )
        if stop:
            sampling |= {"stop_strings": list(stop), "tokenizer": tokenizer}
        outputs: list[str] = []
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # seeded sampling; the CPU RNG is restored after
            torch.manual_seed(seed)
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                ids = lm.generate(
                    **batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
                )
                outputs.extend(tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True))
        return outputs

    return generate
