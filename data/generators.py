"""The generators behind boundary synthesis (:mod:`data.synthesis`): the ``generate_fn`` contract and adapters.

A generator is ``generate_fn(prompts: list[str]) -> list[str]`` (same length, same order). Prompts are
*user-message contents*: the generator applies the chat template. :func:`hf_generate_fn` is a minimal
transformers adapter; the runner's ``synth`` stage uses the engine's rollout worker group instead
(``RS/synth_stage.py``).
"""

from __future__ import annotations

from collections.abc import Callable

GenerateFn = Callable[[list[str]], list[str]]


def check_outputs(generate_fn: GenerateFn, prompts: list[str], what: str) -> list[str]:
    """``generate_fn(prompts)``, checked: one ``str`` per prompt (a ``ValueError`` naming ``what`` otherwise)."""
    if not prompts:
        return []
    outputs = generate_fn(prompts)
    if not isinstance(outputs, (list, tuple)) or len(outputs) != len(prompts):
        got = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
        raise ValueError(f"generate_fn returned {got} outputs for {len(prompts)} {what} prompts")
    for i, output in enumerate(outputs):
        if not isinstance(output, str):
            raise ValueError(f"generate_fn output {i} for the {what} prompts is a {type(output).__name__}, not a str")
    return list(outputs)


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
    """A minimal transformers generator for small runs: chat template (when the tokenizer has one), left
    padding, greedy or sampling, returns the decoded new tokens. ``model``: folder, hub id, ``smollm2`` or
    ``tiny:DIR``. For large runs use the engine's rollout worker group (vLLM) as ``generate_fn`` instead."""
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

    def generate(prompts: list[str]) -> list[str]:
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            if tokenizer.chat_template
            else p
            for p in prompts
        ]
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
        )
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
