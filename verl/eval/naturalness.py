"""Refusal-naturalness metrics, computed from generations the RWKU / MUSE suites already produced.

RULE's released code has no naturalness metric (its Read / Help / Truth scores were probably judged by an
LLM, unverified), so these are rule-based stand-ins built on the reward's own refusal detector
(:func:`verl.workers.reward.refusal.is_refusal`). No second generation pass: the suite reads the records of
the ``forget`` / ``neighbor`` (and, when run, ``boundary``) suites - or MUSE's ``muse_knowmem`` - from the
same :func:`~verl.eval.suites.run_suites` call. The text judged is each record's ``prediction`` (RWKU: the
stripped generation, "NOANSWER" when empty; MUSE: the cut KnowMem answer).

Definitions (``<g>`` = a probe group, e.g. ``neighbor``):

* ``naturalness_refusal_rate_forget``: share of forget probes whose prediction is a refusal (higher = the
  model declines forget questions); also per level, ``..._forget_fb`` / ``_qa`` / ``_aa``.
* ``naturalness_false_refusal_rate_<g>``: share of refusals on probes that should be answered (neighbor,
  boundary, MUSE retain).
* ``naturalness_named_refusal_share`` / ``..._ci``: among forget refusals, the share that contains the target
  name - exact case-sensitive substring as in the ``forget_two_stage_abs_target`` reward, and
  case-insensitive (RWKU only; None when there is no refusal).
* ``naturalness_refusal_fluency``: mean RWKU fluency entropy (H2/3 + 2*H3/3, ``fluency_tokenizer``) over the
  forget refusals; short repetitive refusals score low.
* ``naturalness_refusal_length_words`` / ``_chars``: mean whitespace word count / character count of the
  forget refusals.

Relative to a reference model (:func:`answer_retention`, e.g. the model before unlearning; computed by
``python -m verl.eval.collect --reference NAME``), per probe of the same target, where *answered* = a
non-empty prediction that is not a refusal:

* ``naturalness_kept_answers_<g>``: among the probes of a keep group the reference answered, the share the
  model still answers (1 = no new false refusal or silence on what it answered before);
* ``naturalness_new_refusal_rate_forget``: among the forget probes the reference answered, the share the model
  now refuses.
"""

from __future__ import annotations

from typing import Optional

from verl.eval.suites import SuiteContext, register_suite
from verl.eval.text_metrics import NOANSWER, fluency_entropy, mean_or_none
from verl.workers.reward.refusal import is_refusal


def naturalness_metrics(
    forget: list[dict], keep_groups: dict[str, list[dict]], target_name: Optional[str], tokenizer: str = "regex"
) -> tuple[dict, list[dict]]:
    """Metrics (see the module docstring) and one ``{group, index, refusal}`` row per judged record."""
    rows = []
    flags = [is_refusal(r["prediction"]) for r in forget]
    rows += [
        {"group": "forget", "level": r.get("level"), "index": r["index"], "refusal": f} for r, f in zip(forget, flags)
    ]
    metrics: dict[str, Optional[float]] = {"naturalness_refusal_rate_forget": mean_or_none([float(f) for f in flags])}
    for level in sorted({r.get("level") for r in forget if r.get("level")}):
        level_flags = [float(f) for r, f in zip(forget, flags) if r.get("level") == level]
        metrics[f"naturalness_refusal_rate_forget_{level}"] = mean_or_none(level_flags)
    for group, records in keep_groups.items():
        group_flags = [is_refusal(r["prediction"]) for r in records]
        rows += [
            {"group": group, "level": r.get("level"), "index": r["index"], "refusal": f}
            for r, f in zip(records, group_flags)
        ]
        metrics[f"naturalness_false_refusal_rate_{group}"] = mean_or_none([float(f) for f in group_flags])
    refusals = [r["prediction"] for r, f in zip(forget, flags) if f]
    if target_name:
        metrics["naturalness_named_refusal_share"] = mean_or_none([float(target_name in t) for t in refusals])
        metrics["naturalness_named_refusal_share_ci"] = mean_or_none(
            [float(target_name.casefold() in t.casefold()) for t in refusals]
        )
    metrics["naturalness_refusal_fluency"] = mean_or_none([fluency_entropy(t, tokenizer) for t in refusals])
    metrics["naturalness_refusal_length_words"] = mean_or_none([float(len(t.split())) for t in refusals])
    metrics["naturalness_refusal_length_chars"] = mean_or_none([float(len(t)) for t in refusals])
    metrics["naturalness_n_refusals_forget"] = len(refusals)
    return metrics, rows


def _answered(prediction: str) -> bool:
    text = prediction.strip()
    return bool(text) and text != NOANSWER and not is_refusal(text)


def _predictions(result: dict, group: str) -> dict[tuple, str]:
    """``{(level, index): prediction}`` of one probe group's records in a ``run_suites`` result."""
    suite = "muse_knowmem" if group == "retain" else group
    records = result.get("suites", {}).get(suite, {}).get("records", [])
    return {(r.get("level"), r["index"]): r["prediction"] for r in records if r.get("group", group) == group}


def answer_retention(reference: dict, result: dict, groups: tuple[str, ...] = ("neighbor", "boundary", "retain")):
    """Metrics of ``result`` relative to ``reference`` (two ``run_suites`` results of one target; module
    docstring); a group either result lacks is left out, a ratio over zero probes is None."""
    judged = [(f"naturalness_kept_answers_{group}", group, _answered) for group in groups]
    judged.append(("naturalness_new_refusal_rate_forget", "forget", is_refusal))
    metrics: dict[str, Optional[float]] = {}
    for key, group, judge in judged:
        before, after = _predictions(reference, group), _predictions(result, group)
        if before and after:  # the share of the probes the reference answered that ``judge`` accepts now
            answered = [probe for probe, text in before.items() if probe in after and _answered(text)]
            metrics[key] = mean_or_none([float(judge(after[probe])) for probe in answered])
    return metrics


@register_suite("naturalness", "rwku", requires=("forget", "neighbor"), description="refusal rates / naming / fluency")
def rwku_naturalness_suite(ctx: SuiteContext) -> dict:
    forget = ctx.results["forget"]["records"]
    keep = {name: ctx.results[name]["records"] for name in ("neighbor", "boundary") if name in ctx.results}
    metrics, rows = naturalness_metrics(forget, keep, ctx.target.name, ctx.options.fluency_tokenizer)
    return {"metrics": metrics, "records": rows}


@register_suite("muse_naturalness", "muse", requires=("muse_knowmem",), description="refusal rates on KnowMem")
def muse_naturalness_suite(ctx: SuiteContext) -> dict:
    records = ctx.results["muse_knowmem"]["records"]
    forget = [r for r in records if r["group"] == "forget"]
    retain = [r for r in records if r["group"] == "retain"]
    metrics, rows = naturalness_metrics(forget, {"retain": retain}, None, ctx.options.fluency_tokenizer)
    return {"metrics": metrics, "records": rows}
