"""RWKU utility suites: MMLU (Gen), BBH (Rea), TruthfulQA (Tru), TriviaQA (Fac), fluency (Flu).

Prompts are RWKU's (:mod:`verl.eval.prompts`), each wrapped by the chat template; with ``icu`` the ICU
instruction is prepended to the user content. Metrics (BENCHMARKS.md section 1.5):

* ``mmlu_acc``: argmax over the next-token log-probs of " A".." D" (last token of each encoding, no
  special tokens) after "...Answer:" appended to the assistant header.
* ``bbh_em``: greedy 256 tokens; prediction = first ``[t|T]he answer is (.*?)\\.`` capture else the stripped
  output ("NOANSWER" if empty); normalized EM against ``[answer]`` (``bbh_em_list``) or, with
  ``bbh_legacy_char_em``, RWKU's EM over the answer's characters (``bbh_em_legacy_char``); both are recorded,
  ``bbh_em`` is the selected one.
* ``truthfulqa_mc1`` / ``_mc2``: sum of log-probs of ``" " + choice`` after the prompt (no space when the prompt
  ends in whitespace). MC1 = first true mc1 choice beats every false one; MC2 = sum p_true / sum p_all,
  computed with max-shifted exponentials (RWKU's plain ``exp`` can underflow to 0/0 on long choices).
* ``triviaqa_em`` / ``_f1``: greedy 30 tokens, eos-only stop, the raw generation vs every alias, max over aliases.
* ``fluency_entropy``: greedy 256 tokens; mean of H2/3 + 2*H3/3 over word n-grams (``fluency_tokenizer``).
"""

from __future__ import annotations

import math

from verl.eval import prompts as P
from verl.eval.datasets import load_bbh, load_fluency, load_mmlu, load_triviaqa, load_truthfulqa
from verl.eval.suites import SuiteContext, register_suite, register_umbrella
from verl.eval.text_metrics import (
    bbh_exact_match,
    exact_match,
    extract_bbh_answer,
    fluency_entropy,
    max_f1,
    mean_or_none,
)

UTILITY_PARTS = ("mmlu", "bbh", "truthfulqa", "triviaqa", "fluency")


def _content(ctx: SuiteContext, item: dict, body: str) -> str:
    subject = ctx.icu_subject(item)
    return body if subject is None else P.icu_prefix(subject) + body


def _cued_prompt(ctx: SuiteContext, content: str, cue: str) -> str:
    templated = P.chat_prompt(ctx.generator.tokenizer, content)
    return templated + P.answer_cue(templated, cue)


def mmlu_candidate_ids(tokenizer) -> list[int]:
    return [tokenizer.encode(" " + letter, add_special_tokens=False)[-1] for letter in P.MMLU_LETTERS]


@register_suite("mmlu", "rwku", description="MMLU 5-shot, letter log-probs (Gen)")
def mmlu_suite(ctx: SuiteContext) -> dict:
    items = load_mmlu(ctx.target_dir, ctx.options.max_probes)
    tokenizer = ctx.generator.tokenizer
    prompts = [P.chat_prompt(tokenizer, _content(ctx, item, P.mmlu_content(item)), P.ANSWER_SUFFIX) for item in items]
    logprobs = ctx.generator.next_token_logprobs(prompts, mmlu_candidate_ids(tokenizer))
    records = []
    for index, (item, prompt, row) in enumerate(zip(items, prompts, logprobs.tolist())):
        prediction = max(range(len(row)), key=row.__getitem__)
        records.append(
            {"index": index, "task": item["task"], "question": item["question"], "answer": item["answer"],
             "prompt": prompt, "letter_logprobs": row, "prediction": prediction,
             "score": float(prediction == item["answer"])}
        )  # fmt: skip
    return {
        "metrics": {"mmlu_acc": mean_or_none([r["score"] for r in records]), "mmlu_n": len(records)},
        "records": records,
    }


@register_suite("bbh", "rwku", description="BBH 3-shot chain of thought, normalized exact match (Rea)")
def bbh_suite(ctx: SuiteContext) -> dict:
    items = load_bbh(ctx.target_dir, ctx.options.max_probes)
    prompts = [_cued_prompt(ctx, _content(ctx, item, P.bbh_content(item)), "A:") for item in items]
    outputs = ctx.generator.generate(prompts, ctx.options.sampling(max_new_tokens=256))
    records = []
    for index, (item, prompt, output) in enumerate(zip(items, prompts, outputs)):
        prediction = extract_bbh_answer(output)
        answer = str(item["answer"])
        em_list, em_char = (
            bbh_exact_match(prediction, answer),
            bbh_exact_match(prediction, answer, legacy_char_em=True),
        )
        records.append(
            {"index": index, "task": item["task"], "question": item["question"], "answer": answer, "prompt": prompt,
             "generation": output, "prediction": prediction, "em_list": em_list, "em_legacy_char": em_char,
             "score": float(em_char if ctx.options.bbh_legacy_char_em else em_list)}
        )  # fmt: skip
    metrics = {
        "bbh_em": mean_or_none([r["score"] for r in records]),
        "bbh_em_list": mean_or_none([r["em_list"] for r in records]),
        "bbh_em_legacy_char": mean_or_none([r["em_legacy_char"] for r in records]),
        "bbh_n": len(records),
    }
    return {"metrics": metrics, "records": records}


