"""The evaluators' batched generation path writes the same records as the plain one it replaced.

Plain = each prompt alone through Hugging Face's ``model.generate`` (no padding, concatenating KV cache);
batched = :class:`HFGenerator`: prompts sorted and padded, prefilled right-aligned under the causal mask, an
in-place KV cache, finished rows dropped. Greedy decoding must give the same text, so the same scores.
"""

from __future__ import annotations

import torch

from verl.eval.generator import HFGenerator, cut_at_stops
from verl.eval.suites import run_suites


class PlainGenerator(HFGenerator):
    def generate(self, prompts, sampling):
        assert sampling.temperature == 0 and sampling.n == 1
        texts = []
        for prompt in prompts:
            ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                sequence = self.model.generate(
                    ids, attention_mask=torch.ones_like(ids), max_new_tokens=sampling.max_new_tokens,
                    do_sample=False, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self._eos_ids(),
                )  # fmt: skip
            text = self.tokenizer.decode(sequence[0, ids.shape[1] :], skip_special_tokens=True)
            texts.append(cut_at_stops(text, sampling.stop))
        return texts


def sharp_tiny_model(tokenizer):
    """The tiny random model with its matrices x10: greedy text then follows the prompt instead of repeating one
    token, so a batching mistake (a wrong position, a pad attended to) changes it."""
    from verl.utils.models import build_tiny_model

    model = build_tiny_model(tokenizer, seed=3)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.mul_(10)
    return model


def test_batched_generation_writes_the_records_of_plain_generation(shared_data, tiny_tokenizer):
    tiny_model = sharp_tiny_model(tiny_tokenizer)
    suites = ["forget", "neighbor", "bbh", "triviaqa", "fluency"]  # every generating RWKU suite
    options = {"max_probes": 4}
    plain = run_suites(PlainGenerator(tiny_model, tiny_tokenizer, progress=False), "rwku", shared_data / "rwku", 1,
                       suites, options)  # fmt: skip
    batched = run_suites(HFGenerator(tiny_model, tiny_tokenizer, batch_size=3, progress=False), "rwku",
                         shared_data / "rwku", 1, suites, options)  # fmt: skip
    for name in plain["suites"]:
        assert batched["suites"][name]["records"] == plain["suites"][name]["records"], name
    assert batched["metrics"] == plain["metrics"]
    generations = [r.get("generation") for s in batched["suites"].values() for r in s["records"]]
    assert len(set(g for g in generations if g)) > 0.9 * len(
        generations
    )  # the random model says different things: a real check
