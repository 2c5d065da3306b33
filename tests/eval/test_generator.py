"""HFGenerator (batched, padded) against plain one-example-at-a-time model calls; CallableGenerator adapter."""

from __future__ import annotations

import pytest
import torch

from verl.eval.generator import CallableGenerator, HFGenerator, SamplingParams, cut_at_stops

TEXTS = [
    "Stephen King wrote Carrie in 1974.",
    "What is 7+5? 7 + 5 = 12.",
    "A much longer text about Bruce Lee, who was born in San Francisco and grew up in Hong Kong, then taught martial arts.",
    "Hi",
    "Question: Confucius was born in which year? A. 1 B. 2 C. 551 D. 3 Answer: C",
]


def naive_logprobs(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    return log_probs[:-1].gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1), log_probs


def test_score_matches_single_forward(hf_generator, tiny_model, tiny_tokenizer):
    scored = hf_generator.score(TEXTS, add_bos=True, distribution_stats=True)
    for text, entry in zip(TEXTS, scored):
        ids = [tiny_tokenizer.bos_token_id] + tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert entry["token_ids"] == ids
        expected, log_probs = naive_logprobs(tiny_model, ids)
        assert entry["token_logprobs"] == pytest.approx(expected.tolist(), abs=1e-4)
        probs = log_probs[:-1].exp()
        mu = (probs * log_probs[:-1]).sum(-1)
        sigma = ((probs * log_probs[:-1] ** 2).sum(-1) - mu**2).sqrt()
        assert entry["mu"] == pytest.approx(mu.tolist(), abs=1e-4)
        assert entry["sigma"] == pytest.approx(sigma.tolist(), abs=1e-4)
    without_bos = hf_generator.score(TEXTS[:1], add_bos=False)[0]
    assert len(without_bos["token_logprobs"]) == len(scored[0]["token_logprobs"]) - 1


def test_score_continuations_matches_single_forward(hf_generator, tiny_model, tiny_tokenizer):
    pairs = [("Q: Who wrote Carrie?\nA:", " Stephen King"), ("7 + 5 =", " 12."), ("Hello", " there, friend")]
    scores = hf_generator.score_continuations(pairs)
    for (prompt, continuation), score in zip(pairs, scores):
        prompt_ids = tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = tiny_tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
        assert full[: len(prompt_ids)] == prompt_ids  # ByteLevel BPE splits before the space
        token_logprobs, _ = naive_logprobs(tiny_model, full)
        assert score == pytest.approx(token_logprobs[len(prompt_ids) - 1 :].sum().item(), abs=1e-4)


def test_next_token_logprobs_matches_single_forward(hf_generator, tiny_model, tiny_tokenizer):
    candidates = [tiny_tokenizer.encode(" " + c, add_special_tokens=False)[-1] for c in "ABCD"]
    result = hf_generator.next_token_logprobs(TEXTS, candidates)
    assert tuple(result.shape) == (len(TEXTS), 4)
    for row, text in enumerate(TEXTS):
        ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            last = torch.log_softmax(tiny_model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
        assert result[row].tolist() == pytest.approx(last[candidates].tolist(), abs=1e-4)


def test_greedy_generation_matches_unbatched_generate(hf_generator, tiny_model, tiny_tokenizer):
    sampling = SamplingParams(max_new_tokens=12)
    texts = hf_generator.generate(TEXTS, sampling)
    for text, output in zip(TEXTS, texts):
        ids = torch.tensor([tiny_tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            sequence = tiny_model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
            )  # fmt: skip
        assert output == tiny_tokenizer.decode(sequence[0, ids.shape[1] :], skip_special_tokens=True)


def test_stop_strings_cut_generation(hf_generator):
    free = hf_generator.generate(TEXTS[:2], SamplingParams(max_new_tokens=12))
    stop = next((ch for ch in free[0] if ch.strip()), None)
    if stop is None:
        pytest.skip("the random model produced only whitespace")
    cut = hf_generator.generate(TEXTS[:2], SamplingParams(max_new_tokens=12, stop=[stop]))
    for full, short in zip(free, cut):
        assert short == cut_at_stops(full, [stop]) and stop not in short


def test_sampling_returns_n_per_prompt(hf_generator):
    texts = hf_generator.generate(
        TEXTS[:2], SamplingParams(max_new_tokens=4, temperature=1.0, top_k=20, top_p=0.9, n=3)
    )
    assert len(texts) == 6 and all(isinstance(t, str) for t in texts)


def test_cut_at_stops_earliest():
    assert cut_at_stops("abc\n\nQuestion: x", ["Question:", "\n\n"]) == "abc"
    assert cut_at_stops("no stop here", ["\n"]) == "no stop here"


def test_sampling_params_validation():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="stop"):
        SamplingParams(stop=[""])


def test_callable_generator_checks_and_delegates(hf_generator, tiny_tokenizer):
    generator = CallableGenerator(tiny_tokenizer, lambda prompts, sampling: ["x\ny"] * len(prompts))
    assert generator.generate(["a", "b"], SamplingParams(stop=["\n"])) == ["x", "x"]
    with pytest.raises(ValueError, match="expected 4 strings"):
        generator.generate(["a", "b"], SamplingParams(n=2))
    with pytest.raises(NotImplementedError, match="score_fn"):
        generator.score(["a"])
    borrowed = CallableGenerator(tiny_tokenizer, lambda p, s: [""] * len(p), scorer=hf_generator)
    assert borrowed.score(TEXTS[:1])[0]["token_logprobs"] == hf_generator.score(TEXTS[:1])[0]["token_logprobs"]
    assert isinstance(hf_generator, HFGenerator)