def _split_targets(targets: dict) -> tuple[list[str], list[str]]:
    true = [c for c, label in zip(targets["choices"], targets["labels"]) if int(label) == 1]
    false = [c for c, label in zip(targets["choices"], targets["labels"]) if int(label) != 1]
    return true, false


def mc2_score(true_scores: list[float], false_scores: list[float]) -> float:
    """sum exp(true) / sum exp(all), shifted by the maximum for numerical safety."""
    top = max(true_scores + false_scores)
    true_mass = sum(math.exp(s - top) for s in true_scores)
    return true_mass / (true_mass + sum(math.exp(s - top) for s in false_scores))


@register_suite("truthfulqa", "rwku", description="TruthfulQA MC1 / MC2 with the QA primer (Tru)")
def truthfulqa_suite(ctx: SuiteContext) -> dict:
    items = load_truthfulqa(ctx.target_dir, ctx.options.max_probes)
    prompts, pairs, spans = [], [], []
    for item in items:
        prompt = _cued_prompt(ctx, _content(ctx, item, P.truthfulqa_content(item)), "A:")
        separator = "" if prompt[-1] in ("\n", " ") else " "
        choices = list(dict.fromkeys(item["mc2_targets"]["choices"] + item["mc1_targets"]["choices"]))
        spans.append((len(pairs), choices))
        pairs += [(prompt, separator + choice) for choice in choices]
        prompts.append(prompt)
    scores = ctx.generator.score_continuations(pairs) if pairs else []
    records = []
    for index, (item, prompt, (start, choices)) in enumerate(zip(items, prompts, spans)):
        table = dict(zip(choices, scores[start : start + len(choices)]))
        true1, false1 = _split_targets(item["mc1_targets"])
        mc1 = float(bool(true1) and table[true1[0]] > max((table[c] for c in false1), default=-math.inf))
        true2, false2 = _split_targets(item["mc2_targets"])
        mc2 = mc2_score([table[c] for c in true2], [table[c] for c in false2])
        records.append(
            {
                "index": index,
                "question": item["question"],
                "prompt": prompt,
                "choice_logprobs": table,
                "mc1": mc1,
                "mc2": mc2,
            }
        )
    metrics = {
        "truthfulqa_mc1": mean_or_none([r["mc1"] for r in records]),
        "truthfulqa_mc2": mean_or_none([r["mc2"] for r in records]),
        "truthfulqa_n": len(records),
    }
    return {"metrics": metrics, "records": records}


@register_suite("triviaqa", "rwku", description="TriviaQA 5-shot, EM and token F1 over aliases (Fac)")
def triviaqa_suite(ctx: SuiteContext) -> dict:
    items = load_triviaqa(ctx.target_dir, ctx.options.max_probes)
    tokenizer = ctx.generator.tokenizer
    prompts = [P.chat_prompt(tokenizer, _content(ctx, item, P.triviaqa_content(item)), "A:") for item in items]
    outputs = ctx.generator.generate(prompts, ctx.options.sampling(max_new_tokens=30))
    records = []
    for index, (item, prompt, output) in enumerate(zip(items, prompts, outputs)):
        answers = [str(a) for a in item["answers"]]
        records.append(
            {"index": index, "question": item["question"], "answers": answers, "prompt": prompt, "generation": output,
             "em": float(exact_match(output, answers)) if answers else 0.0,
             "f1": max_f1(output, answers) if answers else 0.0}
        )  # fmt: skip
    metrics = {
        "triviaqa_em": mean_or_none([r["em"] for r in records]),
        "triviaqa_f1": mean_or_none([r["f1"] for r in records]),
        "triviaqa_n": len(records),
    }
    return {"metrics": metrics, "records": records}


@register_suite("fluency", "rwku", description="AlpacaEval instructions, n-gram entropy of 256-token answers (Flu)")
def fluency_suite(ctx: SuiteContext) -> dict:
    items = load_fluency(ctx.target_dir, ctx.options.max_probes)
    tokenizer = ctx.generator.tokenizer
    prompts = [P.chat_prompt(tokenizer, _content(ctx, item, P.fluency_content(item))) for item in items]
    outputs = ctx.generator.generate(prompts, ctx.options.sampling(max_new_tokens=256))
    records = [
        {"index": i, "instruction": item["instruction"], "prompt": prompt, "generation": output,
         "entropy": fluency_entropy(output, ctx.options.fluency_tokenizer)}
        for i, (item, prompt, output) in enumerate(zip(items, prompts, outputs))
    ]  # fmt: skip
    metrics = {"fluency_entropy": mean_or_none([r["entropy"] for r in records]), "fluency_n": len(records)}
    return {"metrics": metrics, "records": records}


register_umbrella("utility", "rwku", UTILITY_PARTS, description="mmlu + bbh + truthfulqa + triviaqa + fluency")
